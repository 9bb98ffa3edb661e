//! Group commit: one writer task runs every write of this process, batching the writes of
//! concurrent requests into one transaction, and answers each only after that transaction
//! is durable.
//!
//! With `synchronous=FULL` a commit costs an fsync, so committing turns one by one caps the
//! rate at the disk's fsync rate. Here a batch takes whatever writes are queued (up to
//! `MAX_BATCH`), runs each inside its own SAVEPOINT (a write that fails is rolled back alone;
//! the others still commit), commits once, then replies to all. A write never waits for a
//! batch to fill: an idle writer commits a lone write at once.

use std::any::Any;

use futures_util::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{Executor, Sqlite, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

/// The most writes one transaction carries.
const MAX_BATCH: usize = 256;

type Output = Result<Box<dyn Any + Send>, sqlx::Error>;
type Operation = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Output> + Send>;

struct Job {
    run: Operation,
    reply: oneshot::Sender<Output>,
    /// Must be on disk before it is answered (fsync); else durable with the next such commit.
    sync: bool,
}

enum Message {
    Write(Job),
    /// Commit what is queued, give the connection back, and stop.
    Stop(oneshot::Sender<()>),
}

#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::UnboundedSender<Message>,
}

impl Writer {
    /// Starts the writer task on the one connection that writes. `durable`: the connection
    /// runs `synchronous=FULL` (else `NORMAL` throughout).
    pub(super) fn start(connection: PoolConnection<Sqlite>, durable: bool) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(connection, queue, durable));
        Self { jobs }
    }

    /// Stops the writer after the writes already queued; later writes fail with
    /// `PoolClosed`. Returns once its connection is back in the pool.
    pub(super) async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.jobs.send(Message::Stop(done)).is_ok() {
            let _ = stopped.await;
        }
    }

    /// Runs `operation` inside the next batch's transaction; returns once it is durable.
    pub(super) async fn write<T, F>(&self, operation: F) -> Result<T, sqlx::Error>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>
            + Send
            + 'static,
    {
        self.submit(operation, true).await
    }

    /// Like `write`, but answered once committed, without waiting for an fsync of its own:
    /// the write reaches the disk with the next durable commit (WAL frames are written in
    /// order), and survives a process crash at once (it is in the OS's page cache). For
    /// writes nobody is answered about yet, such as a turn's input before its reply.
    pub(super) async fn write_deferred<T, F>(&self, operation: F) -> Result<T, sqlx::Error>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>
            + Send
            + 'static,
    {
        self.submit(operation, false).await
    }

    async fn submit<T, F>(&self, operation: F, sync: bool) -> Result<T, sqlx::Error>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let run: Operation = Box::new(move |conn| {
            Box::pin(async move {
                operation(conn)
                    .await
                    .map(|value| Box::new(value) as Box<dyn Any + Send>)
            })
        });
        self.jobs
            .send(Message::Write(Job { run, reply, sync }))
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let output = answer.await.map_err(|_| sqlx::Error::PoolClosed)??;
        output
            .downcast::<T>()
            .map(|value| *value)
            .map_err(|_| sqlx::Error::Protocol("writer returned an unexpected type".into()))
    }
}

async fn run(
    mut connection: PoolConnection<Sqlite>,
    mut queue: mpsc::UnboundedReceiver<Message>,
    durable: bool,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // The connection's current `synchronous` setting (FULL when it was opened durable);
    // `None` after a failed switch, so the next batch sets it again.
    let mut syncing = Some(durable);
    let mut stop = None;
    while let Some(first) = queue.recv().await {
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
            // A batch that only holds deferred writes commits without an fsync. The switch
            // rides in the same call as BEGIN: one round trip to SQLite's thread, not two.
            let want = durable && batch.iter().any(|job| job.sync);
            let begin = match (syncing == Some(want), want) {
                (true, _) => "BEGIN IMMEDIATE",
                (false, true) => "PRAGMA synchronous = FULL; BEGIN IMMEDIATE",
                (false, false) => "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE",
            };
            syncing = if commit_batch(&mut connection, &mut batch, begin).await {
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
            let _ = job.reply.send(Err(sqlx::Error::PoolClosed));
        }
    }
    // Returning the connection to its pool lets the pool close.
    drop(connection);
    if let Some(done) = stop {
        let _ = done.send(());
    }
}

/// Runs one batch in one transaction opened by `begin`. Returns false when `begin` itself
/// failed (the batch was then opened by a plain BEGIN, or refused).
async fn commit_batch(
    conn: &mut SqliteConnection,
    batch: &mut Vec<Job>,
    begin: &'static str,
) -> bool {
    // BEGIN IMMEDIATE takes the write lock up front (waiting on other processes for the
    // busy timeout), so no statement of the batch can fail to upgrade a read lock.
    // A plain string is executed unprepared, all its statements in one call.
    let mut begun = conn.execute(begin).await.map(|_| ());
    let as_asked = begun.is_ok();
    if begun.is_err() {
        // A transaction left open by a failed ROLLBACK would refuse every later batch:
        // close it and try once more.
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        begun = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map(|_| ());
    }
    if let Err(e) = begun {
        let message = e.to_string();
        for job in batch.drain(..) {
            let _ = job.reply.send(Err(sqlx::Error::Protocol(message.clone())));
        }
        return as_asked;
    }
    if batch.len() == 1 {
        // Alone in its transaction, a write needs no savepoint: its failure rolls back the
        // transaction (two statements fewer on the path of an idle service).
        if let Some(job) = batch.pop() {
            let output = (job.run)(conn).await;
            let end = if output.is_ok() { "COMMIT" } else { "ROLLBACK" };
            let ended = sqlx::query(end).execute(&mut *conn).await;
            let _ = job.reply.send(match (output, ended) {
                (Ok(_), Err(e)) => Err(sqlx::Error::Protocol(format!(
                    "the write was rolled back: {e}"
                ))),
                (output, _) => output,
            });
        }
        return as_asked;
    }
    let mut done = Vec::with_capacity(batch.len());
    for job in batch.drain(..) {
        let output = in_savepoint(conn, job.run).await;
        done.push((job.reply, output));
    }
    match sqlx::query("COMMIT").execute(&mut *conn).await {
        Ok(_) => {
            for (reply, output) in done {
                let _ = reply.send(output);
            }
        }
        Err(e) => {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            let message = e.to_string();
            for (reply, _) in done {
                let _ = reply.send(Err(sqlx::Error::Protocol(format!(
                    "the write was rolled back: {message}"
                ))));
            }
        }
    }
    as_asked
}

/// Runs one operation so that its failure undoes only its own writes.
async fn in_savepoint(conn: &mut SqliteConnection, run: Operation) -> Output {
    sqlx::query("SAVEPOINT op").execute(&mut *conn).await?;
    let output = run(conn).await;
    if output.is_err() {
        sqlx::query("ROLLBACK TO op").execute(&mut *conn).await?;
    }
    sqlx::query("RELEASE op").execute(&mut *conn).await?;
    output
}
