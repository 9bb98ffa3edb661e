//! The command line: `serve` and `migrate`. Commands log to stderr and keep stdout for
//! their output.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::{self, AppState};
use crate::config::{Config, DatabaseArgs, ServeArgs};
use crate::storage::Storage;

#[derive(Debug, Parser)]
#[command(
    name = "threadkeeper",
    version,
    about = "Conversation state for reasoning models, over OpenRouter"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = match &cli.command {
        Command::Serve(args) => args.log_format.clone(),
        Command::Migrate(_) => "pretty".into(),
    };
    if let Err(e) = crate::telemetry::init(&log_format) {
        eprintln!("threadkeeper: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("threadkeeper: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Migrate(args) => Storage::migrate(&args.database_url)
                .await
                .map(|()| tracing::info!(database = %args.database_url, "migrations applied"))
                .map_err(|e| format!("migration failed: {e}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("threadkeeper: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let config = Config::from_args(&args)?;
    let listener = tokio::net::TcpListener::bind(&config.bind)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.bind))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let state = AppState::build(config).await?;
    // Scripts and tests read the port from this line when binding port 0.
    tracing::info!("listening on {addr}");
    app::serve(listener, state, app::shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))
}
