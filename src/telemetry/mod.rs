//! Telemetry: the tracing subscriber (filtered by `RUST_LOG`, pretty or JSON lines on
//! stderr) and Prometheus metrics.

pub mod metrics;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Logs go to stderr so commands keep stdout for output.
///
/// Lines are formatted where they are logged and written by a thread of their own, through
/// a buffer flushed whenever no line is waiting: a request's thread never blocks on stderr
/// (a pipe that a slow reader lets fill, or a file), and under load many lines go out in one
/// write instead of a system call each. Nothing is dropped: a full queue (128k lines) makes
/// the logging thread wait instead. Keep the returned guard until exit; dropping it writes
/// out what is queued.
pub fn init(format: &str) -> Result<WorkerGuard, String> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("threadkeeper-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
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
