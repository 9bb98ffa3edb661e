//! Scenario 5: the service's resident memory idle, with many turns in flight (a slow upstream
//! holds them open), and after 100k stored messages.

use std::time::{Duration, Instant};

use fake_openrouter::FakeUpstream;
use serde_json::json;

use crate::client::Client;
use crate::common::{create_threads, direct_outcome, turn_outcome, Bench, TIMEOUT, UPSTREAM_PATH};
use crate::fixtures;
use crate::load::{self, Plan};
use crate::service::Service;
use crate::stats::{self, Hist};

const MB: f64 = 1e6;

/// RSS of a service that has just started and answered one health check.
pub fn idle(b: &mut Bench, svc: &mut Service) -> Result<(), String> {
    let mut client = Client::new(svc.addr, TIMEOUT)?;
    let answer = client.get("/healthz")?;
    if answer.status != 200 {
        b.report.errors.push(format!(
            "5 memory: /healthz answered {}: {}",
            answer.status,
            answer.snippet(200)
        ));
    }
    drop(client);
    std::thread::sleep(Duration::from_millis(500));
    let rss = svc.rss()?;
    b.report
        .single("5 memory", "RSS idle (fresh)", "MB", rss as f64 / MB);
    Ok(())
}

/// How long the service is left alone before "idle" memory is read: the service gives memory
/// freed by a burst back to the OS once it has been quiet for a second (src/memory.rs).
const QUIET: Duration = Duration::from_millis(2_500);

/// RSS once the earlier scenarios are over (the service idle again), then 100k small messages
/// appended in batches without a restart, and RSS after them.
pub fn after_load_and_appends(b: &mut Bench, svc: &mut Service) -> Result<(), String> {
    std::thread::sleep(QUIET);
    let rss = svc.rss()?;
    b.report
        .single("5 memory", "RSS idle after load", "MB", rss as f64 / MB);

    let sizes = b.sizes.clone();
    let total = sizes.append_requests * sizes.append_batch;
    eprintln!(
        "[bench] 5 memory: appending {total} messages in {} requests ...",
        sizes.append_requests
    );
    let threads = create_threads(
        svc.addr,
        sizes.append_threads,
        r#"{"metadata":{"bench":"appends"}}"#,
    )?;
    let mut client = Client::new(svc.addr, TIMEOUT)?;
    let mut latency = Hist::new();
    let mut errors = Vec::new();
    let mut appended = 0usize;
    let start = Instant::now();
    for r in 0..sizes.append_requests {
        let id = &threads[r % threads.len()];
        let body = fixtures::small_messages(r * sizes.append_batch, sizes.append_batch);
        match client.post(&format!("/v1/threads/{id}/messages"), body) {
            Ok(a) if a.status == 201 => {
                latency.record(a.elapsed);
                appended += sizes.append_batch;
            }
            Ok(a) => errors.push(format!("append answered {}: {}", a.status, a.snippet(300))),
            Err(e) => errors.push(e),
        }
    }
    let wall = start.elapsed();
    svc.check_alive()?;
    std::thread::sleep(QUIET);
    let rss = svc.rss()?;
    let peak = svc.peak_rss()?;
    let db_bytes = svc.database_bytes();
    let r = &mut b.report;
    let s = "5 memory";
    r.single(
        s,
        "database file + WAL, main service",
        "MB",
        db_bytes as f64 / MB,
    );
    r.single(
        s,
        &format!("append {} messages p50", sizes.append_batch),
        "ms",
        latency.ms(0.5).unwrap_or(0.0),
    );
    r.single(
        s,
        "appended messages/s",
        "1/s",
        appended as f64 / wall.as_secs_f64().max(1e-9),
    );
    r.single(
        s,
        &format!("RSS after {total} messages"),
        "MB",
        rss as f64 / MB,
    );
    r.single(s, "RSS peak (VmHWM), main service", "MB", peak as f64 / MB);
    let count = errors.len() as u64;
    errors.truncate(8);
    r.error("5 memory appends", count, &errors);
    r.detail(
        "5 memory appends",
        json!({"messages": appended, "requests": sizes.append_requests, "threads": threads.len(),
               "latency": latency.summary(), "wall_s": wall.as_secs_f64(), "rss_bytes": rss, "peak_rss_bytes": peak, "database_bytes": db_bytes}),
    );
    Ok(())
}

/// `inflight` turns held open by the slow fake at once: RSS sampled while all of them are at the
/// upstream call, next to as many direct calls.
pub fn in_flight(b: &mut Bench, svc: &mut Service, fake: &FakeUpstream) -> Result<(), String> {
    let n = b.sizes.inflight;
    let delay = b.sizes.inflight_delay;
    eprintln!("[bench] 5 memory: {n} turns in flight (upstream answers after {delay:?}) ...");
    let threads = create_threads(svc.addr, n, r#"{"metadata":{"bench":"inflight"}}"#)?;
    let idle = svc.rss()?;
    fake.reset();
    let plan = Plan {
        clients: n,
        warmup: 0,
        max_requests: n as u64,
        max_time: Duration::from_secs(60),
        timeout: TIMEOUT,
    };
    let pid = svc.pid;
    let (run, sampled) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| sample_when_all_in_flight(fake, pid, n, delay));
        let run = load::run(svc.addr, &plan, Some(pid), |i| {
            let id = threads[i].clone();
            move |client: &mut Client, k: u64| {
                (k == 0).then(|| {
                    turn_outcome(
                        client.post(
                            &format!("/v1/threads/{id}/turns"),
                            r#"{"input":"A slow question."}"#,
                        ),
                        false,
                    )
                })
            }
        });
        let sampled = sampler
            .join()
            .unwrap_or_else(|_| Err("the RSS sampler panicked".into()));
        (run, sampled)
    });
    let run = run?;
    let (max_rss, in_flight_seen) = sampled?;
    svc.check_alive()?;
    let peak = svc.peak_rss()?;

    // The same number of calls straight to the slow fake, all at once.
    let bodies: Vec<bytes::Bytes> = fake
        .requests()
        .into_iter()
        .map(|r| bytes::Bytes::from(r.body))
        .collect();
    fake.reset();
    let direct = if bodies.is_empty() {
        None
    } else {
        let bodies = std::sync::Arc::new(bodies);
        Some(load::run(fake.addr(), &plan, None, |i| {
            let body = bodies[i % bodies.len()].clone();
            move |client: &mut Client, k: u64| {
                (k == 0).then(|| direct_outcome(client.post(UPSTREAM_PATH, body.clone())))
            }
        })?)
    };

    let r = &mut b.report;
    let s = "5 memory";
    r.single(
        s,
        &format!("RSS with {n} turns in flight"),
        "MB",
        max_rss as f64 / MB,
    );
    r.single(s, "RSS before them", "MB", idle as f64 / MB);
    r.single(
        s,
        "RSS peak (VmHWM), in-flight service",
        "MB",
        peak as f64 / MB,
    );
    let q = |h: &Hist, q: f64| h.ms(q).unwrap_or(0.0);
    let d50 = direct.as_ref().map_or(0.0, |d| q(&d.ok, 0.5));
    let d99 = direct.as_ref().map_or(0.0, |d| q(&d.ok, 0.99));
    r.pair(
        s,
        &format!("latency p50, {n} at once"),
        "ms",
        q(&run.ok, 0.5),
        d50,
    );
    r.pair(
        s,
        &format!("latency p99, {n} at once"),
        "ms",
        q(&run.ok, 0.99),
        d99,
    );
    r.error("5 memory in flight", run.errors, &run.error_samples);
    if let Some(d) = &direct {
        r.error("5 memory in flight direct", d.errors, &d.error_samples);
    }
    if in_flight_seen < n {
        r.errors.push(format!(
            "5 memory: only {in_flight_seen} of {n} turns reached the upstream at once"
        ));
    }
    r.detail(
        "5 memory in flight",
        json!({"turns": n, "upstream_delay_ms": delay.as_secs_f64() * 1e3, "in_flight_seen": in_flight_seen,
               "rss_max_bytes": max_rss, "rss_before_bytes": idle, "peak_rss_bytes": peak,
               "service": run.ok.summary(), "direct": direct.as_ref().map(|d| d.ok.summary()),
               "service_cpu_s": run.service_cpu_s}),
    );
    Ok(())
}

/// Waits until the fake has received `n` requests (every turn is then waiting on it), then
/// samples the service's RSS a few times; returns the largest sample and how many requests
/// were seen.
fn sample_when_all_in_flight(
    fake: &FakeUpstream,
    pid: u32,
    n: usize,
    delay: Duration,
) -> Result<(u64, usize), String> {
    let start = Instant::now();
    let mut seen = 0;
    while start.elapsed() < Duration::from_secs(30) {
        seen = fake.requests().len();
        if seen >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut max = stats::rss_bytes(pid)?;
    // Sample through a part of the upstream's delay, while the turns are still waiting.
    let samples = 5;
    let step = (delay / 4) / samples;
    for _ in 0..samples {
        std::thread::sleep(step);
        max = max.max(stats::rss_bytes(pid)?);
    }
    Ok((max, seen))
}
