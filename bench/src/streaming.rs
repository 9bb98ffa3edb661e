//! Scenario 2: streaming turns against a paced upstream. Time to the first relayed chunk and
//! the gaps between chunks, next to the same streams read from the fake directly.

use bytes::Bytes;
use fake_openrouter::FakeUpstream;
use serde_json::json;

use crate::client::{Client, Dialect, StreamAnswer};
use crate::common::{create_threads, Bench, TIMEOUT, UPSTREAM_PATH};
use crate::service::Service;
use crate::stats::Hist;

/// Turns per thread here (streams are few; keep contexts short).
const STREAM_TURNS_PER_THREAD: usize = 10;

#[derive(Default)]
struct Side {
    ttfb: Hist,
    gap: Hist,
    total: Hist,
    chunks: u64,
    streams: u64,
    errors: u64,
    samples: Vec<String>,
}

impl Side {
    /// Records a stream; returns how many chunks it carried, when it was whole.
    fn take(
        &mut self,
        answer: Result<StreamAnswer, String>,
        measured: bool,
        what: &str,
    ) -> Option<usize> {
        let answer = match answer {
            Ok(a)
                if a.status == 200
                    && a.completed
                    && a.failure.is_none()
                    && !a.chunk_times.is_empty() =>
            {
                a
            }
            Ok(a) => {
                self.error(format!(
                    "{what}: status {}, completed {}, {} chunks, failure {:?}",
                    a.status,
                    a.completed,
                    a.chunk_times.len(),
                    a.failure
                        .as_deref()
                        .map(|f| f.chars().take(300).collect::<String>())
                ));
                return None;
            }
            Err(e) => {
                self.error(format!("{what}: {e}"));
                return None;
            }
        };
        if !measured {
            return Some(answer.chunk_times.len());
        }
        self.ttfb.record(answer.chunk_times[0]);
        for pair in answer.chunk_times.windows(2) {
            self.gap.record(pair[1].saturating_sub(pair[0]));
        }
        self.total.record(answer.elapsed);
        self.chunks += answer.chunk_times.len() as u64;
        self.streams += 1;
        Some(answer.chunk_times.len())
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.samples.len() < 8 {
            self.samples.push(e);
        }
    }

    fn chunks_per_stream(&self) -> f64 {
        self.chunks as f64 / self.streams.max(1) as f64
    }
}

pub fn streaming(b: &mut Bench, svc: &mut Service, fake: &FakeUpstream) -> Result<(), String> {
    let n = b.sizes.stream_turns;
    let warm = b.sizes.stream_warmup;
    let delay = b.sizes.stream_delay;
    eprintln!("[bench] 2 streaming: {n} turns, upstream paced at {delay:?} between events ...");
    let threads = create_threads(
        svc.addr,
        (n + warm).div_ceil(STREAM_TURNS_PER_THREAD),
        r#"{"metadata":{"bench":"streaming"}}"#,
    )?;
    fake.reset();

    // Service and direct streams alternate, one of each per round, so that both see the same
    // background (timer jitter, other work on the machine) rather than two different minutes.
    let mut service = Side::default();
    let mut direct = Side::default();
    let mut client = Client::new(svc.addr, TIMEOUT)?;
    let mut upstream = Client::new(fake.addr(), TIMEOUT)?;
    let mut sent = 0usize;
    // Every upstream chunk is relayed once: each service stream must carry as many chunks as
    // the same request's direct replay.
    let mut unequal = Vec::new();
    for i in 0..warm + n {
        let id = &threads[i / STREAM_TURNS_PER_THREAD];
        let body = format!(
            r#"{{"input":"Streaming question {i}: walk me through it step by step.","stream":true}}"#
        );
        let answer = client.stream(&format!("/v1/threads/{id}/turns"), body, Dialect::Service);
        let relayed = service.take(answer, i >= warm, "streaming turn");
        // The exact body the service just sent upstream, replayed directly.
        let recorded = fake.requests();
        fake.reset();
        sent += recorded.len();
        if let Some(request) = recorded.into_iter().last() {
            let answer =
                upstream.stream(UPSTREAM_PATH, Bytes::from(request.body), Dialect::Upstream);
            let replayed = direct.take(answer, i >= warm, "direct stream");
            if let (Some(relayed), Some(replayed)) = (relayed, replayed) {
                if relayed != replayed {
                    unequal.push(format!(
                        "2 streaming: stream {i} relayed {relayed} chunks, its direct replay \
                         carried {replayed}"
                    ));
                }
            }
        }
        fake.reset();
    }
    svc.check_alive()?;

    let r = &mut b.report;
    let s = "2 streaming";
    let q = |h: &Hist, q: f64| h.ms(q).unwrap_or(0.0);
    r.pair(
        s,
        "TTFB p50",
        "ms",
        q(&service.ttfb, 0.5),
        q(&direct.ttfb, 0.5),
    );
    r.pair(
        s,
        "TTFB p99",
        "ms",
        q(&service.ttfb, 0.99),
        q(&direct.ttfb, 0.99),
    );
    r.pair(
        s,
        "chunk gap p50",
        "ms",
        q(&service.gap, 0.5),
        q(&direct.gap, 0.5),
    );
    r.pair(
        s,
        "chunk gap p99",
        "ms",
        q(&service.gap, 0.99),
        q(&direct.gap, 0.99),
    );
    r.pair(
        s,
        "stream total p50",
        "ms",
        q(&service.total, 0.5),
        q(&direct.total, 0.5),
    );
    r.pair(
        s,
        "chunks per stream",
        "count",
        service.chunks_per_stream(),
        direct.chunks_per_stream(),
    );
    r.error(s, service.errors, &service.samples);
    r.error("2 streaming direct", direct.errors, &direct.samples);
    r.errors.extend(unequal);
    if sent != warm + n {
        r.errors.push(format!(
            "2 streaming: the fake saw {sent} requests for {} streaming turns",
            warm + n
        ));
    }
    r.detail(
        s,
        json!({
            "turns": n, "warmup": warm, "event_delay_ms": delay.as_secs_f64() * 1e3,
            "service": {"streams": service.streams, "chunks": service.chunks, "ttfb": service.ttfb.summary(),
                        "gap": service.gap.summary(), "total": service.total.summary()},
            "direct": {"streams": direct.streams, "chunks": direct.chunks, "ttfb": direct.ttfb.summary(),
                       "gap": direct.gap.summary(), "total": direct.total.summary()},
        }),
    );
    Ok(())
}
