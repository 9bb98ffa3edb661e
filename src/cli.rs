//! The command line: `serve`, `migrate`, `keys`, `export` and `import`. Commands log to stderr and keep stdout for
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
    /// Write a thread, its messages and its turns (with audit records) as NDJSON to stdout.
    Export {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The thread's id.
        #[arg(long)]
        thread: String,
    },
    /// Restore a thread from an export file (`-` reads stdin), ids and bytes unchanged.
    Import {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The NDJSON file written by `export`.
        file: std::path::PathBuf,
        /// The tenant that owns the restored thread (default: the open-mode tenant).
        #[arg(long, default_value = crate::auth::OPEN_TENANT)]
        tenant: String,
    },
    /// Manage service keys.
    Keys {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print it once (only its hash is stored).
    Create {
        /// What the key is for, e.g. the client's name.
        #[arg(long)]
        name: String,
        /// The tenant its threads belong to.
        #[arg(long, default_value = crate::auth::OPEN_TENANT)]
        tenant: String,
    },
    /// List keys (never the keys themselves).
    List,
    /// Revoke a key at once.
    Revoke {
        /// The key's id, as `keys list` shows it.
        id: String,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = match &cli.command {
        Command::Serve(args) => args.log_format.clone(),
        _ => "pretty".into(),
    };
    // Held to the end of `main`: dropping it writes out the log lines still queued.
    let _log_writer = match crate::telemetry::init(&log_format) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("threadkeeper: {e}");
            return ExitCode::from(2);
        }
    };
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
            Command::Keys { database, command } => keys(database, command).await,
            Command::Export { database, thread } => export(database, &thread).await,
            Command::Import {
                database,
                file,
                tenant,
            } => import(database, &file, &tenant).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Said whatever the log filter lets through: a command that fails silently
            // (`RUST_LOG=off`, or a filter naming only other crates) leaves its user guessing.
            if tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!("{e}");
            } else {
                eprintln!("threadkeeper: {e}");
            }
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
    let allow_unauthenticated = config.allow_unauthenticated;
    let state = AppState::build(config).await?;
    let keys_exist = state
        .storage
        .keys_exist()
        .await
        .map_err(|e| format!("cannot read service keys: {e}"))?;
    if !keys_exist && !addr.ip().is_loopback() {
        if !allow_unauthenticated {
            return Err(format!(
                "refusing to serve on {addr} without service keys: anyone who can reach it could \
                 read and write every thread. Create a key with `threadkeeper keys create --name NAME`, \
                 bind to a loopback address, or pass --allow-unauthenticated"
            ));
        }
        tracing::warn!(
            "serving without service keys on a non-loopback address (--allow-unauthenticated)"
        );
    }
    // Scripts and tests read the port from this line when binding port 0.
    tracing::info!("listening on {addr}");
    app::serve(listener, state, app::shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))
}

async fn keys(database: DatabaseArgs, command: KeysCommand) -> Result<(), String> {
    let storage = match &command {
        KeysCommand::Create { name, tenant } => {
            if name.trim().is_empty() || tenant.trim().is_empty() {
                return Err("--name and --tenant must not be empty".into());
            }
            // The first key may well be made before the service first runs.
            open(&database).await?
        }
        KeysCommand::List | KeysCommand::Revoke { .. } => open_existing(&database).await?,
    };
    let result = run_keys(&storage, command).await;
    storage.close().await;
    result
}

async fn run_keys(storage: &Storage, command: KeysCommand) -> Result<(), String> {
    use std::io::Write;
    match command {
        KeysCommand::Create { name, tenant } => {
            let key = crate::auth::generate_key();
            let record = storage
                .create_key(&name, &tenant, &crate::auth::hash_key(&key))
                .await
                .map_err(|e| format!("cannot create the key: {e}"))?;
            // The key itself goes to stdout, alone on its line, and is never shown again. A
            // key that could not be shown is no one's: it is deleted.
            let shown = {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{key}").and_then(|()| out.flush())
            };
            if let Err(e) = shown {
                let forgotten = storage.forget_key(&record.id).await;
                return Err(match forgotten {
                    Ok(()) => format!("cannot write the key to stdout ({e}); it was not kept"),
                    Err(f) => format!(
                        "cannot write the key to stdout ({e}), nor delete it ({f}): \
                         revoke key {} with `threadkeeper keys revoke`",
                        record.id
                    ),
                });
            }
            eprintln!(
                "created key {} ({}) for tenant {tenant}; store it now, it cannot be shown again",
                record.id, record.name
            );
            Ok(())
        }
        KeysCommand::List => {
            let keys = storage
                .list_keys()
                .await
                .map_err(|e| format!("cannot list keys: {e}"))?;
            let mut out = std::io::stdout().lock();
            let mut table = format!(
                "{:<36}  {:<20}  {:<16}  {:<24}  {:<24}  status\n",
                "id", "name", "tenant", "created", "last used"
            );
            for k in keys {
                table.push_str(&format!(
                    "{:<36}  {:<20}  {:<16}  {:<24}  {:<24}  {}\n",
                    k.id,
                    k.name,
                    k.tenant,
                    k.created_at,
                    k.last_used_at.as_deref().unwrap_or("never"),
                    if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    }
                ));
            }
            out.write_all(table.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| format!("cannot write the list: {e}"))
        }
        KeysCommand::Revoke { id } => {
            let id = crate::domain::ids::parse_id(&id, "id").map_err(|e| e.to_string())?;
            if storage
                .revoke_key(&id)
                .await
                .map_err(|e| format!("cannot revoke the key: {e}"))?
            {
                eprintln!("revoked key {id}");
                Ok(())
            } else {
                Err(format!("no key with id {id}"))
            }
        }
    }
}

async fn open(database: &DatabaseArgs) -> Result<Storage, String> {
    Storage::connect(&database.database_url, database.durable())
        .await
        .map_err(|e| format!("cannot open the database {}: {e}", database.database_url))
}

/// `open`, for the commands that read or change a database: a path that names no file is
/// refused rather than made into a new, empty database.
async fn open_existing(database: &DatabaseArgs) -> Result<Storage, String> {
    match Storage::file_exists(&database.database_url) {
        Ok(true) => open(database).await,
        Ok(false) => Err(format!(
            "no database at {} (check --database-url)",
            database.database_url
        )),
        Err(e) => Err(format!(
            "cannot open the database {}: {e}",
            database.database_url
        )),
    }
}

async fn export(database: DatabaseArgs, thread: &str) -> Result<(), String> {
    let thread = crate::domain::ids::parse_id(thread, "thread").map_err(|e| e.to_string())?;
    let storage = open_existing(&database).await?;
    let bundle = storage.export_thread(None, &thread).await;
    storage.close().await;
    let bundle = bundle
        .map_err(|e| format!("cannot read the thread: {e}"))?
        .ok_or_else(|| format!("no thread with id {thread}"))?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(crate::domain::export::write(&bundle).as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the export: {e}"))
}

async fn import(
    database: DatabaseArgs,
    file: &std::path::Path,
    tenant: &str,
) -> Result<(), String> {
    if tenant.trim().is_empty() {
        return Err("--tenant must not be empty".into());
    }
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("cannot read stdin: {e}"))?
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?
    };
    let bundle =
        crate::domain::export::read(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let storage = open(&database).await?;
    let imported = storage.import_thread(tenant, &bundle).await;
    storage.close().await;
    match imported.map_err(|e| format!("cannot import: {e}"))? {
        true => {
            eprintln!(
                "imported thread {} ({} messages, {} turns) into tenant {tenant}",
                bundle.thread.id,
                bundle.messages.len(),
                bundle.turns.len()
            );
            Ok(())
        }
        false => Err(format!(
            "a thread with id {} already exists",
            bundle.thread.id
        )),
    }
}
