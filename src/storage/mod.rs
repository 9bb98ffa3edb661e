//! Storage: the only place with SQL. SQLite in WAL mode with foreign keys on, a busy
//! timeout and `synchronous=FULL`, so a turn acknowledged to a client survives a crash.
//!
//! Every write of the process goes through one writer thread on one connection (`writer.rs`),
//! which batches the writes of concurrent requests into one `BEGIN IMMEDIATE` transaction
//! and answers each only once that transaction is durable (group commit); a checkpoint
//! thread keeps the log short beside it (`checkpointer.rs`). Reads never wait for writers
//! (WAL): the hot ones on pooled rusqlite connections (`readers.rs`), the rest on sqlx's
//! pool. Thread contexts are cached between turns (`contexts.rs`) and audit requests stored
//! as differences (`audit.rs`).
//!
//! The interface is shaped as whole operations ("create this thread", "begin this turn",
//! "complete this turn") so that a PostgreSQL implementation can sit behind it later.

mod audit;
mod checkpointer;
mod contexts;
mod export;
mod gathered_wal;
mod keys;
mod lists;
mod messages;
mod owner;
mod readers;
mod rows;
mod threads;
mod turns;
mod writer;

use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Sqlite, SqliteConnection};

pub use contexts::Context;
pub use keys::{ActiveKey, KeyRecord};
pub use lists::{Order, Page, PageQuery};
pub use messages::sha256_hex;
pub use turns::{BeginTurn, Begun, Closing, Finished, NotFinished, TurnOutcome};
use writer::Durability;

/// How long a statement waits on another process's write lock before failing busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The context cache's size unless configured (`--context-cache`).
pub const DEFAULT_CONTEXT_CACHE: usize = 32 << 20;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A storage failure. Callers mostly pass it on; `error.rs` maps it to the contract's
/// `unavailable` (the database cannot be reached or the writer has stopped) or to an
/// internal error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Read(#[from] sqlx::Error),
    #[error(transparent)]
    Write(#[from] rusqlite::Error),
    #[error("the storage writer has stopped")]
    Closed,
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The database could not be reached, rather than refusing or failing one operation.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Read(e) => matches!(
                e,
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
            ),
            Self::Write(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::DiskFull
            ),
            Self::Write(_) | Self::Internal(_) => false,
            Self::Closed => true,
        }
    }
}

/// The outcome of an operation on a thread that may be missing or held by a running turn.
#[derive(Debug)]
pub enum Claim<T> {
    Done(T),
    NotFound,
    Busy,
}

#[derive(Clone)]
pub struct Storage {
    writer: writer::Writer,
    /// The hot reads (rusqlite, on the calling thread).
    readers: std::sync::Arc<readers::Readers>,
    /// Every other read (sqlx).
    read: SqlitePool,
    /// Thread contexts between turns.
    contexts: std::sync::Arc<contexts::ContextCache>,
    /// This process, as named in the leases it takes.
    owner: std::sync::Arc<str>,
    /// Checkpoints the write-ahead log beside the writer; stopped by `close`.
    checkpointer: std::sync::Arc<std::sync::Mutex<checkpointer::Checkpointer>>,
}

impl Storage {
    /// Opens (creating if missing) the database and applies pending migrations.
    pub async fn connect(url: &str, durable: bool) -> Result<Self, Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if durable {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        if url.contains(":memory:") {
            // Each in-memory connection is its own database: the readers would never see
            // what the writer stored, and everything would vanish on exit.
            return Err(Error::Internal(
                "an in-memory database is not supported: give a file, e.g. sqlite://threadkeeper.db".into(),
            ));
        }
        // The writer's log writes are gathered into one call per commit (gathered_wal.rs).
        gathered_wal::register().map_err(Error::Internal)?;
        // Savepoints (a batch run again after one of its writes failed) and SQLite's own
        // statement journals keep the pages' contents before them in a sub-journal, which
        // would otherwise spill to a temporary file past 64 KiB: a pwrite per page
        // journaled, on the writer's critical path.
        let mut write = options
            .clone()
            .vfs(gathered_wal::NAME)
            .pragma("temp_store", "memory")
            .connect()
            .await?;
        MIGRATOR.run(&mut write).await.map_err(sqlx::Error::from)?;
        let path = options.get_filename().to_owned();
        let readers = readers::Readers::open(&path)?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.read_only(true))
            .await?;
        let wal_frames = checkpointer::WalFrames::default();
        let writer = writer::Writer::start(write, durable, wal_frames.clone())
            .map_err(|e| Error::Internal(format!("starting the writer thread: {e}")))?;
        let checkpointer = checkpointer::Checkpointer::start(&path, wal_frames)?;
        Ok(Self {
            writer,
            readers: std::sync::Arc::new(readers),
            contexts: std::sync::Arc::new(contexts::ContextCache::new(DEFAULT_CONTEXT_CACHE)),
            read,
            owner: owner::current().into(),
            checkpointer: std::sync::Arc::new(std::sync::Mutex::new(checkpointer)),
        })
    }

    /// Whether the database file `url` names exists. The commands that read or change a
    /// database refuse a mistyped path rather than create an empty database there.
    pub fn file_exists(url: &str) -> Result<bool, Error> {
        Ok(SqliteConnectOptions::from_str(url)?.get_filename().exists())
    }

    /// Keeps up to about `bytes` of thread contexts in memory between turns (0: none).
    pub fn with_context_cache(mut self, bytes: usize) -> Self {
        self.contexts = std::sync::Arc::new(contexts::ContextCache::new(bytes));
        self
    }

    /// Applies migrations only (the `migrate` command).
    pub async fn migrate(url: &str) -> Result<(), Error> {
        let storage = Self::connect(url, true).await?;
        storage.close().await;
        Ok(())
    }

    /// Closes every connection, the writer's last: the last connection to close checkpoints
    /// the write-ahead log into the database file and removes it, so a stopped service
    /// leaves one self-contained file.
    pub async fn close(&self) {
        self.readers.close();
        if let Ok(mut checkpointer) = self.checkpointer.lock() {
            checkpointer.stop();
        }
        self.read.close().await;
        self.writer.stop().await;
    }

    /// Readiness: the database answers a query.
    pub async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    /// A write on a request's path storing about `bytes`: committed on the calling thread
    /// when the writer is idle and the write is short (see `Writer::write_short`).
    async fn write_short<T, F>(
        &self,
        durability: Durability,
        bytes: usize,
        operation: F,
    ) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnMut(&Tx) -> Result<T, Error> + Send + 'static,
    {
        self.writer.write_short(durability, bytes, operation).await
    }

    /// Runs a write operation in the writer's next batch (group commit); returns once the
    /// batch's transaction is durable. The operation writes only to the database: it runs
    /// again if another write of its batch fails (see `Writer`).
    async fn write<T, F>(&self, operation: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnMut(&Tx) -> Result<T, Error> + Send + 'static,
    {
        self.writer.write(operation).await
    }

    async fn reader(&self) -> Result<PoolConnection<Sqlite>, sqlx::Error> {
        self.read.acquire().await
    }
}

/// Whether `thread_id` is a thread of `tenant`: every read of a thread's contents is
/// scoped by tenant in SQL, never by filtering afterwards.
async fn thread_of_tenant(
    conn: &mut ReadConn,
    tenant: &str,
    thread_id: &str,
) -> Result<bool, Error> {
    let exists: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM threads WHERE id = ? AND tenant = ?")
            .bind(thread_id)
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(exists.is_some())
}

/// One row of `table` (`messages` or `turns`) by id, inside a thread of `tenant`.
async fn row_in_thread<T>(
    conn: &mut ReadConn,
    (table, columns): (&str, &str),
    map: fn(&sqlx::sqlite::SqliteRow) -> Result<T, Error>,
    tenant: &str,
    thread_id: &str,
    id: &str,
) -> Result<Option<T>, Error> {
    let sql = format!(
        "SELECT {columns} FROM {table} WHERE id = ? AND thread_id = ? \
         AND thread_id IN (SELECT id FROM threads WHERE id = ? AND tenant = ?)"
    );
    sqlx::query(&sql)
        .bind(id)
        .bind(thread_id)
        .bind(thread_id)
        .bind(tenant)
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(map)
        .transpose()
}

/// A read connection (sqlx).
type ReadConn = SqliteConnection;

/// The connection write operations run on, inside the writer's transaction (rusqlite on
/// the writer thread).
type Tx = rusqlite::Connection;
