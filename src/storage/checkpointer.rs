//! Moves committed pages from the write-ahead log into the database file, on its own
//! thread and connection, so the writer never does it inside a commit.
//!
//! SQLite's automatic checkpoint runs in the commit that crosses its threshold, on the
//! writing connection: every few hundred turns one batch would also copy megabytes and
//! fsync the database file while every waiting turn waits. Here a passive checkpoint runs
//! beside the writer (it never blocks it) and does that copying, checked every `PERIOD`
//! and run once the log holds `CHECKPOINT_FROM` frames. A passive checkpoint cannot start
//! the log over while the writer keeps appending, so the writer keeps its own automatic
//! checkpoint at a higher threshold: by then nearly every page is already copied, and its
//! checkpoint is short and lets the log restart from the top.
//!
//! Not checkpointing a short log matters: the first write after a checkpoint that copied
//! the whole log starts the log over, and that write took about 0.25 ms longer (measured
//! on streaming turns, where every turn came after a pause: BENCHMARKS.md). Checkpointing
//! every 100 ms whatever the log's length made nearly every turn after a pause pay it.
//!
//! The writer learns the log's length from SQLite's WAL hook, called after each commit;
//! installing it replaces SQLite's automatic checkpoint, so the writer thread runs that one
//! itself (`log_is_long`), never a request's thread.

use std::ffi::{c_char, c_int, c_void};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{ffi, OpenFlags};

use super::Error;

/// How often the log is checkpointed.
const PERIOD: Duration = Duration::from_millis(100);

/// The log's length, in frames (pages), from which this thread checkpoints it: SQLite's
/// own default threshold (4 MiB of log).
const CHECKPOINT_FROM: u32 = 1_000;

/// The writer's own checkpoint threshold, in frames (16 MiB of log).
const WRITER_CHECKPOINT: u32 = 4_000;

/// Frames in the write-ahead log after the writer's last commit.
pub(super) type WalFrames = Arc<AtomicU32>;

/// Whether the log has grown past the writer's own checkpoint threshold: the checkpoint
/// thread has not kept up, and the writer should checkpoint after its commit.
pub(super) fn log_is_long(frames: &WalFrames) -> bool {
    frames.load(Ordering::Relaxed) >= WRITER_CHECKPOINT
}

/// The writer's WAL hook: records the log's length after each commit. Removed when
/// dropped.
pub(super) struct WalHook {
    db: *mut ffi::sqlite3,
    frames: *const AtomicU32,
}

// SAFETY: the pointers are only used to remove the hook in `drop`; the hook travels with
// its connection (the writer's session), which one thread at a time uses. SQLite calls the
// hook on whichever thread commits, and reads `frames` there: an `AtomicU32`, which is
// `Sync`.
unsafe impl Send for WalHook {}

impl WalHook {
    /// # Safety
    ///
    /// The returned hook must be dropped while `db`'s handle is still open and still used by
    /// nothing else than `db`.
    pub(super) unsafe fn install(db: &rusqlite::Connection, frames: &WalFrames) -> Self {
        let frames = Arc::into_raw(frames.clone());
        // SAFETY: `frames` stays alive (one strong count) until the hook is removed in
        // `drop`; the caller keeps the handle open until then.
        let db = unsafe { db.handle() };
        unsafe { ffi::sqlite3_wal_hook(db, Some(after_commit), frames as *mut c_void) };
        Self { db, frames }
    }
}

impl Drop for WalHook {
    fn drop(&mut self) {
        // SAFETY: see `install`; after this call SQLite no longer holds `frames`.
        unsafe {
            ffi::sqlite3_wal_hook(self.db, None, std::ptr::null_mut());
            drop(Arc::from_raw(self.frames));
        }
    }
}

unsafe extern "C" fn after_commit(
    frames: *mut c_void,
    _db: *mut ffi::sqlite3,
    _name: *const c_char,
    in_log: c_int,
) -> c_int {
    // SAFETY: `frames` is the pointer `install` registered, alive until the hook is removed.
    let counter = unsafe { &*(frames as *const AtomicU32) };
    counter.store(in_log.max(0) as u32, Ordering::Relaxed);
    ffi::SQLITE_OK
}

pub(super) struct Checkpointer {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Checkpoints the database at `path` once the writer's log (`frames`) is long enough.
    pub(super) fn start(path: &Path, frames: WalFrames) -> Result<Self, Error> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = rusqlite::Connection::open_with_flags(path, flags)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("threadkeeper-checkpoint".into())
            .spawn(move || {
                // The log's length at the last checkpoint: until the writer commits again
                // (and so starts the log over), there is nothing new to copy.
                let mut copied = 0;
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(PERIOD) {
                    let in_log = frames.load(Ordering::Relaxed);
                    if in_log < CHECKPOINT_FROM || in_log == copied {
                        continue;
                    }
                    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        Ok(()) => copied = in_log,
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
