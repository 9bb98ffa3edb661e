//! Telemetry: the tracing subscriber (filtered by `RUST_LOG`, pretty or JSON lines on
//! stderr) and Prometheus metrics.

pub mod metrics;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Logs go to stderr so commands keep stdout for output.
pub fn init(format: &str) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match format {
        "json" => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        "pretty" => builder.try_init(),
        other => {
            return Err(format!(
                "--log-format must be pretty or json, not `{other}`"
            ))
        }
    };
    result.map_err(|e| e.to_string())
}
