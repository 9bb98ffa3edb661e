//! Moves committed pages from the write-ahead log into the database file, on its own
//! thread and connection, so the writer never does it inside a commit.
//!
//! SQLite's automatic checkpoint runs in the commit that crosses its threshold, on the
//! writing connection: every few hundred turns one batch would also copy megabytes and
//! fsync the database file while every waiting turn waits. Here a passive checkpoint runs
//! every `PERIOD` beside the writer (it never blocks it) and does that copying. A passive
//! checkpoint cannot start the log over while the writer keeps appending, so the writer
//! keeps its own automatic checkpoint at a higher threshold: by then nearly every page is
//! already copied, and its checkpoint is short and lets the log restart from the top.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::OpenFlags;

use super::Error;

/// How often the log is checkpointed.
const PERIOD: Duration = Duration::from_millis(100);

/// The writer's own automatic checkpoint threshold, in pages (16 MiB of log; SQLite's
/// default is 1,000).
pub(super) const WRITER_AUTOCHECKPOINT: u32 = 4_000;

pub(super) struct Checkpointer {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(super) fn start(path: &Path) -> Result<Self, Error> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = rusqlite::Connection::open_with_flags(path, flags)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("threadkeeper-checkpoint".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(PERIOD) {
                    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        Ok(()) => {}
                        // Another process's checkpoint is running: its work is this one's.
                        Err(rusqlite::Error::SqliteFailure(e, _))
                            if matches!(
                                e.code,
                                rusqlite::ErrorCode::DatabaseBusy
                                    | rusqlite::ErrorCode::DatabaseLocked
                            ) => {}
                        Err(e) => tracing::warn!(error = %e, "checkpoint failed; retrying"),
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("starting the checkpoint thread: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread after its current checkpoint.
    pub(super) fn stop(&mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}
