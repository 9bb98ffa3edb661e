//! Closed-loop load: N clients, each on its own OS thread with its own connection, doing
//! requests back to back. Every run is bounded twice: in requests (a shared budget) and in
//! time (a deadline), and every request has its own timeout.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::stats::{self, Hist};

/// How a run is bounded.
#[derive(Clone, Debug)]
pub struct Plan {
    pub clients: usize,
    /// Requests each client makes before the measured part (not recorded; errors still count).
    pub warmup: u64,
    /// Measured requests over all clients, at most.
    pub max_requests: u64,
    /// Length of the measured part, at most.
    pub max_time: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// What one request came to.
#[derive(Debug)]
pub enum Outcome {
    /// The expected success answer.
    Ok(Duration),
    /// An expected `409 thread_busy`.
    Busy(Duration),
    /// Anything unexpected: a wrong status, a failed turn, a transport error.
    Error(String),
}

/// The merged result of a run.
#[derive(Debug, Default)]
pub struct Run {
    pub ok: Hist,
    pub busy: Hist,
    pub errors: u64,
    /// The first few distinct error messages.
    pub error_samples: Vec<String>,
    /// From the start barrier to the last client's end.
    pub wall: Duration,
    /// Service CPU seconds (utime+stime) spent during the measured part, when a pid was given.
    pub service_cpu_s: Option<f64>,
    /// Service context switches (all its threads) during the measured part.
    pub service_switches: Option<u64>,
    /// CPU seconds of this process (load generator and in-process fake) in the measured part.
    pub bench_cpu_s: f64,
    /// Share of the machine's CPU time that was busy (any process) in the measured part.
    pub machine_busy: f64,
}

impl Run {
    pub fn ok_per_s(&self) -> f64 {
        per_second(self.ok.len(), self.wall)
    }

    pub fn answers_per_s(&self) -> f64 {
        per_second(self.ok.len() + self.busy.len(), self.wall)
    }

    /// Service context switches per successful request.
    pub fn switches_per_ok(&self) -> Option<f64> {
        let n = self.service_switches?;
        (self.ok.len() > 0).then(|| n as f64 / self.ok.len() as f64)
    }

    /// Load generator + fake CPU milliseconds per successful request.
    pub fn bench_cpu_ms_per_ok(&self) -> Option<f64> {
        (self.ok.len() > 0).then(|| self.bench_cpu_s * 1e3 / self.ok.len() as f64)
    }

    /// Service CPU milliseconds per successful request.
    pub fn cpu_ms_per_ok(&self) -> Option<f64> {
        let cpu = self.service_cpu_s?;
        (self.ok.len() > 0).then(|| cpu * 1e3 / self.ok.len() as f64)
    }
}

fn per_second(count: u64, wall: Duration) -> f64 {
    if wall.is_zero() {
        0.0
    } else {
        count as f64 / wall.as_secs_f64()
    }
}

/// A client's work: called with its connection and its request number (0, 1, ...), warm-up
/// included; `None` means it has nothing more to do.
pub trait Job: FnMut(&mut Client, u64) -> Option<Outcome> + Send + 'static {}
impl<T: FnMut(&mut Client, u64) -> Option<Outcome> + Send + 'static> Job for T {}

struct ClientResult {
    ok: Hist,
    /// Allocated on the first 409 only.
    busy: Option<Hist>,
    errors: u64,
    error_samples: Vec<String>,
}

const ERROR_SAMPLES: usize = 8;

/// Runs `plan` against `target`; `make(i)` builds client i's job. `service_pid` names the
/// process whose CPU time is read at the start and end of the measured part.
pub fn run<J: Job>(
    target: SocketAddr,
    plan: &Plan,
    service_pid: Option<u32>,
    mut make: impl FnMut(usize) -> J,
) -> Result<Run, String> {
    let barrier = Arc::new(Barrier::new(plan.clients + 1));
    let budget = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(plan.clients);
    for index in 0..plan.clients {
        let mut job = make(index);
        let barrier = barrier.clone();
        let budget = budget.clone();
        let plan = plan.clone();
        let handle = std::thread::Builder::new()
            .name(format!("client-{index}"))
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut result = ClientResult {
                    ok: Hist::new(),
                    busy: None,
                    errors: 0,
                    error_samples: Vec::new(),
                };
                let note = |result: &mut ClientResult, message: String| {
                    result.errors += 1;
                    if result.error_samples.len() < ERROR_SAMPLES {
                        result.error_samples.push(message);
                    }
                };
                let mut client = match Client::new(target, plan.timeout) {
                    Ok(client) => Some(client),
                    Err(e) => {
                        note(&mut result, e);
                        None
                    }
                };
                let mut n = 0u64;
                if let Some(client) = client.as_mut() {
                    while n < plan.warmup {
                        match job(client, n) {
                            None => break,
                            Some(Outcome::Error(e)) => note(&mut result, e),
                            Some(_) => {}
                        }
                        n += 1;
                    }
                }
                barrier.wait();
                let deadline = Instant::now() + plan.max_time;
                if let Some(client) = client.as_mut() {
                    while Instant::now() < deadline
                        && budget.fetch_add(1, Ordering::Relaxed) < plan.max_requests
                    {
                        match job(client, n) {
                            None => break,
                            Some(Outcome::Ok(d)) => result.ok.record(d),
                            Some(Outcome::Busy(d)) => {
                                result.busy.get_or_insert_with(Hist::new).record(d)
                            }
                            Some(Outcome::Error(e)) => note(&mut result, e),
                        }
                        n += 1;
                    }
                }
                result
            })
            .map_err(|e| format!("cannot start a client thread: {e}"))?;
        handles.push(handle);
    }
    barrier.wait();
    let start = Instant::now();
    let cpu_start = service_pid.map(stats::cpu_seconds).transpose()?;
    let switches_start = service_pid.map(stats::context_switches).transpose()?;
    let bench_start = stats::cpu_seconds(std::process::id())?;
    let machine_start = stats::machine_jiffies()?;
    let mut run = Run::default();
    for handle in handles {
        let result = handle
            .join()
            .map_err(|_| "a client thread panicked".to_owned())?;
        run.ok.merge(&result.ok);
        if let Some(busy) = &result.busy {
            run.busy.merge(busy);
        }
        run.errors += result.errors;
        for e in result.error_samples {
            if run.error_samples.len() < ERROR_SAMPLES && !run.error_samples.contains(&e) {
                run.error_samples.push(e);
            }
        }
    }
    run.wall = start.elapsed();
    run.bench_cpu_s = stats::cpu_seconds(std::process::id())? - bench_start;
    let machine_end = stats::machine_jiffies()?;
    let total = machine_end.1.saturating_sub(machine_start.1);
    if total > 0 {
        run.machine_busy = machine_end.0.saturating_sub(machine_start.0) as f64 / total as f64;
    }
    if let (Some(pid), Some(before)) = (service_pid, cpu_start) {
        run.service_cpu_s = Some(stats::cpu_seconds(pid)? - before);
    }
    if let (Some(pid), Some(before)) = (service_pid, switches_start) {
        run.service_switches = Some(stats::context_switches(pid)?.saturating_sub(before));
    }
    Ok(run)
}

/// Runs `work(client, i)` for i in 0..n over `clients` threads (setup, not measured) and
/// returns the results in index order; the first error stops the remaining work.
pub fn fan_out<T: Send + 'static>(
    target: SocketAddr,
    clients: usize,
    n: usize,
    timeout: Duration,
    work: impl Fn(&mut Client, usize) -> Result<T, String> + Send + Sync + 'static,
) -> Result<Vec<T>, String> {
    let work = Arc::new(work);
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Mutex::new(None::<String>));
    let out: Arc<Mutex<Vec<Option<T>>>> = Arc::new(Mutex::new((0..n).map(|_| None).collect()));
    let mut handles = Vec::new();
    for _ in 0..clients.clamp(1, n.max(1)) {
        let (work, next, failed, out) = (work.clone(), next.clone(), failed.clone(), out.clone());
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut client = match Client::new(target, timeout) {
                    Ok(c) => c,
                    Err(e) => {
                        set_once(&failed, e);
                        return;
                    }
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= n || lock(&failed).is_some() {
                        return;
                    }
                    match work(&mut client, i) {
                        Ok(value) => {
                            if let Some(slot) = lock(&out).get_mut(i) {
                                *slot = Some(value);
                            }
                        }
                        Err(e) => {
                            set_once(&failed, e);
                            return;
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start a setup thread: {e}"))?;
        handles.push(handle);
    }
    for handle in handles {
        handle
            .join()
            .map_err(|_| "a setup thread panicked".to_owned())?;
    }
    if let Some(e) = lock(&failed).take() {
        return Err(e);
    }
    let values = std::mem::take(&mut *lock(&out));
    values
        .into_iter()
        .map(|v| v.ok_or_else(|| "setup work left undone".to_owned()))
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn set_once(slot: &Mutex<Option<String>>, e: String) {
    let mut guard = lock(slot);
    if guard.is_none() {
        *guard = Some(e);
    }
}
