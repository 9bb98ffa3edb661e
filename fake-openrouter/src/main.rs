//! `fake-openrouter`: run the fake as a process (README quick start, subprocess tests).
//!
//! Prints exactly one line, `fake-openrouter listening on <base url>`, once it accepts
//! connections, so a script can read the port when `--bind` asks for port 0. Runs until Ctrl-C
//! (or until killed). Script it through the admin API documented in the library.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fake_openrouter::{FakeConfig, FakeUpstream};
use tokio::net::TcpListener;

/// Scripted fake of OpenRouter's chat completions API.
#[derive(Parser, Debug)]
#[command(name = "fake-openrouter", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8090")]
    bind: String,
    /// Start in strict mode (reasoning_details must come back byte for byte).
    #[arg(long)]
    strict: bool,
    /// Accept requests without an `Authorization: Bearer` header.
    #[arg(long)]
    no_auth: bool,
    /// Delay of generated replies, in milliseconds (between stream events).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fake-openrouter: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let listener = TcpListener::bind(&args.bind)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.bind))?;
    let config = FakeConfig {
        strict: args.strict,
        require_auth: !args.no_auth,
        default_delay: Duration::from_millis(args.delay_ms),
    };
    let fake = FakeUpstream::start_on(listener, config)
        .await
        .map_err(|e| format!("cannot start: {e}"))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "fake-openrouter listening on {}", fake.base_url())
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
    drop(stdout);
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
    fake.shutdown().await;
    Ok(())
}
