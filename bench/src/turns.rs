//! Scenario 1 (non-streaming turns at concurrency 1, 16, 64) and scenario 4 (64 clients on 64
//! threads against 64 clients racing on one thread), each next to direct calls to the fake.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fake_openrouter::FakeUpstream;
use serde_json::json;

use crate::client::Client;
use crate::common::{
    bodies_from_threads, ceil_div, create_threads, direct_outcome, turn_outcome, with_log_clearing,
    Bench, Level, TIMEOUT, TURNS_PER_THREAD, UPSTREAM_PATH,
};
use crate::load::{self, Plan, Run};
use crate::service::Service;

/// Each client's own threads.
type Pools = Vec<Arc<[String]>>;

/// Each client walks its own threads, `TURNS_PER_THREAD` turns on each.
fn own_threads_run(
    svc: &Service,
    fake: &FakeUpstream,
    level: &Level,
    tag: &'static str,
) -> Result<(Run, Pools), String> {
    let c = level.clients as u64;
    // One client takes the whole budget; several share it, unevenly: give each headroom.
    let share = if c == 1 {
        level.max_requests
    } else {
        ceil_div(level.max_requests * 3, c * 2)
    };
    let per_client = ceil_div(share + level.warmup, TURNS_PER_THREAD) as usize;
    let ids = create_threads(svc.addr, level.clients * per_client, tag)?;
    let pools: Vec<Arc<[String]>> = ids.chunks(per_client).map(Arc::from).collect();
    let plan = Plan {
        clients: level.clients,
        warmup: level.warmup,
        max_requests: level.max_requests,
        max_time: level.max_time,
        timeout: TIMEOUT,
    };
    let run = with_log_clearing(fake, || {
        load::run(svc.addr, &plan, Some(svc.pid), |i| {
            let pool = pools[i].clone();
            move |client: &mut Client, n: u64| {
                let id = pool.get((n / TURNS_PER_THREAD) as usize)?;
                let body = format!(
                    r#"{{"input":"Question {n} from client {i}: what changes once the context outgrows the window? Answer briefly."}}"#
                );
                Some(turn_outcome(
                    client.post(&format!("/v1/threads/{id}/turns"), body),
                    false,
                ))
            }
        })
    })?;
    Ok((run, pools))
}

/// Bodies like those the service sent: the first thread of up to 8 clients, cut turn by turn.
fn sample_bodies(svc: &Service, pools: &[Arc<[String]>]) -> Result<Arc<Vec<Bytes>>, String> {
    let sample: Vec<String> = pools
        .iter()
        .take(8)
        .filter_map(|p| p.first().cloned())
        .collect();
    let mut client = Client::new(svc.addr, TIMEOUT)?;
    Ok(Arc::new(bodies_from_threads(&mut client, &sample)?))
}

/// `clients` clients calling the fake directly with `bodies`, as many calls as the service
/// completed (bounded by the same time).
fn direct_run(
    fake: &FakeUpstream,
    bodies: Arc<Vec<Bytes>>,
    clients: usize,
    warmup: u64,
    calls: u64,
    max_time: Duration,
) -> Result<Run, String> {
    let plan = Plan {
        clients,
        warmup,
        max_requests: calls.max(1),
        max_time,
        timeout: TIMEOUT,
    };
    with_log_clearing(fake, || {
        load::run(fake.addr(), &plan, None, |i| {
            let bodies = bodies.clone();
            move |client: &mut Client, n: u64| {
                let body = bodies[(i * 7 + n as usize) % bodies.len()].clone();
                Some(direct_outcome(client.post(UPSTREAM_PATH, body)))
            }
        })
    })
}

pub fn turns(b: &mut Bench, svc: &mut Service, fake: &FakeUpstream) -> Result<(), String> {
    let levels = b.sizes.levels.clone();
    for level in &levels {
        let scenario = format!("1 turns c={}", level.clients);
        eprintln!("[bench] {scenario}: service ...");
        let (run, pools) = own_threads_run(svc, fake, level, r#"{"metadata":{"bench":"turns"}}"#)?;
        svc.check_alive()?;
        let bodies = sample_bodies(svc, &pools)?;
        eprintln!("[bench] {scenario}: direct ...");
        let direct = direct_run(
            fake,
            bodies.clone(),
            level.clients,
            level.warmup,
            run.ok.len(),
            level.max_time,
        )?;
        let r = &mut b.report;
        r.pair(
            &scenario,
            "turns/s",
            "1/s",
            run.ok_per_s(),
            direct.ok_per_s(),
        );
        r.pair(
            &scenario,
            "p50 latency",
            "ms",
            ms(&run, 0.5),
            ms(&direct, 0.5),
        );
        r.pair(
            &scenario,
            "p99 latency",
            "ms",
            ms(&run, 0.99),
            ms(&direct, 0.99),
        );
        if let Some(cpu) = run.cpu_ms_per_ok() {
            r.single(&scenario, "service CPU per turn", "ms", cpu);
        }
        if let Some(n) = run.switches_per_ok() {
            r.single(&scenario, "service context switches per turn", "count", n);
        }
        if let (Some(svc_cpu), Some(direct_cpu)) =
            (run.bench_cpu_ms_per_ok(), direct.bench_cpu_ms_per_ok())
        {
            r.pair(
                &scenario,
                "bench CPU per turn (clients + fake)",
                "ms",
                svc_cpu,
                direct_cpu,
            );
        }
        r.pair(
            &scenario,
            "machine CPU busy",
            "%",
            run.machine_busy * 100.0,
            direct.machine_busy * 100.0,
        );
        r.error(&scenario, run.errors, &run.error_samples);
        r.error(
            &format!("{scenario} direct"),
            direct.errors,
            &direct.error_samples,
        );
        r.detail(
            &scenario,
            json!({
                "clients": level.clients,
                "service": {"completed": run.ok.len(), "errors": run.errors, "wall_s": run.wall.as_secs_f64(),
                            "latency": run.ok.summary(), "service_cpu_s": run.service_cpu_s,
                            "service_context_switches": run.service_switches,
                            "bench_cpu_s": run.bench_cpu_s, "machine_busy": run.machine_busy},
                "direct": {"completed": direct.ok.len(), "errors": direct.errors, "wall_s": direct.wall.as_secs_f64(),
                           "latency": direct.ok.summary(), "distinct_bodies": bodies.len(),
                           "bench_cpu_s": direct.bench_cpu_s, "machine_busy": direct.machine_busy,
                           "mean_body_bytes": bodies.iter().map(Bytes::len).sum::<usize>() / bodies.len().max(1)},
            }),
        );
    }
    Ok(())
}

fn ms(run: &Run, q: f64) -> f64 {
    run.ok.ms(q).unwrap_or(0.0)
}

pub fn contention(b: &mut Bench, svc: &mut Service, fake: &FakeUpstream) -> Result<(), String> {
    let sizes = b.sizes.clone();
    let clients = sizes.race_clients;
    let level = Level {
        clients,
        max_requests: sizes.race_max,
        max_time: sizes.race_time,
        warmup: 2,
    };

    eprintln!("[bench] 4 contention: {clients} clients on {clients} threads ...");
    let (spread, pools) = own_threads_run(svc, fake, &level, r#"{"metadata":{"bench":"spread"}}"#)?;
    svc.check_alive()?;

    eprintln!("[bench] 4 contention: {clients} clients racing on one thread ...");
    let pool: Arc<[String]> = create_threads(
        svc.addr,
        sizes.race_pool,
        r#"{"metadata":{"bench":"race"}}"#,
    )?
    .into();
    // All clients aim at the same thread; it is swapped for a fresh one every
    // TURNS_PER_THREAD completed turns so that its context stays as short as in the spread run.
    let completed = Arc::new(AtomicU64::new(0));
    let plan = Plan {
        clients,
        warmup: 0,
        max_requests: sizes.race_max,
        max_time: sizes.race_time,
        timeout: TIMEOUT,
    };
    let race = with_log_clearing(fake, || {
        load::run(svc.addr, &plan, Some(svc.pid), |i| {
            let pool = pool.clone();
            let completed = completed.clone();
            move |client: &mut Client, n: u64| {
                let k = (completed.load(Ordering::Relaxed) / TURNS_PER_THREAD) as usize;
                let id = &pool[k.min(pool.len() - 1)];
                let body = format!(r#"{{"input":"Racing question {n} from client {i}."}}"#);
                let outcome =
                    turn_outcome(client.post(&format!("/v1/threads/{id}/turns"), body), true);
                if matches!(outcome, load::Outcome::Ok(_)) {
                    completed.fetch_add(1, Ordering::Relaxed);
                }
                Some(outcome)
            }
        })
    })?;
    svc.check_alive()?;

    eprintln!("[bench] 4 contention: direct ...");
    let bodies = sample_bodies(svc, &pools)?;
    let direct = direct_run(
        fake,
        bodies,
        clients,
        2,
        spread.ok.len().max(race.ok.len()),
        sizes.race_time,
    )?;

    let r = &mut b.report;
    let s = format!("4 contention {clients} threads");
    r.pair(
        &s,
        "turns/s (200)",
        "1/s",
        spread.ok_per_s(),
        direct.ok_per_s(),
    );
    r.pair(&s, "p50 latency", "ms", ms(&spread, 0.5), ms(&direct, 0.5));
    r.pair(
        &s,
        "p99 latency",
        "ms",
        ms(&spread, 0.99),
        ms(&direct, 0.99),
    );
    if let Some(cpu) = spread.cpu_ms_per_ok() {
        r.single(&s, "service CPU per turn", "ms", cpu);
    }
    if let Some(n) = spread.switches_per_ok() {
        r.single(&s, "service context switches per turn", "count", n);
    }
    r.pair(
        &s,
        "machine CPU busy",
        "%",
        spread.machine_busy * 100.0,
        direct.machine_busy * 100.0,
    );
    r.error(&s, spread.errors, &spread.error_samples);
    let s1 = "4 contention 1 thread".to_owned();
    // The racing clients finish one turn at a time while the others get 409: there is no
    // direct run doing the same, so these rows stand alone.
    r.single(&s1, "turns/s (200)", "1/s", race.ok_per_s());
    r.single(&s1, "answers/s (200+409)", "1/s", race.answers_per_s());
    r.single(&s1, "200 answers", "count", race.ok.len() as f64);
    r.single(&s1, "409 answers", "count", race.busy.len() as f64);
    r.single(&s1, "200 p50 latency", "ms", ms(&race, 0.5));
    r.single(&s1, "200 p99 latency", "ms", ms(&race, 0.99));
    r.single(
        &s1,
        "409 p50 latency",
        "ms",
        race.busy.ms(0.5).unwrap_or(0.0),
    );
    r.single(
        &s1,
        "409 p99 latency",
        "ms",
        race.busy.ms(0.99).unwrap_or(0.0),
    );
    r.single(&s1, "machine CPU busy", "%", race.machine_busy * 100.0);
    if let Some(cpu) = race.service_cpu_s {
        let answers = (race.ok.len() + race.busy.len()).max(1) as f64;
        r.single(&s1, "service CPU per answer", "ms", cpu * 1e3 / answers);
    }
    r.error(&s1, race.errors, &race.error_samples);
    r.error("4 contention direct", direct.errors, &direct.error_samples);
    r.detail(
        "4 contention",
        json!({
            "clients": clients,
            "spread": {"completed": spread.ok.len(), "wall_s": spread.wall.as_secs_f64(), "latency": spread.ok.summary(), "service_cpu_s": spread.service_cpu_s},
            "race": {"completed": race.ok.len(), "busy": race.busy.len(), "wall_s": race.wall.as_secs_f64(),
                     "latency_200": race.ok.summary(), "latency_409": race.busy.summary(), "service_cpu_s": race.service_cpu_s,
                     "threads_used": (completed.load(Ordering::Relaxed) / TURNS_PER_THREAD + 1).min(pool.len() as u64)},
            "direct": {"completed": direct.ok.len(), "wall_s": direct.wall.as_secs_f64(), "latency": direct.ok.summary()},
        }),
    );
    Ok(())
}
