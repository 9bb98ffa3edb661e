//! What every scenario shares: the run's settings and sizes, the fakes, thread creation, how
//! answers are judged, and the direct-call bodies.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fake_openrouter::{FakeConfig, FakeUpstream};
use serde_json::Value;
use tokio::runtime::Runtime;

use crate::client::{Answer, Client};
use crate::load::{self, Outcome};
use crate::report::Report;
use crate::service::Launcher;

/// Where the fake serves chat completions (its `base_url()` is `http://ADDR/api/v1`).
pub const UPSTREAM_PATH: &str = "/api/v1/chat/completions";
/// Turns per thread before a client moves to its next thread, so that contexts stay short
/// (up to 2 x 20 messages) and the turn scenarios measure the turn path, not thread length.
pub const TURNS_PER_THREAD: u64 = 20;
/// Per-request timeout everywhere.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// One concurrency level of scenario 1.
#[derive(Clone, Debug)]
pub struct Level {
    pub clients: usize,
    pub max_requests: u64,
    pub max_time: Duration,
    pub warmup: u64,
}

/// Every count and duration of a run, by mode.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub levels: Vec<Level>,
    pub stream_turns: usize,
    pub stream_warmup: usize,
    pub stream_delay: Duration,
    pub context_tokens: Vec<usize>,
    pub context_gets: usize,
    /// First reads of GET /context per size (each on its own copy of the thread).
    pub context_first_reads: usize,
    pub context_turns: usize,
    pub race_clients: usize,
    pub race_time: Duration,
    pub race_max: u64,
    pub race_pool: usize,
    pub inflight: usize,
    pub inflight_delay: Duration,
    pub append_requests: usize,
    pub append_batch: usize,
    pub append_threads: usize,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            levels: vec![
                Level {
                    clients: 1,
                    max_requests: 5_000,
                    max_time: Duration::from_secs(6),
                    warmup: 50,
                },
                Level {
                    clients: 16,
                    max_requests: 20_000,
                    max_time: Duration::from_secs(6),
                    warmup: 5,
                },
                Level {
                    clients: 64,
                    max_requests: 40_000,
                    max_time: Duration::from_secs(6),
                    warmup: 3,
                },
            ],
            stream_turns: 100,
            stream_warmup: 3,
            stream_delay: Duration::from_millis(5),
            context_tokens: vec![1_000, 10_000, 40_000, 80_000, 160_000],
            context_gets: 50,
            context_first_reads: 31,
            context_turns: 10,
            race_clients: 64,
            race_time: Duration::from_secs(5),
            race_max: 30_000,
            race_pool: 400,
            inflight: 256,
            inflight_delay: Duration::from_secs(2),
            append_requests: 100,
            append_batch: 1_000,
            append_threads: 10,
        }
    }

    pub fn quick() -> Sizes {
        Sizes {
            levels: vec![
                Level {
                    clients: 1,
                    max_requests: 20,
                    max_time: Duration::from_secs(2),
                    warmup: 2,
                },
                Level {
                    clients: 16,
                    max_requests: 64,
                    max_time: Duration::from_secs(2),
                    warmup: 1,
                },
                Level {
                    clients: 64,
                    max_requests: 128,
                    max_time: Duration::from_secs(2),
                    warmup: 1,
                },
            ],
            stream_turns: 3,
            stream_warmup: 1,
            stream_delay: Duration::from_millis(5),
            context_tokens: vec![1_000, 10_000, 40_000, 80_000, 160_000],
            context_gets: 5,
            context_first_reads: 3,
            context_turns: 2,
            race_clients: 64,
            race_time: Duration::from_secs(1),
            race_max: 256,
            race_pool: 20,
            inflight: 32,
            inflight_delay: Duration::from_millis(300),
            append_requests: 2,
            append_batch: 1_000,
            append_threads: 2,
        }
    }
}

pub struct Bench {
    pub sizes: Sizes,
    /// Runs the fake upstreams (its worker threads share the 2 cores with everything else).
    pub rt: Runtime,
    pub launcher: Launcher,
    pub report: Report,
    /// `--attach` command for the main service (e.g. a profiler).
    pub attach: Option<String>,
    /// `--only` scenarios; `None` runs all.
    pub only: Option<Vec<String>>,
}

impl Bench {
    pub fn wants(&self, scenario: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|s| s == scenario))
    }

    /// A fake upstream on loopback, lenient (no auth, not strict), pacing generated replies by
    /// `delay` (between stream events, or before a JSON body).
    pub fn fake(&self, delay: Duration) -> Result<FakeUpstream, String> {
        self.rt
            .block_on(FakeUpstream::start(FakeConfig {
                strict: false,
                require_auth: false,
                default_delay: delay,
            }))
            .map_err(|e| format!("cannot start the fake upstream: {e}"))
    }
}

/// Creates `n` threads with `body` over 16 setup clients; returns their ids in order.
pub fn create_threads(
    addr: SocketAddr,
    n: usize,
    body: &'static str,
) -> Result<Vec<String>, String> {
    load::fan_out(addr, 16, n, TIMEOUT, move |client, _| {
        let answer = client.post("/v1/threads", body)?;
        thread_id(&answer)
    })
}

/// The `id` of a 201 Thread answer.
pub fn thread_id(answer: &Answer) -> Result<String, String> {
    if answer.status != 201 {
        return Err(format!(
            "creating a thread answered {}: {}",
            answer.status,
            answer.snippet(300)
        ));
    }
    answer.json()?["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("thread without id: {}", answer.snippet(300)))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A non-streaming turn's answer: 200 with a completed Turn is the success; 409 `thread_busy`
/// is expected only where `busy_expected`.
pub fn turn_outcome(answer: Result<Answer, String>, busy_expected: bool) -> Outcome {
    match answer {
        Ok(a) if a.status == 200 && contains(&a.body, b"\"status\":\"completed\"") => {
            Outcome::Ok(a.elapsed)
        }
        Ok(a) if busy_expected && a.status == 409 && contains(&a.body, b"thread_busy") => {
            Outcome::Busy(a.elapsed)
        }
        Ok(a) => Outcome::Error(format!("turn answered {}: {}", a.status, a.snippet(300))),
        Err(e) => Outcome::Error(e),
    }
}

/// A direct call to the fake: 200 with a body is the success.
pub fn direct_outcome(answer: Result<Answer, String>) -> Outcome {
    match answer {
        Ok(a) if a.status == 200 && !a.body.is_empty() => Outcome::Ok(a.elapsed),
        Ok(a) => Outcome::Error(format!(
            "upstream answered {}: {}",
            a.status,
            a.snippet(300)
        )),
        Err(e) => Outcome::Error(e),
    }
}

/// The request bodies the service sent for each turn of a thread, rebuilt from the thread's
/// `/context` (the body its next turn would send): for the k-th user message, the context cut
/// just after it. These replay, call for call, the shapes and sizes the service sent.
pub fn bodies_from_context(context: &[u8]) -> Result<Vec<Bytes>, String> {
    let value: Value =
        serde_json::from_slice(context).map_err(|e| format!("/context is not JSON: {e}"))?;
    let Value::Object(object) = value else {
        return Err("/context is not an object".into());
    };
    let messages = object
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| "/context has no messages".to_owned())?;
    let mut bodies = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if m.get("role").and_then(Value::as_str) == Some("user") {
            let mut body = object.clone();
            body.insert("messages".into(), Value::Array(messages[..=i].to_vec()));
            bodies.push(Bytes::from(Value::Object(body).to_string()));
        }
    }
    Ok(bodies)
}

/// Direct-call bodies from the contexts of `threads` (a sample of those the service used).
pub fn bodies_from_threads(client: &mut Client, threads: &[String]) -> Result<Vec<Bytes>, String> {
    let mut bodies = Vec::new();
    for id in threads {
        let answer = client.get(&format!("/v1/threads/{id}/context"))?;
        if answer.status != 200 {
            return Err(format!(
                "GET /context answered {}: {}",
                answer.status,
                answer.snippet(300)
            ));
        }
        bodies.extend(bodies_from_context(&answer.body)?);
    }
    if bodies.is_empty() {
        return Err("no direct-call bodies: the sampled threads had no turns".into());
    }
    Ok(bodies)
}

/// Runs `f` while a helper clears the fake's request log every 100 ms: the fake records every
/// request body, which over tens of thousands of turns would grow the bench by gigabytes.
pub fn with_log_clearing<R>(fake: &FakeUpstream, f: impl FnOnce() -> R) -> R {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                fake.reset();
            }
        });
        let result = f();
        stop.store(true, Ordering::Relaxed);
        result
    })
}

pub fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_cut_after_each_user_message() {
        let ctx = br#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"},{"role":"assistant","content":"d"}],"session_id":"x"}"#;
        let bodies = bodies_from_context(ctx).unwrap_or_default();
        assert_eq!(bodies.len(), 2);
        let second: Value = serde_json::from_slice(&bodies[1]).unwrap_or(Value::Null);
        assert_eq!(second["messages"].as_array().map(Vec::len), Some(4));
        assert_eq!(second["session_id"], "x");
    }
}
