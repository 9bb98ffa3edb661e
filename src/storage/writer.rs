//! Group commit: one writer thread runs every write of this process, batching the writes of
//! concurrent requests into one transaction, and answers each only once that transaction is
//! committed: durably (fsynced) for the writes that ask for it.
//!
//! With `synchronous=FULL` a commit costs an fsync, so committing turns one by one caps the
//! rate at the disk's fsync rate. Here a batch takes whatever writes are queued (up to
//! `MAX_BATCH`), runs them one after another in one transaction, commits once, then replies to
//! all. A write that fails is rolled back alone and the others still commit: the batch is
//! then rolled back and run again with each write inside its own SAVEPOINT. Writes are
//! closures that can run twice (`FnMut`, writing only to the database) for that. Savepoints
//! are not used up front because each costs a copy of every page its write touches (the
//! savepoint's journal) and three statements: about 6 % of the service's CPU at c=64
//! (BENCHMARKS.md), for writes that almost never fail. Writes that need no fsync of
//! their own (a turn's opening write) are split off and committed and answered first, so
//! they never wait for the durable writes' fsync. A write never waits for a batch to fill:
//! an idle writer commits a lone write at once.
//!
//! The connection is opened by sqlx like every other (same options, migrations run on it),
//! then its handle is taken out of sqlx's worker with `lock_handle` and driven directly
//! through rusqlite on this thread. sqlx runs each statement as a round trip between the
//! async task and the connection's own thread; a turn's writes are about a dozen
//! statements, and those hand-offs were most of the service's CPU time (BENCHMARKS.md). Here
//! a whole batch runs in one go, with prepared statements cached, on the thread that owns
//! the connection; the only hand-offs left are one to send a write and one to answer it.
//!
//! Short writes (a turn's opening and closing transactions) skip even those when the writer
//! is idle: nothing queued and the connection free, the calling thread takes the connection
//! and commits its write itself, a batch of one. Waking the writer thread and being woken
//! back cost more than the write (BENCHMARKS.md), and an idle writer has nothing to batch
//! it with anyway. Under load the writer is busy or has writes queued, so short writes queue
//! and are batched like the rest. Such a write never waits on the connection: it is taken
//! only when free, and another process holding SQLite's write lock sends the write to the
//! queue (where the busy timeout is waited out off the async workers) rather than blocking
//! the caller's thread. The trade-off: a durable short write's fsync then runs on an async
//! worker (0.1-0.2 ms on the benchmark's disk; longer on slow disks), which only happens
//! while the writer is idle, so while there is little else for that worker to do.

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::checkpointer::{self, WalFrames, WalHook};
use super::{Error, BUSY_TIMEOUT};
use crate::telemetry::metrics as m;

/// The most writes one transaction carries. Small enough that answers flow back while the
/// next batch is written: with 256, at 64 concurrent turns a batch could gather nearly every
/// turn's write, leave the async workers with nothing to do while it ran, then wake them all
/// at once while the writer sat idle (BENCHMARKS.md: 32 gave about 9 % more turns/s at c=64
/// than 256, in nine runs of each; 8 and 64 did no better than 256).
const MAX_BATCH: usize = 32;

/// The most a write may store (roughly, in bytes) to run on the caller's thread: a few WAL
/// pages, tens of microseconds.
const SHORT_WRITE: usize = 64 << 10;

/// Distinct statements the writer runs; all stay prepared.
const STATEMENT_CACHE: usize = 64;

type Output = Result<Box<dyn Any + Send>, Error>;
/// A write: it may run a second time, after its batch was rolled back (see `commit_batch`).
type Operation = Box<dyn FnMut(&rusqlite::Connection) -> Output + Send>;
/// A write's reply channel with what to send on it.
type Answer = (oneshot::Sender<Output>, Output);

struct Job {
    run: Operation,
    reply: oneshot::Sender<Output>,
    /// Must be on disk before it is answered (fsync); else durable with the next such commit.
    sync: bool,
}

enum Message {
    Write(Job),
    /// The log has grown past the writer's own checkpoint threshold after a write committed
    /// on a caller's thread: checkpoint it here, not there.
    Checkpoint,
    /// Commit what is queued, close the connection, and stop.
    Stop(oneshot::Sender<()>),
}

#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::UnboundedSender<Message>,
    shared: Arc<Shared>,
}

/// What the writer thread shares with the callers that may write on their own thread.
struct Shared {
    /// The connection, held by whoever is committing: the writer thread for a batch, or a
    /// caller for its short write. `None` once the writer has stopped.
    session: Mutex<Option<Session>>,
    /// Writes sent to the writer thread and not yet taken into a batch.
    queued: AtomicUsize,
    /// The write-ahead log's length after the last commit (read by the checkpointer).
    wal_frames: WalFrames,
}

/// The writing connection and its current `synchronous` setting.
struct Session {
    /// Declared before `db`, so the hook is removed before `db` is dropped (and so before the
    /// handle goes back to sqlx).
    _wal_hook: WalHook,
    db: rusqlite::Connection,
    /// Opened with `synchronous=FULL`: durable writes are fsynced.
    durable: bool,
    /// Whether the connection currently runs `synchronous=FULL`; `None` after a failed
    /// switch, so the next transaction sets it again.
    syncing: Option<bool>,
}

/// Whether a write must be fsynced before it is answered.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    /// On disk before it is answered.
    Synced,
    /// Answered once committed, without waiting for an fsync of its own: the write reaches
    /// the disk with the next synced commit (WAL frames are written in order), and survives
    /// a process crash at once (it is in the OS's page cache). For writes nobody is answered
    /// about yet, such as a turn's input before its reply.
    Deferred,
}

impl Writer {
    /// Starts the writer thread on the one connection that writes. `durable`: the connection
    /// runs `synchronous=FULL` (else `NORMAL` throughout).
    pub(super) fn start(
        connection: SqliteConnection,
        durable: bool,
        wal_frames: WalFrames,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Handle::current();
        let shared = Arc::new(Shared {
            session: Mutex::new(None),
            queued: AtomicUsize::new(0),
            wal_frames,
        });
        let owned = shared.clone();
        std::thread::Builder::new()
            .name("threadkeeper-writer".into())
            .spawn(move || own_connection(runtime, connection, queue, durable, &owned))?;
        Ok(Self { jobs, shared })
    }

    /// Stops the writer after the writes already queued; later writes fail with
    /// `Error::Closed` (a short write already committing on a caller's thread finishes
    /// first). Returns once its connection is closed: nothing is written after that.
    pub(super) async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.jobs.send(Message::Stop(done)).is_ok() {
            let _ = stopped.await;
        }
    }

    /// Runs `operation` inside the next batch's transaction; returns once it is durable.
    /// `operation` writes only to the database: it runs a second time if another write of
    /// its batch fails (see `commit_batch`).
    pub(super) async fn write<T, F>(&self, operation: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnMut(&rusqlite::Connection) -> Result<T, Error> + Send + 'static,
    {
        self.submit(operation, true).await
    }

    /// A write on a request's path: committed on the calling thread when the writer is idle
    /// and the write is short (`bytes`, about what it stores, at most `SHORT_WRITE`), else
    /// queued like any other. The calling thread is an async worker, held for as long as the
    /// write runs; a long write (a large input, a large reply) goes to the writer thread.
    pub(super) async fn write_short<T, F>(
        &self,
        durability: Durability,
        bytes: usize,
        operation: F,
    ) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnMut(&rusqlite::Connection) -> Result<T, Error> + Send + 'static,
    {
        let sync = durability == Durability::Synced;
        if bytes > SHORT_WRITE {
            return self.submit(operation, sync).await;
        }
        match self.try_here(operation, sync) {
            Ok(output) => output,
            Err(operation) => self.submit(operation, sync).await,
        }
    }

    /// Commits `operation` on this thread if the writer is idle; gives it back otherwise.
    fn try_here<T, F>(&self, mut operation: F, sync: bool) -> Result<Result<T, Error>, F>
    where
        F: FnMut(&rusqlite::Connection) -> Result<T, Error>,
    {
        // Queued writes go first: they were sent earlier, and the writer would batch them.
        if self.shared.queued.load(Ordering::Acquire) != 0 {
            return Err(operation);
        }
        let mut guard = match self.shared.session.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => {
                self.shared.session.clear_poison();
                recover(poisoned.into_inner())
            }
            Err(TryLockError::WouldBlock) => return Err(operation),
        };
        let Some(session) = guard.as_mut() else {
            return Err(operation);
        };
        // Never wait on another process's write lock here: that wait belongs on the
        // writer thread, which has the busy timeout.
        if session.begin_without_waiting(sync).is_err() {
            return Err(operation);
        }
        metrics::histogram!(m::WRITE_BATCH).record(1.0);
        let output = unwound(|| operation(&session.db));
        let output = session.end_alone(output);
        drop(guard);
        if checkpointer::log_is_long(&self.shared.wal_frames) {
            let _ = self.jobs.send(Message::Checkpoint);
        }
        Ok(output)
    }

    async fn submit<T, F>(&self, mut operation: F, sync: bool) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnMut(&rusqlite::Connection) -> Result<T, Error> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let run: Operation = Box::new(move |conn| {
            operation(conn).map(|value| Box::new(value) as Box<dyn Any + Send>)
        });
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        if self
            .jobs
            .send(Message::Write(Job { run, reply, sync }))
            .is_err()
        {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Closed);
        }
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
    shared: &Shared,
) {
    let stop = match runtime.block_on(connection.lock_handle()) {
        Ok(mut locked) => {
            // SAFETY: the handle stays locked out of sqlx's worker (so nothing else uses it)
            // until `locked` is dropped, after the session has been taken back and dropped
            // below. `from_handle` does not close it.
            match unsafe { rusqlite::Connection::from_handle(locked.as_raw_handle().as_ptr()) } {
                Ok(db) => {
                    db.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                    // Checkpoints run beside the writer (checkpointer.rs).
                    // SAFETY: the hook is removed when the session drops, which `_taken_back`
                    // ensures happens before `locked` gives the handle back to sqlx.
                    let wal_hook = unsafe { WalHook::install(&db, &shared.wal_frames) };
                    *lock(&shared.session) = Some(Session {
                        _wal_hook: wal_hook,
                        db,
                        durable,
                        syncing: Some(durable),
                    });
                    // However this thread ends (a stop, or a panic unwinding through here),
                    // the session is taken back from the callers before the handle goes back
                    // to sqlx: they then find `None` and queue (and the queue is closed).
                    let _taken_back = TakeBack(shared);
                    run(shared, &mut queue, durable)
                }
                Err(e) => refuse_all(shared, &mut queue, &e.to_string()),
            }
        }
        Err(e) => refuse_all(shared, &mut queue, &e.to_string()),
    };
    if let Err(e) = runtime.block_on(connection.close()) {
        tracing::warn!(error = %e, "closing the writer's connection failed");
    }
    if let Some(done) = stop {
        let _ = done.send(());
    }
}

/// Takes the session back from the callers when dropped; dropping it finalizes the cached
/// statements and removes the WAL hook while the handle is still this thread's.
struct TakeBack<'a>(&'a Shared);

impl Drop for TakeBack<'_> {
    fn drop(&mut self) {
        let session = lock(&self.0.session).take();
        drop(session);
    }
}

/// The session's lock. A caller that panicked inside its write left the lock poisoned and
/// possibly a transaction open: that transaction is rolled back before anyone goes on.
fn lock(session: &Mutex<Option<Session>>) -> MutexGuard<'_, Option<Session>> {
    match session.lock() {
        Ok(guard) => guard,
        Err(poisoned) => {
            session.clear_poison();
            recover(poisoned.into_inner())
        }
    }
}

fn recover(guard: MutexGuard<'_, Option<Session>>) -> MutexGuard<'_, Option<Session>> {
    if let Some(session) = guard.as_ref() {
        session.roll_back_if_open();
    }
    guard
}

/// The writer could not start: every write is refused with `message` until the stop.
fn refuse_all(
    shared: &Shared,
    queue: &mut mpsc::UnboundedReceiver<Message>,
    message: &str,
) -> Option<oneshot::Sender<()>> {
    tracing::error!(error = %message, "the storage writer could not start");
    while let Some(next) = queue.blocking_recv() {
        match next {
            Message::Write(job) => {
                shared.queued.fetch_sub(1, Ordering::AcqRel);
                let _ = job.reply.send(Err(Error::Internal(format!(
                    "the storage writer could not start: {message}"
                ))));
            }
            Message::Checkpoint => {}
            Message::Stop(done) => return Some(done),
        }
    }
    None
}

/// Runs batches until a stop (returned) or until every sender is gone. `fsyncs`: durable
/// writes are fsynced (`synchronous=FULL`).
fn run(
    shared: &Shared,
    queue: &mut mpsc::UnboundedReceiver<Message>,
    fsyncs: bool,
) -> Option<oneshot::Sender<()>> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut synced = Vec::with_capacity(MAX_BATCH);
    let mut stop = None;
    while let Some(first) = queue.blocking_recv() {
        let mut checkpoint = false;
        match first {
            Message::Write(job) => batch.push(job),
            Message::Checkpoint => checkpoint = true,
            Message::Stop(done) => stop = Some(done),
        }
        while stop.is_none() && batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(Message::Write(job)) => batch.push(job),
                Ok(Message::Checkpoint) => checkpoint = true,
                Ok(Message::Stop(done)) => stop = Some(done),
                Err(_) => break,
            }
        }
        if checkpoint && batch.is_empty() {
            if let Some(session) = lock(&shared.session).as_ref() {
                session.checkpoint_if_long(&shared.wal_frames);
            }
        }
        // Writes that need no fsync of their own (a turn's opening write) go first, in a
        // transaction of their own, and are answered before the durable ones are written:
        // their turns go on to call the model instead of waiting for an fsync they do not
        // need (BENCHMARKS.md: about 8 % more turns/s at c=64). The writes of one batch were
        // all in flight together, so any order between them is one they could have had.
        if fsyncs && batch.iter().any(|job| !job.sync) {
            synced.extend(batch.extract_if(.., |job| job.sync));
        }
        let mut wrote = false;
        // Why the first part could not even begin (another process holding the write lock
        // past the busy timeout): the second is refused for the same reason, not made to wait
        // it out again.
        let mut refused: Option<rusqlite::Error> = None;
        for part in [&mut batch, &mut synced] {
            if part.is_empty() {
                continue;
            }
            wrote = true;
            let answers = {
                // Waits for a caller committing its own short write, if one is.
                let mut session = lock(&shared.session);
                // Counted down only now: until the batch holds the connection, callers keep
                // queueing behind it rather than overtaking it.
                shared.queued.fetch_sub(part.len(), Ordering::AcqRel);
                metrics::histogram!(m::WRITE_BATCH).record(part.len() as f64);
                match (session.as_mut(), &refused) {
                    (_, Some(e)) => part
                        .drain(..)
                        .map(|job| (job.reply, Err(for_each_write(e))))
                        .collect(),
                    (Some(session), None) => {
                        let (answers, not_begun) = session.commit_batch(part);
                        refused = not_begun;
                        answers
                    }
                    // Not reached: the session is only taken once `run` has returned.
                    (None, None) => part
                        .drain(..)
                        .map(|job| (job.reply, Err(Error::Closed)))
                        .collect(),
                }
            };
            // Answered with the connection free: a caller whose next write follows at once
            // finds the writer idle and commits it itself.
            for (reply, output) in answers {
                let _ = reply.send(output);
            }
        }
        if wrote && checkpointer::log_is_long(&shared.wal_frames) {
            if let Some(session) = lock(&shared.session).as_ref() {
                session.checkpoint_if_long(&shared.wal_frames);
            }
        }
        if stop.is_some() {
            break;
        }
    }
    queue.close();
    // Writes that raced with the stop are refused rather than left waiting.
    while let Ok(message) = queue.try_recv() {
        match message {
            Message::Write(job) => {
                shared.queued.fetch_sub(1, Ordering::AcqRel);
                let _ = job.reply.send(Err(Error::Closed));
            }
            Message::Checkpoint | Message::Stop(_) => {}
        }
    }
    stop
}

impl Session {
    /// The writer's own checkpoint: once the log is past `checkpointer::WRITER_CHECKPOINT`
    /// pages, a passive checkpoint right after a commit, when no write of this process is in
    /// progress, copies what the checkpoint thread could not keep up with, so that the next
    /// write can start the log over from the top.
    fn checkpoint_if_long(&self, frames: &WalFrames) {
        if checkpointer::log_is_long(frames) {
            if let Err(e) = self
                .db
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            {
                tracing::warn!(error = %e, "the writer's checkpoint failed");
            }
        }
    }

    /// Opens a write transaction, first switching `synchronous` when this transaction's
    /// writes need another setting than the last one's: a transaction that only holds
    /// deferred writes commits without an fsync.
    fn begin(&mut self, sync: bool) -> rusqlite::Result<()> {
        let want = self.durable && sync;
        // BEGIN IMMEDIATE takes the write lock up front (waiting on other processes for the
        // busy timeout), so no statement of the transaction can fail to upgrade a read lock.
        let begin = match (self.syncing == Some(want), want) {
            (true, _) => "BEGIN IMMEDIATE",
            (false, true) => "PRAGMA synchronous = FULL; BEGIN IMMEDIATE",
            (false, false) => "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE",
        };
        let begun = self.db.execute_batch(begin);
        self.syncing = begun.is_ok().then_some(want);
        begun
    }

    /// `begin`, failing at once instead of waiting while another process writes.
    fn begin_without_waiting(&mut self, sync: bool) -> rusqlite::Result<()> {
        self.db.busy_timeout(Duration::ZERO)?;
        let begun = self.begin(sync);
        // Whatever happened, the connection must not stay open or without its busy timeout.
        let restored = self.db.busy_timeout(BUSY_TIMEOUT);
        let result = begun.and(restored);
        if result.is_err() {
            self.roll_back_if_open();
        }
        result
    }

    /// Rolls back a transaction left open (by a failed step, or a panic), if there is one.
    fn roll_back_if_open(&self) {
        if !self.db.is_autocommit() {
            let _ = self.db.execute_batch("ROLLBACK");
        }
    }

    /// Ends the transaction of a write that ran alone in it (no savepoint needed: its
    /// failure rolls back the whole transaction).
    fn end_alone<T>(&mut self, output: Result<T, Error>) -> Result<T, Error> {
        let end = if output.is_ok() { "COMMIT" } else { "ROLLBACK" };
        match (output, self.db.execute_batch(end)) {
            (Ok(_), Err(e)) => {
                let _ = self.db.execute_batch("ROLLBACK");
                Err(for_each_write(&e))
            }
            (output, _) => output,
        }
    }

    /// Runs one batch in one transaction; returns each write's answer, to be sent once the
    /// connection is free again, and the error that kept the transaction from beginning.
    fn commit_batch(&mut self, batch: &mut Vec<Job>) -> (Vec<Answer>, Option<rusqlite::Error>) {
        let sync = batch.iter().any(|job| job.sync);
        let mut begun = self.begin(sync);
        if begun.is_err() && !self.db.is_autocommit() {
            // A transaction left open by a failed ROLLBACK would refuse every later batch:
            // close it and try once more, switching `synchronous` as this batch needs (it
            // cannot be switched inside a transaction: a plain BEGIN here could commit
            // durable writes without their fsync). (Not after a busy timeout: that would
            // wait it out twice.)
            let _ = self.db.execute_batch("ROLLBACK");
            begun = self.begin(sync);
        }
        if let Err(e) = begun {
            return (answer_all(batch, &e), Some(e));
        }
        if batch.len() == 1 {
            let answers = batch
                .drain(..)
                .map(|mut job| {
                    let output = unwound(|| (job.run)(&self.db));
                    (job.reply, self.end_alone(output))
                })
                .collect();
            return (answers, None);
        }
        // Every write, one after another, without savepoints: a write that fails (rare: an
        // error of SQLite's or a bug, refusals are answers) sends the batch to `isolated`.
        let mut outputs: Vec<Output> = Vec::with_capacity(batch.len());
        for job in batch.iter_mut() {
            let output = unwound(|| (job.run)(&self.db));
            if self.db.is_autocommit() {
                return (lost_transaction(batch, output), None);
            }
            if output.is_err() {
                let rolled_back = self.db.execute_batch("ROLLBACK");
                return match rolled_back.and_then(|()| self.begin(sync)) {
                    Ok(()) => (self.isolated(batch), None),
                    Err(e) => (answer_all(batch, &e), Some(e)),
                };
            }
            outputs.push(output);
        }
        (self.commit(batch, outputs), None)
    }

    /// Runs a batch again in the transaction just begun, each write inside its own savepoint,
    /// so that the writes that fail are rolled back alone and the others still commit.
    fn isolated(&mut self, batch: &mut Vec<Job>) -> Vec<Answer> {
        let mut outputs: Vec<Output> = Vec::with_capacity(batch.len());
        for job in batch.iter_mut() {
            let output = match in_savepoint(&self.db, &mut job.run) {
                Ok(output) => output,
                // The savepoint could not be taken, rolled back to or released: the
                // write's changes may still be in the transaction, so nothing of it commits.
                Err(e) => {
                    if !self.db.is_autocommit() {
                        let _ = self.db.execute_batch("ROLLBACK");
                    }
                    return answer_all(batch, &e);
                }
            };
            if self.db.is_autocommit() {
                return lost_transaction(batch, output);
            }
            outputs.push(output);
        }
        self.commit(batch, outputs)
    }

    /// Commits a batch's transaction: each write answered with its output, or all with the
    /// error that failed the commit.
    fn commit(&self, batch: &mut Vec<Job>, outputs: Vec<Output>) -> Vec<Answer> {
        match self.db.execute_batch("COMMIT") {
            Ok(()) => batch
                .drain(..)
                .zip(outputs)
                .map(|(job, output)| (job.reply, output))
                .collect(),
            Err(e) => {
                let _ = self.db.execute_batch("ROLLBACK");
                answer_all(batch, &e)
            }
        }
    }
}

/// SQLite rolled the whole transaction back itself (a full disk, an I/O error) during a
/// write: the writes before it went with it, and the ones after must not run in
/// transactions of their own. All are answered with its error.
fn lost_transaction(batch: &mut Vec<Job>, output: Output) -> Vec<Answer> {
    let error = match &output {
        Err(e) => copy_of(e),
        Ok(_) => Error::Internal("a write ended its batch's transaction".into()),
    };
    batch
        .drain(..)
        .map(|job| (job.reply, Err(copy_of(&error))))
        .collect()
}

/// Every write of `batch` answered with the error that failed it whole.
fn answer_all(batch: &mut Vec<Job>, e: &rusqlite::Error) -> Vec<Answer> {
    batch
        .drain(..)
        .map(|job| (job.reply, Err(for_each_write(e))))
        .collect()
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

/// The same error again, for another write of a batch it failed.
fn copy_of(e: &Error) -> Error {
    match e {
        Error::Write(e) => for_each_write(e),
        Error::Closed => Error::Closed,
        other => Error::Internal(format!("the write was rolled back: {other}")),
    }
}

/// Runs a write, turning a panic (a bug) into that write's error: its writes are rolled
/// back like any failed write's, and the connection, the writer thread and the other
/// writes of its batch go on.
fn unwound<T>(write: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(write)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(panic = %why, "a write panicked; it was rolled back");
        Err(Error::Internal("a write failed unexpectedly".into()))
    })
}

/// Runs one operation so that its failure undoes only its own writes. The outer error: the
/// savepoint itself failed, and what the operation wrote may not have been undone.
fn in_savepoint(db: &rusqlite::Connection, run: &mut Operation) -> rusqlite::Result<Output> {
    db.prepare_cached("SAVEPOINT op")?.execute([])?;
    let output = unwound(|| run(db));
    if db.is_autocommit() {
        // SQLite ended the whole transaction (a full disk, an I/O error): there is no
        // savepoint left, and the write's own error says why (the batch answers it).
        return Ok(output);
    }
    if output.is_err() {
        db.prepare_cached("ROLLBACK TO op")?.execute([])?;
    }
    db.prepare_cached("RELEASE op")?.execute([])?;
    Ok(output)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::storage::{Storage, Tx};

    async fn scratch() -> (tempfile::TempDir, Storage, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("writer.db");
        let url = format!("sqlite://{}", path.display());
        let storage = Storage::connect(&url, true).await.unwrap();
        storage
            .write(|tx| Ok(tx.execute_batch("CREATE TABLE t (v INTEGER NOT NULL)")?))
            .await
            .unwrap();
        (dir, storage, path)
    }

    /// A write of one row that keeps the writer busy for `millis`, so that writes sent
    /// meanwhile queue behind it and run as one batch.
    fn occupy_writer(
        storage: &Storage,
        millis: u64,
    ) -> tokio::task::JoinHandle<Result<usize, Error>> {
        spawn_write(storage, move |tx: &Tx| {
            std::thread::sleep(Duration::from_millis(millis));
            Ok(tx.execute("INSERT INTO t VALUES (0)", [])?)
        })
    }

    /// Sends `write` to the writer from a task of its own.
    fn spawn_write<T, F>(storage: &Storage, write: F) -> tokio::task::JoinHandle<Result<T, Error>>
    where
        T: Send + 'static,
        F: FnMut(&Tx) -> Result<T, Error> + Send + 'static,
    {
        let storage = storage.clone();
        tokio::spawn(async move { storage.write(write).await })
    }

    /// The values in `t`, in order.
    fn values(path: &std::path::Path) -> Vec<i64> {
        let reader = rusqlite::Connection::open(path).unwrap();
        let mut select = reader.prepare("SELECT v FROM t ORDER BY v").unwrap();
        let values = select.query_map([], |r| r.get(0)).unwrap();
        values.collect::<Result<_, _>>().unwrap()
    }

    fn count(path: &std::path::Path) -> i64 {
        let reader = rusqlite::Connection::open(path).unwrap();
        reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    // One async worker: a short write blocked on the lock there would stall every task.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_short_write_waits_out_another_process_holding_the_write_lock() {
        let (_dir, storage, path) = scratch().await;
        // Another process (here: another connection) holds SQLite's write lock.
        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        // It waits on the writer thread, not on the caller's: the short path gives a write
        // back at once while another process holds the lock.
        let trying = std::time::Instant::now();
        let given_back = storage.writer.try_here(|_| Ok(()), true);
        assert!(
            given_back.is_err(),
            "ran on the caller's thread under a lock"
        );
        assert!(
            trying.elapsed() < Duration::from_secs(1),
            "the caller's thread waited {:?} on the lock",
            trying.elapsed()
        );
        let writing = tokio::spawn({
            let storage = storage.clone();
            async move {
                storage
                    .write_short(Durability::Synced, 0, |tx| {
                        Ok(tx.execute("INSERT INTO t VALUES (1)", [])?)
                    })
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !writing.is_finished(),
            "the write neither failed busy nor went around the lock"
        );
        other.execute_batch("COMMIT").unwrap();
        let released = std::time::Instant::now();
        assert_eq!(writing.await.unwrap().unwrap(), 1);
        assert!(
            released.elapsed() < Duration::from_secs(2),
            "the write went on {:?} after the lock was released",
            released.elapsed()
        );
        assert_eq!(count(&path), 1);
        storage.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_write_that_fails_or_panics_leaves_nothing_and_the_next_one_commits() {
        let (_dir, storage, path) = scratch().await;
        let failed = storage
            .write_short(Durability::Synced, 0, |tx| {
                tx.execute("INSERT INTO t VALUES (1)", [])?;
                tx.execute("INSERT INTO t VALUES (NULL)", [])?; // NOT NULL
                Ok(())
            })
            .await;
        assert!(failed.is_err());
        let panicked = tokio::spawn({
            let storage = storage.clone();
            async move {
                storage
                    .write_short(Durability::Deferred, 0, |tx| -> Result<(), Error> {
                        tx.execute("INSERT INTO t VALUES (2)", []).unwrap();
                        panic!("a bug inside a write");
                    })
                    .await
            }
        })
        .await
        .unwrap();
        assert!(
            panicked.is_err(),
            "a panic inside a write is that write's error"
        );
        // A panic on the writer thread is caught there too: it still writes.
        let on_writer = storage
            .write(|tx| -> Result<(), Error> {
                tx.execute("INSERT INTO t VALUES (5)", []).unwrap();
                panic!("a bug inside a batched write");
            })
            .await;
        assert!(on_writer.is_err());
        // Both the short path and the writer thread still work, and none of the half-done
        // writes above left a row.
        storage
            .write_short(Durability::Synced, 0, |tx| {
                Ok(tx.execute("INSERT INTO t VALUES (3)", [])?)
            })
            .await
            .unwrap();
        storage
            .write(|tx| Ok(tx.execute("INSERT INTO t VALUES (4)", [])?))
            .await
            .unwrap();
        let values = values(&path);
        assert_eq!(values, [3, 4]);
        storage.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_writer_lets_short_writes_run_on_the_callers_thread_and_not_long_ones() {
        let (_dir, storage, _path) = scratch().await;
        let thread_name = |_: &Tx| Ok(std::thread::current().name().map(str::to_owned));
        let short = storage
            .write_short(Durability::Synced, 100, thread_name)
            .await
            .unwrap();
        assert_ne!(short.as_deref(), Some("threadkeeper-writer"));
        let long = storage
            .write_short(Durability::Synced, SHORT_WRITE + 1, thread_name)
            .await
            .unwrap();
        assert_eq!(long.as_deref(), Some("threadkeeper-writer"));
        let queued = storage.write(thread_name).await.unwrap();
        assert_eq!(queued.as_deref(), Some("threadkeeper-writer"));
        storage.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_short_and_queued_writes_all_commit_once() {
        let (_dir, storage, path) = scratch().await;
        let mut tasks = Vec::new();
        for i in 0..200 {
            let storage = storage.clone();
            tasks.push(tokio::spawn(async move {
                let insert = move |tx: &Tx| Ok(tx.execute("INSERT INTO t VALUES (?)", [i])?);
                match i % 3 {
                    0 => storage.write(insert).await,
                    1 => storage.write_short(Durability::Deferred, 0, insert).await,
                    _ => storage.write_short(Durability::Synced, 0, insert).await,
                }
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), 1);
        }
        assert_eq!(count(&path), 200);
        storage.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deferred_write_batched_with_durable_ones_is_answered_before_them() {
        let (_dir, storage, path) = scratch().await;
        // A long write keeps the writer busy while the next two queue behind it.
        let busy = occupy_writer(&storage, 500);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A write of `value` taking `pause`, which notes when it was answered.
        let answered = Arc::new(Mutex::new(Vec::new()));
        let timed = |label: &'static str, durability, pause: u64, value: i64| {
            let (storage, answered) = (storage.clone(), answered.clone());
            tokio::spawn(async move {
                let write = move |tx: &Tx| {
                    std::thread::sleep(Duration::from_millis(pause));
                    Ok(tx.execute("INSERT INTO t VALUES (?)", [value])?)
                };
                let done = storage.write_short(durability, 0, write).await;
                answered
                    .lock()
                    .unwrap()
                    .push((label, std::time::Instant::now()));
                done
            })
        };
        let durable = timed("durable", Durability::Synced, 500, 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let deferred = timed("deferred", Durability::Deferred, 0, 2);
        for task in [busy, durable, deferred] {
            assert_eq!(task.await.unwrap().unwrap(), 1);
        }
        // Queued second, answered first: it did not wait for the durable write (which takes
        // 500 ms), nor for its commit. (Margins of hundreds of milliseconds: a busy test
        // machine delays wake-ups, not by that much.)
        let answered = answered.lock().unwrap().clone();
        let labels: Vec<&str> = answered.iter().map(|(label, _)| *label).collect();
        assert_eq!(labels, ["deferred", "durable"]);
        let waited = answered[1].1 - answered[0].1;
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert_eq!(count(&path), 3);
        storage.close().await;
    }

    // A batch runs its writes without savepoints; when one fails, the batch is rolled back
    // and run again with a savepoint around each write: the failed writes (an error, a
    // panic) leave nothing, the others commit once, and every write is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_fails_in_a_batch_is_rolled_back_alone() {
        let (_dir, storage, path) = scratch().await;
        let runs: Arc<[AtomicUsize; 6]> = Arc::new(Default::default());
        let busy = occupy_writer(&storage, 500);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut tasks = Vec::new();
        for value in 1..=5_i64 {
            let runs = runs.clone();
            tasks.push(spawn_write(&storage, move |tx: &Tx| {
                runs[value as usize].fetch_add(1, Ordering::Relaxed);
                tx.execute("INSERT INTO t VALUES (?)", [value])?;
                match value {
                    2 => {
                        tx.execute("INSERT INTO t VALUES (NULL)", [])?; // NOT NULL
                        Ok(value)
                    }
                    4 => panic!("a bug inside a batched write"),
                    _ => Ok(value),
                }
            }));
            // Queued in this order, behind the busy write.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(busy.await.unwrap().unwrap(), 1);
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap().ok());
        }
        assert_eq!(answers, [Some(1), None, Some(3), None, Some(5)]);
        let values = values(&path);
        assert_eq!(
            values,
            [0, 1, 3, 5],
            "each committed once, nothing of 2 or 4"
        );
        // Write 1 ran before the failure and again in the second run; 2 failed in the first
        // run and ran again alone; the writes after it ran only in the second run.
        let runs: Vec<usize> = runs[1..]
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .collect();
        assert_eq!(runs, [2, 2, 1, 1, 1]);
        storage.close().await;
    }

    // When a failed write's savepoint cannot be rolled back to (here the write released it
    // itself), its changes may be in the transaction: the batch is rolled back whole and
    // every write answered with the error, rather than committing them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_that_cannot_be_undone_alone_takes_its_batch_with_it() {
        let (_dir, storage, path) = scratch().await;
        let busy = occupy_writer(&storage, 300);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let queued = |value: i64| {
            spawn_write(&storage, move |tx: &Tx| {
                if value == 7 {
                    let _ = tx.execute_batch("RELEASE op");
                }
                tx.execute("INSERT INTO t VALUES (?)", [value])?;
                match value {
                    7 => Err(Error::Internal("failed after writing".into())),
                    _ => Ok(value),
                }
            })
        };
        let before = queued(1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let failing = queued(7);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let after = queued(2);
        assert_eq!(busy.await.unwrap().unwrap(), 1);
        for task in [before, failing, after] {
            assert!(task.await.unwrap().is_err());
        }
        assert_eq!(count(&path), 1, "only the busy write's row");
        storage
            .write(|tx: &Tx| Ok(tx.execute("INSERT INTO t VALUES (3)", [])?))
            .await
            .unwrap();
        assert_eq!(count(&path), 2, "the writer goes on");
        storage.close().await;
    }

    // Writes that all succeed run once each, in one transaction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_of_writes_that_succeed_runs_each_once() {
        let (_dir, storage, path) = scratch().await;
        let runs = Arc::new(AtomicUsize::new(0));
        let busy = occupy_writer(&storage, 300);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let tasks: Vec<_> = (1..=8_i64)
            .map(|value| {
                let runs = runs.clone();
                spawn_write(&storage, move |tx: &Tx| {
                    runs.fetch_add(1, Ordering::Relaxed);
                    Ok(tx.execute("INSERT INTO t VALUES (?)", [value])?)
                })
            })
            .collect();
        assert_eq!(busy.await.unwrap().unwrap(), 1);
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), 1);
        }
        assert_eq!(runs.load(Ordering::Relaxed), 8);
        assert_eq!(count(&path), 9);
        storage.close().await;
    }

    // A write during which SQLite rolls the whole transaction back (a full disk or an I/O
    // error does; here the write ends it itself) takes its batch with it: the writes before
    // it are undone, the ones after do not run in transactions of their own, and every one
    // is answered with its error. Nothing of the batch is stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_loses_its_batchs_transaction_fails_the_whole_batch() {
        let (_dir, storage, path) = scratch().await;
        let busy = occupy_writer(&storage, 1_000);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let queued = |value: Option<i64>| {
            spawn_write(&storage, move |tx: &Tx| match value {
                Some(value) => Ok(tx.execute("INSERT INTO t VALUES (?)", [value])?),
                None => {
                    tx.execute_batch("ROLLBACK")?;
                    Err(Error::Internal("the disk is full".into()))
                }
            })
        };
        let before = queued(Some(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let losing = queued(None);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let after = queued(Some(2));
        assert_eq!(busy.await.unwrap().unwrap(), 1);
        for (name, task) in [("before", before), ("losing", losing), ("after", after)] {
            let answer = task.await.unwrap();
            assert!(
                answer
                    .as_ref()
                    .is_err_and(|e| e.to_string().contains("the disk is full")),
                "{name}: {answer:?}"
            );
        }
        assert_eq!(count(&path), 1, "only the write of the batch before");
        // The writer goes on.
        storage
            .write(|tx: &Tx| Ok(tx.execute("INSERT INTO t VALUES (3)", [])?))
            .await
            .unwrap();
        assert_eq!(count(&path), 2);
        storage.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_is_checkpointed_only_once_it_is_long() {
        let (_dir, storage, _path) = scratch().await;
        let frames = || storage.writer.shared.wal_frames.load(Ordering::Relaxed);
        let insert = |tx: &Tx| Ok(tx.execute("INSERT INTO t VALUES (randomblob(3000))", [])?);
        // A short log: the checkpointer leaves it, so it keeps growing across pauses.
        storage.write(insert).await.unwrap();
        let short = frames();
        assert!(short > 0, "the WAL hook reports the log's length");
        tokio::time::sleep(Duration::from_millis(400)).await;
        storage.write(insert).await.unwrap();
        assert!(
            frames() > short,
            "a short log was checkpointed: {} <= {short}",
            frames()
        );
        // A long one (over 1,000 frames) is copied into the database beside the writer, so
        // the next write after a pause starts the log over.
        for _ in 0..(1_100 / 2) {
            storage.write(insert).await.unwrap();
        }
        let long = frames();
        assert!(long >= 1_000, "{long}");
        // Polled, with a generous deadline: the check runs every 100 ms, on a thread that a
        // busy machine may run late.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            tokio::time::sleep(Duration::from_millis(150)).await;
            storage.write(insert).await.unwrap();
            if frames() < 10 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the long log was not checkpointed: {} frames",
                frames()
            );
        }
        storage.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_checkpoints_a_log_the_checkpoint_thread_left_long() {
        let (_dir, storage, _path) = scratch().await;
        // Only the writer's own checkpoint is left (as when the checkpoint thread cannot
        // keep up).
        storage.checkpointer.lock().unwrap().stop();
        let frames = || storage.writer.shared.wal_frames.load(Ordering::Relaxed);
        let pages = |n: usize| {
            move |tx: &Tx| {
                for _ in 0..n {
                    tx.execute("INSERT INTO t VALUES (randomblob(4000))", [])?;
                }
                Ok(())
            }
        };
        // Under the writer's threshold (4,000 pages) the log only grows.
        storage.write(pages(1_500)).await.unwrap();
        storage.write(pages(10)).await.unwrap();
        let short = frames();
        assert!(short > 1_500, "{short}");
        storage.write(pages(10)).await.unwrap();
        assert!(
            frames() > short,
            "a log under the threshold was checkpointed"
        );
        // Past it, the writer copies the log into the database after the batch, so the next
        // write starts the log over.
        storage.write(pages(3_000)).await.unwrap();
        assert!(frames() >= 4_000, "{}", frames());
        storage.write(pages(1)).await.unwrap();
        assert!(
            frames() < 100,
            "the long log was not checkpointed: {} frames",
            frames()
        );
        storage.close().await;
    }

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
