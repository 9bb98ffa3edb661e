//! `POST /api/v1/chat/completions`: decide the answer to one request and record it.
//!
//! The order of checks follows OpenRouter: authentication, then request validation, then (strict
//! mode) the provider's own checks, and only then a scripted or generated reply. Requests rejected
//! by a check do not consume a queued reply, so a script stays aligned with the requests that
//! actually reach "the model".

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;

use crate::generate::Generation;
use crate::render::{respond, Head, Plan, Step, JSON, SSE};
use crate::reply::{Reply, ReplyKind, SseEvent, GENERATED_PADDING, PADDING_UNIT};
use crate::request::{self, ChatRequest};
use crate::server::ConnCtl;
use crate::state::{Inner, Memory, Received, Shared};
use crate::{strict, FakeConfig};

/// OpenRouter's real answer to a request without an API key.
const NO_AUTH: &str = r#"{"error":{"message":"No auth credentials found","code":401}}"#;

pub(crate) async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    conn: Option<Extension<ConnCtl>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers
        .get(AUTHORIZATION)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let plan = decide(&shared, uri.path(), body, authorization);
    respond(plan, conn.map(|Extension(conn)| conn)).await
}

/// Choose the answer and record the request, atomically with respect to other requests.
fn decide(shared: &Shared, path: &str, body: Bytes, authorization: Option<String>) -> Plan {
    let text = std::str::from_utf8(&body);
    let mut inner = shared.lock();
    let plan = match text {
        Ok(text) => answer(&mut inner, &shared.config, text, authorization.as_deref()),
        Err(_) => Plan::json(400, error_body(400, "Request body is not valid UTF-8")),
    };
    inner.requests.push(Received {
        body,
        authorization,
        path: path.to_owned(),
        reply_status: plan.recorded_status(),
    });
    plan
}

fn answer(inner: &mut Inner, config: &FakeConfig, body: &str, authorization: Option<&str>) -> Plan {
    if config.require_auth && !has_bearer_token(authorization) {
        return Plan::json(401, NO_AUTH);
    }
    let request = match request::parse(body) {
        Ok(request) => request,
        Err(message) => return Plan::json(400, error_body(400, &message)),
    };
    if inner.strict {
        if let Err(error) = strict::check(&inner.memory, body) {
            return Plan::json(400, error);
        }
    }
    let reply = inner.queue.pop_front().unwrap_or_else(Reply::generated);
    plan_reply(reply, &request, config, &mut inner.memory)
}

fn has_bearer_token(authorization: Option<&str>) -> bool {
    authorization
        .and_then(|value| value.get(..7).zip(value.get(7..)))
        .is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("bearer ") && !token.trim().is_empty()
        })
}

/// OpenRouter's own (non-provider) error shape.
pub(crate) fn error_body(code: u16, message: &str) -> String {
    format!(
        r#"{{"error":{{"message":"{}","code":{code}}}}}"#,
        crate::generate::escape(message)
    )
}

/// Turn a reply into a plan, remembering what it hands out for strict mode.
fn plan_reply(
    reply: Reply,
    request: &ChatRequest,
    config: &FakeConfig,
    memory: &mut Memory,
) -> Plan {
    let Reply {
        kind,
        delay,
        headers,
        padding,
    } = reply;
    let mut plan = match kind {
        ReplyKind::Raw { status, body } => {
            strict::remember_body(memory, &body);
            padded(
                status,
                body,
                padding.unwrap_or(0),
                delay.unwrap_or_default(),
            )
        }
        ReplyKind::Sse { body } => sse_plan(delay, vec![Step::Bytes(Bytes::from(body))]),
        ReplyKind::SseEvents { events } => {
            sse_plan(delay, events.into_iter().map(event_step).collect())
        }
        ReplyKind::Generated => generated(request, config, memory, delay, padding),
        ReplyKind::Hang => Plan::silent(Head::Hang, delay.unwrap_or_default()),
        ReplyKind::Close => Plan::silent(Head::Close, delay.unwrap_or_default()),
        ReplyKind::StallAfter {
            bytes,
            body,
            status,
        } => {
            let looks_sse = body.trim_start().starts_with("data:") || body.starts_with(':');
            let mut head = body.into_bytes();
            head.truncate(bytes);
            Plan {
                delay: delay.unwrap_or_default(),
                content_type: if looks_sse { SSE } else { JSON },
                steps: vec![Step::Bytes(Bytes::from(head)), Step::Stall],
                ..Plan::json(status, Bytes::new())
            }
        }
    };
    plan.headers = headers;
    plan
}

/// A JSON body behind `units` of padding: the padding leaves with the head at once and the body
/// follows after `delay`; without padding the delay comes before the head.
fn padded(status: u16, body: String, units: usize, delay: Duration) -> Plan {
    if units == 0 {
        return Plan {
            delay,
            ..Plan::json(status, body)
        };
    }
    let mut steps = vec![Step::Bytes(Bytes::from(PADDING_UNIT.repeat(units)))];
    if !delay.is_zero() {
        steps.push(Step::Sleep(delay));
    }
    steps.push(Step::Bytes(Bytes::from(body)));
    Plan {
        steps,
        ..Plan::json(status, Bytes::new())
    }
}

fn sse_plan(delay: Option<Duration>, steps: Vec<Step>) -> Plan {
    Plan {
        delay: delay.unwrap_or_default(),
        content_type: SSE,
        steps,
        ..Plan::json(200, Bytes::new())
    }
}

fn event_step(event: SseEvent) -> Step {
    match event {
        SseEvent::Data(data) => Step::Bytes(Bytes::from(format!("data: {data}\n\n"))),
        SseEvent::Comment(comment) => Step::Bytes(Bytes::from(format!(": {comment}\n\n"))),
        SseEvent::Done => Step::Bytes(Bytes::from_static(b"data: [DONE]\n\n")),
        SseEvent::Delay(duration) => Step::Sleep(duration),
        SseEvent::Cut => Step::Cut,
    }
}

/// The generated completion. A scripted delay applies before the head (stream) or after the
/// padding (JSON); `default_delay` separates stream events, or precedes an unscripted JSON body.
fn generated(
    request: &ChatRequest,
    config: &FakeConfig,
    memory: &mut Memory,
    delay: Option<Duration>,
    padding: Option<usize>,
) -> Plan {
    let generation = Generation::new(request);
    if !request.stream {
        let body = generation.completion_body();
        strict::remember_body(memory, &body);
        let units = padding.unwrap_or(GENERATED_PADDING);
        return padded(200, body, units, delay.unwrap_or(config.default_delay));
    }
    if let Some(merged) = generation.merged_reasoning_details() {
        memory.reasoning_details.insert(merged);
        if let Some(call) = &generation.tool_call {
            memory.reasoning_tool_calls.insert(call.id.clone());
        }
    }
    let mut steps = Vec::new();
    for (index, event) in generation.stream_events().into_iter().enumerate() {
        if index > 0 && !config.default_delay.is_zero() {
            steps.push(Step::Sleep(config.default_delay));
        }
        steps.push(Step::Bytes(Bytes::from(event)));
    }
    sse_plan(delay, steps)
}
