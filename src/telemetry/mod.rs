//! Telemetry: the tracing subscriber (filtered by `RUST_LOG`, pretty or JSON lines on
//! stderr) and Prometheus metrics.

mod log_writer;
pub mod metrics;

pub use log_writer::LogGuard;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Logs go to stderr so commands keep stdout for output.
/// Lines are formatted where they are logged and written out by a thread of their own
/// (`log_writer`). Keep the returned guard until exit: dropping it writes out what waits.
pub fn init(format: &str) -> Result<LogGuard, String> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let (writer, guard) = log_writer::start(std::io::stderr())
        .map_err(|e| format!("cannot start the logging thread: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
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
    result.map_err(|e| e.to_string())?;
    Ok(guard)
}
