//! Gives memory back to the operating system once the service goes quiet.
//!
//! Allocators keep what a burst of turns freed (request bodies, replies, contexts the cache
//! let go) for reuse, so a service left idle after load stayed near its peak resident size:
//! with glibc's allocator 105 MB after the benchmark's load, of which `malloc_trim` gave back
//! 25 MB; with mimalloc (the binary's allocator since) 111 MB in a run without `mi_collect`
//! against 90-94 MB in six runs with it (BENCHMARKS.md). So once after each burst this task
//! asks both (mimalloc for the service's own allocations, glibc for SQLite's): at the first
//! one-second tick that finds no API request (`/v1`) arrived since the tick before and no
//! turn running, which is one to two seconds after the last request arrived. It does not
//! trim while requests keep arriving, nor between turns that come less than a second apart;
//! health checks and metrics scrapes do not count as activity. Only glibc has `malloc_trim`:
//! elsewhere only mimalloc is asked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::task::TaskTracker;

/// Requests seen so far (by `note_request`).
static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// How long without a request (and with no turn running) counts as quiet.
const QUIET: Duration = Duration::from_secs(1);

/// Records that an API request arrived; the HTTP layer calls it for every `/v1` request.
pub fn note_request() {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
}

/// Trims the heap after each burst of requests, once the service is quiet (until the task
/// is dropped).
pub async fn release_when_idle(turns: TaskTracker) {
    trim_when_idle(&turns, &REQUESTS, trim).await;
}

/// Runs `trim` when `IdleTrims` says so, from the `requests` count and `turns`.
async fn trim_when_idle(turns: &TaskTracker, requests: &AtomicU64, trim: fn() -> bool) {
    let mut trims = IdleTrims::default();
    let mut ticks = tokio::time::interval(QUIET);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if trims.due(requests.load(Ordering::Relaxed), !turns.is_empty()) {
            // It walks the whole heap: not on an async worker.
            let started = std::time::Instant::now();
            let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
            let took_us = started.elapsed().as_micros() as u64;
            tracing::debug!(
                took_us,
                released,
                "gave memory freed since the last burst back to the OS"
            );
        }
    }
}

/// Decides, one `QUIET` tick after another, when to trim: at the first quiet tick after
/// some activity, and then not again until there has been more.
#[derive(Default)]
struct IdleTrims {
    /// The request count at the previous tick.
    seen: u64,
    /// The request count when the heap was last trimmed.
    trimmed: u64,
}

impl IdleTrims {
    /// `requests`: the request count now; `running`: whether a turn is running.
    fn due(&mut self, requests: u64, running: bool) -> bool {
        let quiet = requests == self.seen && !running;
        self.seen = requests;
        if quiet && requests != self.trimmed {
            self.trimmed = requests;
            return true;
        }
        false
    }
}

/// Gives the heaps' free memory back to the OS; whether glibc had any to give.
fn trim() -> bool {
    // SAFETY: neither takes a pointer, and both may be called from any thread. `mi_collect`
    // collects this thread's heap, then gives back to the OS the pages that every thread has
    // returned to mimalloc's arenas (idle threads never get round to it); it skips all of
    // that on a thread whose heap was never set up, as a blocking thread that has not
    // allocated yet may be, hence `mi_thread_init` first. Pages that the async workers still
    // hold stay theirs. In a process whose global allocator is not mimalloc there is next to
    // nothing to do.
    unsafe {
        libmimalloc_sys::mi_thread_init();
        libmimalloc_sys::mi_collect(true);
    }
    // SAFETY: `malloc_trim` takes no pointers; it works on glibc's own heap under glibc's
    // own locks, so it is safe to call at any time from any thread.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    return unsafe { libc::malloc_trim(0) } == 1;
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_after_each_burst_and_only_when_quiet() {
        let mut trims = IdleTrims::default();
        // Fresh and idle: nothing was freed, nothing to give back.
        assert!(!trims.due(0, false));
        // Requests keep arriving: never under load.
        assert!(!trims.due(5, false));
        assert!(!trims.due(9, false));
        // A quiet tick: trim once...
        assert!(trims.due(9, false));
        // ...and not again while it stays quiet.
        assert!(!trims.due(9, false));
        assert!(!trims.due(9, false));
        // A long turn with no new request is not quiet.
        assert!(!trims.due(10, true));
        assert!(!trims.due(10, true));
        // It ends: the next quiet tick trims.
        assert!(trims.due(10, false));
        assert!(!trims.due(10, false));
    }

    #[test]
    fn trimming_gives_freed_memory_back_and_keeps_live_memory() {
        let kept: Vec<Vec<u8>> = (0..1_000).map(|i| vec![1u8; 100 + i]).collect();
        drop((0..1_000).map(|i| vec![0u8; 5_000 + i]).collect::<Vec<_>>());
        let released = trim();
        assert_eq!(released, cfg!(all(target_os = "linux", target_env = "gnu")));
        assert!(kept
            .iter()
            .enumerate()
            .all(|(i, v)| v.len() == 100 + i && v.iter().all(|b| *b == 1)));
    }

    static TRIMS: AtomicU64 = AtomicU64::new(0);

    fn count_trim() -> bool {
        TRIMS.fetch_add(1, Ordering::SeqCst);
        true
    }

    // The task as `serve` runs it, on a paused clock: a burst of requests, then quiet, then a
    // turn that runs across several ticks.
    #[tokio::test(start_paused = true)]
    async fn the_task_trims_a_second_after_a_burst_and_not_while_a_turn_runs() {
        static REQUESTS_HERE: AtomicU64 = AtomicU64::new(0);
        let turns = TaskTracker::new();
        let task = tokio::spawn({
            let turns = turns.clone();
            async move { trim_when_idle(&turns, &REQUESTS_HERE, count_trim).await }
        });
        let tick = |n: u64| tokio::time::sleep(QUIET * n as u32 + QUIET / 2);
        tick(3).await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), 0, "fresh and idle");
        for _ in 0..3 {
            REQUESTS_HERE.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(QUIET).await;
        }
        assert_eq!(TRIMS.load(Ordering::SeqCst), 0, "requests kept arriving");
        tick(2).await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), 1, "quiet after the burst");
        REQUESTS_HERE.fetch_add(1, Ordering::Relaxed);
        let turn = turns.spawn(tokio::time::sleep(QUIET * 4));
        tick(3).await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), 1, "a turn is running");
        turn.await.unwrap();
        tick(2).await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), 2, "the turn ended");
        tick(3).await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), 2, "once per burst");
        task.abort();
    }
}
