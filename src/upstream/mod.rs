//! The OpenRouter client: one reqwest client built at start-up (connection pool, TCP_NODELAY,
//! connect timeout), the secret key, retries with backoff and jitter, and the deadlines
//! that fit reasoning models. It records what it sent and received for the audit trail.

mod retry;
pub mod sse;
pub mod stream;
pub mod wire;

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use secrecy::ExposeSecret;
use tokio::time::{timeout_at, Instant};

use crate::config::{Config, UpstreamTimeouts};
use crate::domain::ids;
use crate::domain::records::AuditRecord;
use crate::error::{TurnFailure, TurnFailureKind};
use crate::telemetry::metrics as m;
pub use wire::Completion;

/// One upstream call, retries included: what was sent and received, and how it ended.
#[derive(Debug)]
pub struct Exchange {
    pub audit: AuditRecord,
    pub result: Result<Completion, TurnFailure>,
}

#[derive(Clone)]
pub struct UpstreamClient {
    http: reqwest::Client,
    /// The chat completions URL, parsed once.
    endpoint: reqwest::Url,
    /// `Bearer <key>`, built once and marked sensitive (never shown by `Debug`); `None`
    /// without a key.
    authorization: Option<HeaderValue>,
    timeouts: UpstreamTimeouts,
    attempts: u32,
}

/// OpenRouter's header naming the calling application.
const X_TITLE: HeaderName = HeaderName::from_static("x-title");

/// Where a streaming turn's chunks go as they arrive: each upstream chunk's JSON exactly as
/// received. Sends never block the upstream read; a receiver that is gone (the client left)
/// is ignored and the stream is still read to its end.
pub type ChunkSink = tokio::sync::mpsc::UnboundedSender<String>;

enum Attempt {
    /// A reply was read to its end (any status).
    Answered {
        status: u16,
        body: Vec<u8>,
        retry_after: Option<Duration>,
    },
    /// A 2xx event stream, read to its end (or until it was cut).
    Streamed {
        status: u16,
        transcript: Vec<u8>,
        result: Box<Result<Completion, TurnFailure>>,
    },
    /// No reply byte: refused, reset, DNS... (retryable).
    Unreachable(String),
    TimedOut {
        partial: Vec<u8>,
        status: Option<u16>,
    },
    /// The connection broke while the body was read.
    Broken {
        status: u16,
        partial: Vec<u8>,
        reason: String,
    },
}

impl Attempt {
    /// The attempt's outcome as a metrics label.
    fn outcome(&self) -> &'static str {
        match self {
            Attempt::Answered { status, .. } | Attempt::Streamed { status, .. } => match status {
                200..=299 => "ok",
                429 => "http_429",
                400..=499 => "http_4xx",
                _ => "http_5xx",
            },
            Attempt::Unreachable(_) => "connect_error",
            Attempt::TimedOut { .. } => "timeout",
            Attempt::Broken { .. } => "broken",
        }
    }
}

/// A request body shared between the audit record and the bytes sent (`Bytes::from_owner`).
struct SharedBody(std::sync::Arc<str>);

impl AsRef<[u8]> for SharedBody {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl UpstreamClient {
    pub fn new(config: &Config) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.upstream.connect)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("threadkeeper/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        // Checked again here (the configuration already refused a bad one) so that a turn can
        // never be the first to find out.
        let endpoint = format!("{}/chat/completions", config.upstream_url);
        let endpoint =
            reqwest::Url::parse(&endpoint).map_err(|e| format!("--upstream-url: {e}"))?;
        let authorization = config
            .api_key
            .as_ref()
            .map(|key| {
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {}", key.expose_secret().trim()))
                        .map_err(|_| {
                            "OPENROUTER_API_KEY holds a character an HTTP header cannot carry \
                             (a line break or a control character, say)"
                                .to_owned()
                        })?;
                value.set_sensitive(true);
                Ok::<_, String>(value)
            })
            .transpose()?;
        Ok(Self {
            http,
            endpoint,
            authorization,
            timeouts: config.upstream,
            attempts: config.upstream_attempts,
        })
    }

    pub fn is_configured(&self) -> bool {
        self.authorization.is_some()
    }

    /// Sends `body` (the exact bytes that are recorded), retrying what may be retried. With
    /// a `sink`, a 2xx event stream is relayed chunk by chunk while it is accumulated.
    pub async fn complete(&self, body: String, sink: Option<&ChunkSink>) -> Exchange {
        let started_at = ids::now();
        let started = Instant::now();
        let deadline = Instant::now() + self.timeouts.total;
        let request: std::sync::Arc<str> = body.into();
        let mut audit = AuditRecord {
            request: Some(request.clone()),
            started_at: Some(started_at),
            ..Default::default()
        };
        let body = bytes::Bytes::from_owner(SharedBody(request));
        let mut attempt_no = 0;
        let result = loop {
            attempt_no += 1;
            audit.attempts = i64::from(attempt_no);
            let attempt = self.attempt(body.clone(), deadline, sink).await;
            metrics::counter!(m::UPSTREAM_ATTEMPTS, "outcome" => attempt.outcome()).increment(1);
            let last = attempt_no >= self.attempts;
            match attempt {
                Attempt::Answered {
                    status,
                    body,
                    retry_after,
                } => {
                    record_response(&mut audit, Some(status), &body);
                    // Another attempt only if the wait fits before the deadline; otherwise
                    // this answer is the result (a 429 stays a 429, with its Retry-After).
                    if retry::retryable_status(status)
                        && !last
                        && retry::pause(attempt_no, retry_after, deadline).await
                    {
                        continue;
                    }
                    break classify(status, &body, retry_after);
                }
                Attempt::Streamed {
                    status,
                    transcript,
                    result,
                } => {
                    record_response(&mut audit, Some(status), &transcript);
                    break *result;
                }
                Attempt::Unreachable(reason) => {
                    if !last && retry::pause(attempt_no, None, deadline).await {
                        continue;
                    }
                    break Err(failure(
                        TurnFailureKind::Upstream,
                        format!("could not reach the upstream: {reason}"),
                        None,
                    ));
                }
                Attempt::TimedOut { partial, status } => {
                    if status.is_some() || !partial.is_empty() {
                        record_response(&mut audit, status, &partial);
                    }
                    break Err(self.timeout_failure());
                }
                Attempt::Broken {
                    status,
                    partial,
                    reason,
                } => {
                    record_response(&mut audit, Some(status), &partial);
                    break Err(failure(
                        TurnFailureKind::Upstream,
                        format!("the upstream connection broke mid-answer: {reason}"),
                        Some(status),
                    ));
                }
            }
        };
        audit.finished_at = Some(ids::now());
        let outcome = match &result {
            Ok(_) => "completed",
            Err(f) if f.kind == TurnFailureKind::Timeout => "timeout",
            Err(f) if f.kind == TurnFailureKind::RateLimited => "rate_limited",
            Err(_) => "failed",
        };
        metrics::histogram!(m::UPSTREAM_DURATION, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        Exchange { audit, result }
    }

    async fn attempt(
        &self,
        body: bytes::Bytes,
        deadline: Instant,
        sink: Option<&ChunkSink>,
    ) -> Attempt {
        let mut request = self
            .http
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(X_TITLE, HeaderValue::from_static("threadkeeper"))
            .body(body);
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let head_deadline = deadline.min(Instant::now() + self.timeouts.first_byte);
        let mut response = match timeout_at(head_deadline, request.send()).await {
            Err(_) => {
                return Attempt::TimedOut {
                    partial: Vec::new(),
                    status: None,
                }
            }
            Ok(Err(e)) => return Attempt::Unreachable(describe(&e)),
            Ok(Ok(r)) => r,
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry::parse_retry_after);
        let is_event_stream = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_event_stream_type);
        if let (Some(sink), true, true) = (sink, is_event_stream, (200..300).contains(&status)) {
            return self.read_stream(response, status, deadline, sink).await;
        }
        let mut body = Vec::new();
        loop {
            let next_read = deadline.min(Instant::now() + self.timeouts.idle);
            match timeout_at(next_read, response.chunk()).await {
                Err(_) => {
                    return Attempt::TimedOut {
                        partial: body,
                        status: Some(status),
                    }
                }
                Ok(Err(e)) => {
                    return Attempt::Broken {
                        status,
                        partial: body,
                        reason: describe(&e),
                    }
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
            }
        }
        Attempt::Answered {
            status,
            body,
            retry_after,
        }
    }

    /// Reads an event stream to its end, relaying each chunk and keeping the transcript.
    async fn read_stream(
        &self,
        mut response: reqwest::Response,
        status: u16,
        deadline: Instant,
        sink: &ChunkSink,
    ) -> Attempt {
        let mut transcript = Vec::new();
        let mut parser = sse::SseParser::new();
        let mut acc = stream::StreamAccumulator::new();
        let mut unreadable: Option<String> = None;
        let mut done = false;
        let ended = loop {
            let next_read = match done {
                // The reply is whole: the end of the body is waited for briefly (the
                // connection can then be used again), not for the silence limit.
                true => deadline.min(Instant::now() + AFTER_DONE),
                false => deadline.min(Instant::now() + self.timeouts.idle),
            };
            match timeout_at(next_read, response.chunk()).await {
                // After `[DONE]` a connection that goes silent or breaks instead of closing
                // does not undo the reply.
                Err(_) | Ok(Err(_)) if done => break Ok(()),
                Err(_) => break Err(self.timeout_failure()),
                Ok(Err(e)) => {
                    break Err(failure(
                        TurnFailureKind::Upstream,
                        format!("the upstream stream was cut: {}", describe(&e)),
                        Some(status),
                    ))
                }
                Ok(Ok(None)) => break Ok(()),
                Ok(Ok(Some(bytes))) => {
                    transcript.extend_from_slice(&bytes);
                    for item in parser.push(&bytes) {
                        let sse::SseItem::Data(data) = item else {
                            continue;
                        };
                        if data.trim() == "[DONE]" {
                            done = true;
                            continue;
                        }
                        if let Err(e) = acc.push(&data) {
                            unreadable.get_or_insert(e);
                        }
                        // The client may be gone; the stream is still read to its end.
                        let _ = sink.send(data);
                    }
                }
            }
        };
        let result = ended.and_then(|()| {
            if let Some(reason) = unreadable {
                return Err(failure(TurnFailureKind::Upstream, reason, Some(status)));
            }
            if let Some(error) = acc.error() {
                return Err(failure(
                    TurnFailureKind::Upstream,
                    error.to_owned(),
                    Some(status),
                ));
            }
            if !done && (parser.has_partial_event() || acc.finish_reason().is_none()) {
                return Err(failure(
                    TurnFailureKind::Upstream,
                    "the upstream stream ended before the model finished".into(),
                    Some(status),
                ));
            }
            Ok(acc.finish())
        });
        Attempt::Streamed {
            status,
            transcript,
            result: Box::new(result),
        }
    }

    fn timeout_failure(&self) -> TurnFailure {
        failure(
            TurnFailureKind::Timeout,
            format!(
                "the upstream did not answer in time (response head within {}s, no silence over {}s, whole answer within {}s)",
                self.timeouts.first_byte.as_secs(),
                self.timeouts.idle.as_secs(),
                self.timeouts.total.as_secs()
            ),
            None,
        )
    }
}

/// reqwest's error text names the URL (never the key) and the cause.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// How long the end of a stream's body is waited for once `[DONE]` has arrived.
const AFTER_DONE: Duration = Duration::from_secs(1);

fn record_response(audit: &mut AuditRecord, status: Option<u16>, body: &[u8]) {
    audit.status = status.map(i64::from);
    audit.response_is_json = serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok();
    audit.response = Some(String::from_utf8_lossy(body).into_owned());
}

fn failure(kind: TurnFailureKind, message: String, upstream_status: Option<u16>) -> TurnFailure {
    TurnFailure {
        kind,
        message,
        upstream_status,
        turn_id: None,
        retry_after: None,
    }
}

fn classify(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Result<Completion, TurnFailure> {
    if (200..300).contains(&status) {
        return wire::parse_completion(body)
            .map_err(|m| failure(TurnFailureKind::Upstream, m, Some(status)));
    }
    let message = wire::error_message(status, body);
    if status == 429 {
        return Err(TurnFailure {
            retry_after: Some(retry_after.unwrap_or(Duration::from_secs(1))),
            ..failure(TurnFailureKind::RateLimited, message, Some(status))
        });
    }
    if status == 408 || status == 504 {
        return Err(failure(TurnFailureKind::Timeout, message, Some(status)));
    }
    Err(failure(TurnFailureKind::Upstream, message, Some(status)))
}

/// Whether a `Content-Type` is `text/event-stream` (media types are case-insensitive; a
/// parameter such as `; charset=utf-8` may follow).
fn is_event_stream_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("text/event-stream")
}

#[cfg(test)]
mod tests {
    use super::is_event_stream_type;

    #[test]
    fn an_event_stream_is_recognised_in_any_case_and_with_parameters() {
        for yes in [
            "text/event-stream",
            "Text/Event-Stream",
            "TEXT/EVENT-STREAM; charset=utf-8",
            " text/event-stream ;charset=UTF-8",
        ] {
            assert!(is_event_stream_type(yes), "{yes}");
        }
        for no in [
            "application/json",
            "text/event-streams",
            "text/plain; x=text/event-stream",
            "",
        ] {
            assert!(!is_event_stream_type(no), "{no}");
        }
    }
}
