//! Prometheus metrics: the recorder, `GET /metrics`, and the names every part records under.
//!
//! Labels stay low-cardinality: HTTP routes are templates (`/v1/threads/{thread_id}`), never
//! raw paths, and no id is ever a label value.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "threadkeeper_http_requests_total";
pub const HTTP_DURATION: &str = "threadkeeper_http_request_duration_seconds";
pub const TURNS: &str = "threadkeeper_turns_total";
pub const TURNS_IN_PROGRESS: &str = "threadkeeper_turns_in_progress";
pub const UPSTREAM_DURATION: &str = "threadkeeper_upstream_request_duration_seconds";
pub const UPSTREAM_ATTEMPTS: &str = "threadkeeper_upstream_attempts_total";
pub const TOKENS: &str = "threadkeeper_tokens_total";
pub const COST: &str = "threadkeeper_cost_total";
pub const CONTEXT_READS: &str = "threadkeeper_context_reads_total";
pub const WRITE_BATCH: &str = "threadkeeper_write_batch_size";

/// Writes per group-commit transaction.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Seconds, from sub-millisecond service work to multi-minute reasoning calls.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
    300.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; later calls reuse it.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(WRITE_BATCH.into()), &BATCH_BUCKETS)
                })
                .and_then(|b| b.install_recorder());
            match recorder {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics are disabled");
                    None
                }
            }
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template and status"
    );
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP request duration");
    describe_counter!(
        TURNS,
        "Turns ended, by status (completed, failed, interrupted: taken over after its lease lapsed)"
    );
    describe_gauge!(TURNS_IN_PROGRESS, "Turns running in this process");
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Upstream calls (retries included), by outcome"
    );
    describe_counter!(UPSTREAM_ATTEMPTS, "Upstream attempts, by outcome");
    describe_counter!(
        TOKENS,
        "Tokens reported by the upstream, by kind (prompt, completion, reasoning)"
    );
    describe_gauge!(
        COST,
        "Cost reported by the upstream (OpenRouter credits), cumulative"
    );
    describe_counter!(
        CONTEXT_READS,
        "Thread contexts built, by source: cache (no read), delta (only new messages read), \
         database (the whole thread read)"
    );
    describe_histogram!(
        WRITE_BATCH,
        Unit::Count,
        "Writes committed together in one group-commit transaction"
    );
}

/// The `method` label: one of the standard methods, or `other`. A client may send any token
/// as its method, and each distinct label value is a series kept for the process's life.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Records every routed request under its route template.
pub async fn track_http(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // Health checks and scrapes are not activity: they would keep an idle service from
    // giving memory back, or make it do so after every probe.
    if route.starts_with("/v1/") {
        crate::memory::note_request();
    }
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`: Prometheus text format.
pub async fn render() -> Response {
    let body = install().map(|h| h.render()).unwrap_or_default();
    Response::builder()
        .header(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )
        .body(axum::body::Body::from(body))
        .unwrap_or_default()
}
