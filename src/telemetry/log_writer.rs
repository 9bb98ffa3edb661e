//! Where log lines go: a buffer that a thread of its own writes to stderr at most
//! `FLUSH_EVERY` after its first line, or sooner once it holds 64 KiB.
//!
//! A line costs its caller a lock and a copy: no system call, and no wake-up of another
//! thread. (Writing each line to stderr cost a `write` per line on the request's thread, and
//! blocked that thread whenever stderr was a full pipe; handing each line to a logging
//! thread through a channel woke that thread for every line, three per turn, which cost
//! more CPU than the writes it saved.) Nothing is dropped: past `MAX_PENDING` bytes waiting,
//! loggers wait for the writer. Lines reach stderr within `FLUSH_EVERY`; on a clean exit
//! (the guard dropped) all of them do, and a process killed outright loses at most the
//! lines of its last `FLUSH_EVERY`.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer: the first line after a write-out wakes the
/// writer, which writes out everything logged by then `FLUSH_EVERY` later.
const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// A buffer this full is written at once rather than at the next tick.
const FLUSH_AT: usize = 64 << 10;

/// Past this much waiting (stderr blocked or slow), loggers wait for the writer.
const MAX_PENDING: usize = 8 << 20;

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Set by the guard: write what is left and stop.
    closed: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer early (a full buffer, or closing).
    wake: Condvar,
    /// Wakes loggers waiting for room.
    drained: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while the lock was held leaves at worst a partial line.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The subscriber's writer (`fmt().with_writer(...)`).
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Keep until exit: dropping it writes out every line still waiting and stops the thread.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the thread that writes to `out`.
pub fn start(out: impl Write + Send + 'static) -> std::io::Result<(LogWriter, LogGuard)> {
    let shared = Arc::new(Shared::default());
    let thread = std::thread::Builder::new()
        .name("threadkeeper-log".into())
        .spawn({
            let shared = shared.clone();
            move || write_out(&shared, out)
        })?;
    Ok((
        LogWriter {
            shared: shared.clone(),
        },
        LogGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

fn write_out(shared: &Shared, mut out: impl Write) {
    // Two buffers swap places, so steady logging allocates nothing.
    let mut spare = Vec::new();
    loop {
        let closed = {
            let mut pending = shared.lock();
            // Idle, it sleeps until a line comes (no wake-ups while nothing is logged)...
            while pending.bytes.is_empty() && !pending.closed {
                pending = shared
                    .wake
                    .wait(pending)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            // ...then lets lines gather for up to `FLUSH_EVERY`.
            if pending.bytes.len() < FLUSH_AT && !pending.closed {
                pending = shared
                    .wake
                    .wait_timeout(pending, FLUSH_EVERY)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
            }
            std::mem::swap(&mut pending.bytes, &mut spare);
            pending.closed
        };
        shared.drained.notify_all();
        if !spare.is_empty() {
            // Nowhere to report a failing stderr; the lines are dropped, not retried forever.
            let _ = out.write_all(&spare).and_then(|()| out.flush());
            spare.clear();
        }
        if closed && shared.lock().bytes.is_empty() {
            return;
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        // Loggers waiting for room write their lines themselves now.
        self.shared.drained.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One log line being written.
pub struct Line<'a> {
    shared: &'a Shared,
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            shared: &self.shared,
        }
    }
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.shared.lock();
        while pending.bytes.len() >= MAX_PENDING && !pending.closed {
            self.shared.wake.notify_one();
            pending = self
                .shared
                .drained
                .wait(pending)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        if pending.closed {
            // Logged after the guard was dropped (or while waiting for room as it was): the
            // writer may already have written its last, so nobody would write this out.
            drop(pending);
            return std::io::stderr().write(bytes);
        }
        let first = pending.bytes.is_empty();
        pending.bytes.extend_from_slice(bytes);
        // The first line since the last write-out starts the writer's clock; a full buffer
        // cuts it short. Lines in between wake nobody.
        if first || pending.bytes.len() >= FLUSH_AT {
            self.shared.wake.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// An `out` the test can read, and block.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log(writer: &LogWriter, line: &str) {
        writer.make_writer().write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn lines_reach_the_output_soon_in_order_and_all_of_them_at_close() {
        let out = Captured::default();
        let (writer, guard) = start(out.clone()).unwrap();
        log(&writer, "one\n");
        log(&writer, "two\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.0.lock().unwrap().as_slice() != b"one\ntwo\n" {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        // From many threads, more than the buffer holds: every line, whole, once.
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        log(&writer, &format!("thread {t} line {i}\n"));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2 + 4 * 20_000);
        for t in 0..4 {
            let mine: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .collect();
            let expected: Vec<String> = (0..20_000)
                .map(|i| format!("thread {t} line {i}"))
                .collect();
            assert_eq!(mine, expected, "thread {t}'s lines lost or reordered");
        }
    }

    #[test]
    fn a_blocked_output_makes_loggers_wait_instead_of_dropping_lines() {
        // An output that lets nothing through until the test opens it.
        #[derive(Clone)]
        struct Gate(Arc<(Mutex<bool>, Condvar)>, Captured);
        impl Write for Gate {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                let (open, opened) = &*self.0;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = opened.wait(open).unwrap();
                }
                self.1.write(bytes)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Gate(Arc::default(), Captured::default());
        let (writer, guard) = start(gate.clone()).unwrap();
        let line = "x".repeat(1023) + "\n";
        let logger = std::thread::spawn({
            let writer = writer.clone();
            let line = line.clone();
            move || {
                for _ in 0..(3 * MAX_PENDING / 1024) {
                    log(&writer, &line);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(!logger.is_finished(), "the logger did not wait for room");
        *gate.0 .0.lock().unwrap() = true;
        gate.0 .1.notify_all();
        logger.join().unwrap();
        drop(guard);
        assert_eq!(gate.1 .0.lock().unwrap().len(), 3 * MAX_PENDING);
    }
}
