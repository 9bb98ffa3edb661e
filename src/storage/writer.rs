//! Group commit: one writer thread runs every write of this process, batching the writes of
//! concurrent requests into one transaction, and answers each only after that transaction
//! is durable.
//!
//! With `synchronous=FULL` a commit costs an fsync, so committing turns one by one caps the
//! rate at the disk's fsync rate. Here a batch takes whatever writes are queued (up to
//! `MAX_BATCH`), runs each inside its own SAVEPOINT (a write that fails is rolled back alone;
//! the others still commit), commits once, then replies to all. A write never waits for a
//! batch to fill: an idle writer commits a lone write at once.
//!
//! The connection is opened by sqlx like every other (same options, migrations run on it),
//! then its handle is taken out of sqlx's worker with `lock_handle` and driven directly
//! through rusqlite on this thread. sqlx runs each statement as a round trip between the
//! async task and the connection's own thread; a turn's writes are about a dozen
//! statements, and those hand-offs were most of the service's CPU time (BENCHMARKS.md). Here
//! a whole batch runs in one go, with prepared statements cached, on the thread that owns
//! the connection; the only hand-offs left are one to send a write and one to answer it.

use std::any::Any;

use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::checkpointer::WRITER_AUTOCHECKPOINT;
use super::Error;
use crate::telemetry::metrics as m;

/// The most writes one transaction carries.
const MAX_BATCH: usize = 256;

/// Distinct statements the writer runs; all stay prepared.
const STATEMENT_CACHE: usize = 64;

type Output = Result<Box<dyn Any + Send>, Error>;
type Operation = Box<dyn FnOnce(&rusqlite::Connection) -> Output + Send>;

struct Job {
    run: Operation,
    reply: oneshot::Sender<Output>,
    /// Must be on disk before it is answered (fsync); else durable with the next such commit.
    sync: bool,
}

enum Message {
    Write(Job),
    /// Commit what is queued, close the connection, and stop.
    Stop(oneshot::Sender<()>),
}

#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::UnboundedSender<Message>,
}

impl Writer {
    /// Starts the writer thread on the one connection that writes. `durable`: the connection
    /// runs `synchronous=FULL` (else `NORMAL` throughout).
    pub(super) fn start(connection: SqliteConnection, durable: bool) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("threadkeeper-writer".into())
            .spawn(move || own_connection(runtime, connection, queue, durable))?;
        Ok(Self { jobs })
    }

    /// Stops the writer after the writes already queued; later writes fail with
    /// `Error::Closed`. Returns once its connection is closed.
    pub(super) async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.jobs.send(Message::Stop(done)).is_ok() {
            let _ = stopped.await;
        }
    }

    /// Runs `operation` inside the next batch's transaction; returns once it is durable.
    pub(super) async fn write<T, F>(&self, operation: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, Error> + Send + 'static,
    {
        self.submit(operation, true).await
    }

    /// Like `write`, but answered once committed, without waiting for an fsync of its own:
    /// the write reaches the disk with the next durable commit (WAL frames are written in
    /// order), and survives a process crash at once (it is in the OS's page cache). For
    /// writes nobody is answered about yet, such as a turn's input before its reply.
    pub(super) async fn write_deferred<T, F>(&self, operation: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, Error> + Send + 'static,
    {
        self.submit(operation, false).await
    }

    async fn submit<T, F>(&self, operation: F, sync: bool) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, Error> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let run: Operation = Box::new(move |conn| {
            operation(conn).map(|value| Box::new(value) as Box<dyn Any + Send>)
        });
        self.jobs
            .send(Message::Write(Job { run, reply, sync }))
            .map_err(|_| Error::Closed)?;
        let output = answer.await.map_err(|_| Error::Closed)??;
        output
            .downcast::<T>()
            .map(|value| *value)
            .map_err(|_| Error::Internal("the writer returned an unexpected type".into()))
    }
}

/// The writer thread: takes the connection's handle from sqlx, runs batches until stopped,
/// then gives the handle back and closes the connection.
fn own_connection(
    runtime: tokio::runtime::Handle,
    mut connection: SqliteConnection,
    mut queue: mpsc::UnboundedReceiver<Message>,
    durable: bool,
) {
    let stop = match runtime.block_on(connection.lock_handle()) {
        Ok(mut locked) => {
            // SAFETY: the handle stays locked out of sqlx's worker (so nothing else uses it)
            // until `locked` is dropped, after `db`. `from_handle` does not close it.
            match unsafe { rusqlite::Connection::from_handle(locked.as_raw_handle().as_ptr()) } {
                Ok(db) => {
                    db.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                    // Checkpoints run beside the writer (checkpointer.rs).
                    let threshold = format!("PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT}");
                    if let Err(e) = db.execute_batch(&threshold) {
                        tracing::warn!(error = %e, "could not raise the writer's checkpoint threshold");
                    }
                    let stop = run(&db, &mut queue, durable);
                    // Finalizes the cached statements while the handle is still ours.
                    drop(db);
                    stop
                }
                Err(e) => refuse_all(&mut queue, &e.to_string()),
            }
        }
        Err(e) => refuse_all(&mut queue, &e.to_string()),
    };
    if let Err(e) = runtime.block_on(connection.close()) {
        tracing::warn!(error = %e, "closing the writer's connection failed");
    }
    if let Some(done) = stop {
        let _ = done.send(());
    }
}

/// The writer could not start: every write is refused with `message` until the stop.
fn refuse_all(
    queue: &mut mpsc::UnboundedReceiver<Message>,
    message: &str,
) -> Option<oneshot::Sender<()>> {
    tracing::error!(error = %message, "the storage writer could not start");
    while let Some(next) = queue.blocking_recv() {
        match next {
            Message::Write(job) => {
                let _ = job.reply.send(Err(Error::Internal(format!(
                    "the storage writer could not start: {message}"
                ))));
            }
            Message::Stop(done) => return Some(done),
        }
    }
    None
}

/// Runs batches until a stop (returned) or until every sender is gone.
fn run(
    db: &rusqlite::Connection,
    queue: &mut mpsc::UnboundedReceiver<Message>,
    durable: bool,
) -> Option<oneshot::Sender<()>> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // The connection's current `synchronous` setting (FULL when it was opened durable);
    // `None` after a failed switch, so the next batch sets it again.
    let mut syncing = Some(durable);
    let mut stop = None;
    while let Some(first) = queue.blocking_recv() {
        match first {
            Message::Write(job) => batch.push(job),
            Message::Stop(done) => stop = Some(done),
        }
        while stop.is_none() && batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(Message::Write(job)) => batch.push(job),
                Ok(Message::Stop(done)) => stop = Some(done),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            metrics::histogram!(m::WRITE_BATCH).record(batch.len() as f64);
            // A batch that only holds deferred writes commits without an fsync.
            let want = durable && batch.iter().any(|job| job.sync);
            let begin = match (syncing == Some(want), want) {
                (true, _) => "BEGIN IMMEDIATE",
                (false, true) => "PRAGMA synchronous = FULL; BEGIN IMMEDIATE",
                (false, false) => "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE",
            };
            syncing = if commit_batch(db, &mut batch, begin) {
                Some(want)
            } else {
                None
            };
        }
        if stop.is_some() {
            break;
        }
    }
    queue.close();
    // Writes that raced with the stop are refused rather than left waiting.
    while let Ok(message) = queue.try_recv() {
        if let Message::Write(job) = message {
            let _ = job.reply.send(Err(Error::Closed));
        }
    }
    stop
}

/// Runs one batch in one transaction opened by `begin`. Returns false when `begin` itself
/// failed (the batch was then opened by a plain BEGIN, or refused).
fn commit_batch(db: &rusqlite::Connection, batch: &mut Vec<Job>, begin: &str) -> bool {
    // BEGIN IMMEDIATE takes the write lock up front (waiting on other processes for the
    // busy timeout), so no statement of the batch can fail to upgrade a read lock.
    let mut begun = db.execute_batch(begin);
    let as_asked = begun.is_ok();
    if begun.is_err() {
        // A transaction left open by a failed ROLLBACK would refuse every later batch:
        // close it and try once more.
        let _ = db.execute_batch("ROLLBACK");
        begun = db.execute_batch("BEGIN IMMEDIATE");
    }
    if let Err(e) = begun {
        for job in batch.drain(..) {
            let _ = job.reply.send(Err(for_each_write(&e)));
        }
        return as_asked;
    }
    if batch.len() == 1 {
        // Alone in its transaction, a write needs no savepoint: its failure rolls back the
        // transaction.
        if let Some(job) = batch.pop() {
            let output = (job.run)(db);
            let end = if output.is_ok() { "COMMIT" } else { "ROLLBACK" };
            let ended = db.execute_batch(end);
            let _ = job.reply.send(match (output, ended) {
                (Ok(_), Err(e)) => {
                    let _ = db.execute_batch("ROLLBACK");
                    Err(for_each_write(&e))
                }
                (output, _) => output,
            });
        }
        return as_asked;
    }
    let mut done = Vec::with_capacity(batch.len());
    for job in batch.drain(..) {
        let output = in_savepoint(db, job.run);
        done.push((job.reply, output));
    }
    match db.execute_batch("COMMIT") {
        Ok(()) => {
            for (reply, output) in done {
                let _ = reply.send(output);
            }
        }
        Err(e) => {
            let _ = db.execute_batch("ROLLBACK");
            for (reply, _) in done {
                let _ = reply.send(Err(for_each_write(&e)));
            }
        }
    }
    as_asked
}

/// The error that failed a whole batch, once for each of its writes. SQLite's code is kept,
/// so a database locked by another process past the busy timeout still reads as
/// `unavailable` (503), not as an internal error.
fn for_each_write(e: &rusqlite::Error) -> Error {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => {
            Error::Write(rusqlite::Error::SqliteFailure(*code, message.clone()))
        }
        other => Error::Internal(format!("the write was rolled back: {other}")),
    }
}

/// Runs one operation so that its failure undoes only its own writes.
fn in_savepoint(db: &rusqlite::Connection, run: Operation) -> Output {
    db.prepare_cached("SAVEPOINT op")?.execute([])?;
    let output = run(db);
    if output.is_err() {
        db.prepare_cached("ROLLBACK TO op")?.execute([])?;
    }
    db.prepare_cached("RELEASE op")?.execute([])?;
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_refused_by_a_locked_database_answers_each_write_unavailable() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("database is locked".into()),
        );
        let each = for_each_write(&busy);
        assert!(each.is_unavailable(), "{each}");
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        assert!(for_each_write(&full).is_unavailable());
        let other = for_each_write(&rusqlite::Error::InvalidQuery);
        assert!(!other.is_unavailable());
    }
}
