//! The reads on every request's path (the key check, a thread, a turn's context) run
//! through rusqlite on a small pool of read-only connections, on the calling thread.
//!
//! They are single indexed queries over pages the OS has cached, shorter than the hand-off
//! to another thread that an async driver needs for each statement (sqlx's worker model:
//! two context switches per query, which showed up as the largest cost of a turn in the
//! profile). The rest of the reads (lists, exports, audit records) stay on sqlx's pool.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rusqlite::OpenFlags;

use super::Error;

/// Idle connections kept; more are opened under load and closed when returned.
const MAX_IDLE: usize = 8;

/// Distinct statements a connection keeps prepared.
const STATEMENT_CACHE: usize = 32;

pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
    /// After `close`, connections are closed when given back instead of kept.
    closed: AtomicBool,
}

impl Readers {
    /// A pool over the database at `path`, which must exist (migrations have run).
    pub(super) fn open(path: &Path) -> Result<Self, Error> {
        let readers = Self {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        };
        let first = readers.connect()?;
        readers.give_back(first);
        Ok(readers)
    }

    /// Runs `read` on a pooled connection.
    pub(super) fn read<T>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let pooled = self.lock().pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = read(&conn);
        self.give_back(conn);
        result
    }

    /// Closes the idle connections (at shutdown).
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.lock().clear();
    }

    fn connect(&self) -> Result<rusqlite::Connection, Error> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = rusqlite::Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(super::BUSY_TIMEOUT)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    fn give_back(&self, conn: rusqlite::Connection) {
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE && !self.closed.load(Ordering::SeqCst) {
            idle.push(conn);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<rusqlite::Connection>> {
        // A panic while the lock was held cannot leave the list half-changed.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
