//! Configuration: every setting is a flag and an environment variable (the flag wins).
//!
//! clap reads both; this module turns the parsed strings into typed values once, so the rest
//! of the program never sees an unparsed duration, size or JSON object.

use std::time::Duration;

use clap::Args;
use secrecy::SecretString;
use serde_json::value::RawValue;

/// Settings shared by every command that opens the database.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// SQLite database URL; the file is created if missing.
    #[arg(
        long,
        global = true,
        env = "THREADKEEPER_DATABASE_URL",
        default_value = "sqlite://threadkeeper.db"
    )]
    pub database_url: String,

    /// SQLite `synchronous` mode: `full` (every acknowledged write survives power loss) or
    /// `normal` (faster; in WAL mode a power loss can drop the last commits, never corrupt).
    #[arg(long, global = true, env = "THREADKEEPER_SQLITE_SYNCHRONOUS", default_value = "full", value_parser = ["full", "normal"])]
    pub sqlite_synchronous: String,
}

impl DatabaseArgs {
    /// `synchronous=FULL` unless `normal` was asked for.
    pub fn durable(&self) -> bool {
        self.sqlite_synchronous != "normal"
    }
}

/// The `serve` command's settings.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Address to listen on (port 0 picks a free port; the chosen one is logged).
    #[arg(long, env = "THREADKEEPER_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,

    /// OpenRouter's API base URL.
    #[arg(
        long,
        env = "OPENROUTER_BASE_URL",
        default_value = "https://openrouter.ai/api/v1"
    )]
    pub upstream_url: String,

    /// Model used when neither the thread nor the turn names one.
    #[arg(
        long,
        env = "THREADKEEPER_DEFAULT_MODEL",
        default_value = "deepseek/deepseek-v3.2-exp"
    )]
    pub default_model: String,

    /// OpenRouter reasoning object used when neither the thread nor the turn sets one.
    #[arg(
        long,
        env = "THREADKEEPER_DEFAULT_REASONING",
        default_value = r#"{"enabled":true}"#
    )]
    pub default_reasoning: String,

    /// Total time allowed for one upstream call (e.g. `600s`, `10m`).
    #[arg(long, env = "THREADKEEPER_UPSTREAM_TIMEOUT", default_value = "600s")]
    pub upstream_timeout: String,

    /// Largest accepted request body (e.g. `8MiB`, `512KiB`, `1000000`).
    #[arg(long, env = "THREADKEEPER_MAX_BODY", default_value = "8MiB")]
    pub max_body: String,

    /// Memory for thread contexts kept between turns, so a turn reads only the messages
    /// added since the last one (e.g. `32MiB`; `0` turns the cache off).
    #[arg(long, env = "THREADKEEPER_CONTEXT_CACHE", default_value = "32MiB")]
    pub context_cache: String,

    /// Upstream calls per turn in total, retries included.
    #[arg(long, env = "THREADKEEPER_UPSTREAM_ATTEMPTS", default_value_t = 3)]
    pub upstream_attempts: u32,

    /// Serve without service keys on a non-loopback address (anyone who can reach it can
    /// read and write every thread).
    #[arg(long, env = "THREADKEEPER_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// Requests per minute allowed per service key (0: no limit).
    #[arg(long, env = "THREADKEEPER_RATE_LIMIT_PER_MINUTE", default_value_t = 0)]
    pub rate_limit_per_minute: u32,

    /// After SIGTERM/SIGINT, how long running turns get to finish before the process exits.
    #[arg(long, env = "THREADKEEPER_SHUTDOWN_GRACE", default_value = "30s")]
    pub shutdown_grace: String,

    /// Log format: `pretty` or `json`.
    #[arg(long, env = "THREADKEEPER_LOG_FORMAT", default_value = "pretty")]
    pub log_format: String,
}

/// Typed configuration of a running service.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: String,
    pub database_url: String,
    /// `synchronous=FULL` (true) or `NORMAL`.
    pub durable: bool,
    pub upstream_url: String,
    /// `None`: turns answer 503 `upstream_not_configured`.
    pub api_key: Option<SecretString>,
    pub default_model: String,
    pub default_reasoning: Box<RawValue>,
    pub upstream: UpstreamTimeouts,
    pub max_body: usize,
    /// Bytes of thread contexts cached between turns; 0: none.
    pub context_cache: usize,
    pub upstream_attempts: u32,
    /// How long a turn's hold on its thread lasts without renewal.
    pub lease_ttl: Duration,
    pub shutdown_grace: Duration,
    pub allow_unauthenticated: bool,
    pub rate_limit_per_minute: u32,
}

/// Timeouts that fit reasoning models: connecting and receiving the response head must be
/// quick, the whole answer may take minutes.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    /// Until the response head arrives.
    pub first_byte: Duration,
    /// Between two reads of the body (padding and keep-alive comments count as progress).
    pub idle: Duration,
    pub total: Duration,
}

/// The longest duration a setting takes. Deadlines are instants a duration ahead, and far
/// enough ahead (about 2^63 s) an instant overflows: a panic in every turn, or at SIGTERM.
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// A humantime duration (`30s`, `10m`), at most `MAX_DURATION`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration > MAX_DURATION {
        return Err(format!(
            "{text} is longer than the longest allowed, 366 days"
        ));
    }
    Ok(duration)
}

impl UpstreamTimeouts {
    pub fn from_total(total: Duration) -> Self {
        Self {
            connect: total.min(Duration::from_secs(10)),
            first_byte: total.min(Duration::from_secs(60)),
            idle: total.min(Duration::from_secs(120)),
            total,
        }
    }
}

impl Config {
    /// Validates the parsed arguments; the error says which setting is wrong and why.
    pub fn from_args(args: &ServeArgs) -> Result<Self, String> {
        let default_reasoning = parse_json_object(&args.default_reasoning)
            .map_err(|e| format!("--default-reasoning: {e}"))?;
        let total = parse_duration(&args.upstream_timeout)
            .map_err(|e| format!("--upstream-timeout: {e} (use e.g. 600s or 10m)"))?;
        if total.is_zero() {
            return Err("--upstream-timeout must be greater than zero".into());
        }
        let shutdown_grace = parse_duration(&args.shutdown_grace)
            .map_err(|e| format!("--shutdown-grace: {e} (use e.g. 30s)"))?;
        let max_body = parse_size(&args.max_body).map_err(|e| format!("--max-body: {e}"))?;
        let context_cache = match args.context_cache.trim() {
            "0" => 0,
            size => parse_size(size).map_err(|e| format!("--context-cache: {e}"))?,
        };
        if args.upstream_attempts == 0 {
            return Err("--upstream-attempts must be at least 1".into());
        }
        if args.default_model.trim().is_empty() {
            return Err("--default-model must not be empty".into());
        }
        let upstream_url = args.upstream_url.trim().trim_end_matches('/').to_owned();
        let usable = reqwest::Url::parse(&upstream_url).map_err(|e| {
            // The URL itself is not echoed: it could carry credentials.
            format!("--upstream-url: {e} (use e.g. https://openrouter.ai/api/v1)")
        })?;
        if !matches!(usable.scheme(), "http" | "https")
            || !usable.has_host()
            || usable.query().is_some()
            || usable.fragment().is_some()
        {
            return Err(
                "--upstream-url must be an http or https URL without a query, such as \
                 https://openrouter.ai/api/v1"
                    .into(),
            );
        }
        let api_key = std::env::var("OPENROUTER_API_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty())
            .map(SecretString::from);
        Ok(Self {
            bind: args.bind.clone(),
            database_url: args.database.database_url.clone(),
            durable: args.database.durable(),
            upstream_url,
            api_key,
            default_model: args.default_model.clone(),
            default_reasoning,
            upstream: UpstreamTimeouts::from_total(total),
            max_body,
            context_cache,
            upstream_attempts: args.upstream_attempts,
            lease_ttl: Duration::from_secs(30),
            shutdown_grace,
            allow_unauthenticated: args.allow_unauthenticated,
            rate_limit_per_minute: args.rate_limit_per_minute,
        })
    }
}

fn parse_json_object(text: &str) -> Result<Box<RawValue>, String> {
    let raw: Box<RawValue> =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    if !raw.get().starts_with('{') {
        return Err("must be a JSON object".into());
    }
    Ok(raw)
}

/// Parses `8MiB`, `512KiB`, `2MB`, `1000` (bytes).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: usize = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size (use e.g. 8MiB)"))?;
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("unknown unit `{other}` (use B, KiB, MiB, GiB)")),
    };
    number
        .checked_mul(multiplier)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{text}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("8 parsecs").is_err());
    }

    #[test]
    fn durations_are_capped_so_no_deadline_overflows() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("366days"), Ok(MAX_DURATION));
        assert!(parse_duration("367days").is_err());
        assert!(parse_duration("10000000000000000000s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn default_reasoning_must_be_an_object() {
        assert!(parse_json_object(r#"{"enabled":true}"#).is_ok());
        assert!(parse_json_object("true").is_err());
        assert!(parse_json_object("{").is_err());
    }
}
