//! Upstream faults: what is retried (and how long the service waits), what is not, timeouts
//! before the first byte and mid-body, unreadable and error-carrying 200 answers. Each case
//! checks the answer, the stored turn with its audit record, and that the thread goes on.

use std::time::{Duration, Instant};

use fake_openrouter::recordings::load_fixture;
use fake_openrouter::{Reply, SseEvent};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::streaming::{audit_transcript, chunk};

fn error_json(status: u16, message: &str) -> String {
    format!(r#"{{"error":{{"message":"{message}","code":{status}}}}}"#)
}

/// Checks a failed turn's answer and record; returns the turn with its audit record.
async fn assert_failed_turn(
    app: &App,
    id: &str,
    resp: &Resp,
    (status, code): (u16, &str),
    upstream_status: Option<u16>,
    attempts: usize,
) -> Value {
    let error = resp.expect_error(status, code);
    assert_eq!(
        error.get("upstream_status").and_then(Value::as_u64),
        upstream_status.map(u64::from),
        "{resp:?}"
    );
    let turn_id = error["turn_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no turn_id: {resp:?}"));
    let detail = app.turn_detail(id, turn_id).await;
    let turn = detail.json();
    assert_eq!(turn["status"], "failed", "{turn}");
    assert_eq!(turn["error"]["code"], code, "{turn}");
    assert_eq!(
        turn["error"].get("upstream_status"),
        error.get("upstream_status")
    );
    assert!(turn.get("output_message_id").is_none(), "{turn}");
    assert_timestamp(&turn["completed_at"]);
    let requests = app.fake.requests();
    assert_eq!(requests.len(), attempts, "upstream calls");
    assert_eq!(turn["upstream"]["attempts"], attempts, "{turn}");
    assert!(
        requests.iter().all(|r| r.body == requests[0].body),
        "every attempt sends the same bytes"
    );
    assert_eq!(
        raw_at(&detail.text, &["upstream", "request"]).unwrap(),
        requests[0].body
    );
    let messages = app.messages(id).await;
    assert_eq!(messages.len(), 1, "only the input is stored: {messages:?}");
    turn
}

/// The next turn on the thread (no new input) completes on the stored input.
async fn assert_thread_goes_on(app: &App, id: &str) {
    let turn = app.turn_ok(id, &json!({})).await;
    assert_eq!(turn["input_message_ids"], json!([]));
    assert_eq!(app.messages(id).await.len(), 2);
}

/// A completed turn after retries: attempts counted, the last answer audited.
async fn assert_completed_after(app: &App, id: &str, turn: &Value, attempts: usize) {
    let detail = app.turn_detail(id, &id_of(turn)).await.json();
    assert_eq!(detail["status"], "completed");
    assert_eq!(detail["upstream"]["attempts"], attempts, "{detail}");
    assert_eq!(detail["upstream"]["status"], 200);
    let requests = app.fake.requests();
    assert_eq!(requests.len(), attempts);
    assert!(requests.iter().all(|r| r.body == requests[0].body));
    assert_eq!(requests.last().unwrap().reply_status, 200);
    assert_eq!(app.messages(id).await.len(), 2);
    app.turn_ok(id, &json!({"input": "next"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_500_then_200_is_retried_and_completes_with_two_attempts() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    app.fake
        .push(Reply::raw(500, error_json(500, "Internal Server Error")));
    let turn = app.turn_ok(&id, &json!({"input": "hello"})).await;
    assert_completed_after(&app, &id, &turn, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_closed_without_an_answer_is_retried() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    app.fake.push(Reply::close());
    let turn = app.turn_ok(&id, &json!({"input": "hello"})).await;
    assert_eq!(app.fake.requests()[0].reply_status, 0);
    assert_completed_after(&app, &id, &turn, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_429_with_retry_after_is_waited_out_then_completes() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    app.fake.push(
        Reply::raw(429, error_json(429, "Rate limit exceeded")).with_header("Retry-After", "1"),
    );
    let started = Instant::now();
    let turn = app.turn_ok(&id, &json!({"input": "hello"})).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(950),
        "waited only {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert_completed_after(&app, &id, &turn, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_as_an_http_date_is_honoured() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let when = chrono::Utc::now() + chrono::Duration::seconds(2);
    let date = when.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    app.fake
        .push(Reply::raw(503, error_json(503, "busy")).with_header("Retry-After", date));
    let started = Instant::now();
    let turn = app.turn_ok(&id, &json!({"input": "hello"})).await;
    let waited = started.elapsed();
    // The date has whole seconds: the wait is between one and two seconds.
    assert!(
        waited >= Duration::from_millis(900),
        "waited only {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert_completed_after(&app, &id, &turn, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_upstream_429_answers_rate_limited_with_retry_after() {
    let exchanges = load_fixture("pydantic-ai/test_openrouter_errors_raised.yaml").unwrap();
    assert_eq!(exchanges.len(), 3);
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    for exchange in &exchanges {
        assert_eq!(exchange.status, 429);
        app.fake.push(exchange.reply());
    }
    let resp = app.turn(&id, &json!({"input": "hello"})).await;
    let turn = assert_failed_turn(&app, &id, &resp, (429, "rate_limited"), Some(429), 3).await;
    let retry_after: u64 = resp
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {resp:?}"))
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{resp:?}");
    assert!(
        resp.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rate-limited upstream"),
        "the provider's own reason (metadata.raw) is passed on: {resp:?}"
    );
    assert_eq!(turn["upstream"]["status"], 429);
    assert_thread_goes_on(&app, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_503_three_times_fails_after_three_attempts_with_502() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    for _ in 0..3 {
        app.fake
            .push(Reply::raw(503, error_json(503, "Service Unavailable")));
    }
    let resp = app.turn(&id, &json!({"input": "hello"})).await;
    let turn = assert_failed_turn(&app, &id, &resp, (502, "upstream_error"), Some(503), 3).await;
    assert_eq!(turn["upstream"]["status"], 503);
    assert!(resp.text.contains("Service Unavailable"), "{resp:?}");
    assert_thread_goes_on(&app, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_400_401_402_403_are_not_retried() {
    for status in [400, 401, 402, 403] {
        let app = spawn_app().await;
        let id = app.new_thread_id(&json!({})).await;
        app.fake
            .push(Reply::raw(status, error_json(status, "no you don't")));
        let resp = app.turn(&id, &json!({"input": "hello"})).await;
        let turn =
            assert_failed_turn(&app, &id, &resp, (502, "upstream_error"), Some(status), 1).await;
        assert_eq!(turn["upstream"]["status"], status);
        assert!(resp.text.contains("no you don't"), "{resp:?}");
        assert_thread_goes_on(&app, &id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_before_the_first_byte_times_out_with_504() {
    let app = spawn_app_with(Opts::default().args(&["--upstream-timeout", "2s"])).await;
    let id = app.new_thread_id(&json!({})).await;
    app.fake.push(Reply::hang());
    let started = Instant::now();
    let resp = app.turn(&id, &json!({"input": "anyone?"})).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(8),
        "answered after {took:?}"
    );
    let turn = assert_failed_turn(&app, &id, &resp, (504, "upstream_timeout"), None, 1).await;
    assert!(turn["upstream"].get("response").is_none(), "{turn}");
    assert_eq!(app.fake.requests()[0].reply_status, 0);
    assert_thread_goes_on(&app, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_in_the_middle_of_the_body_times_out_with_504() {
    let app = spawn_app_with(Opts::default().args(&["--upstream-timeout", "2s"])).await;
    let id = app.new_thread_id(&json!({})).await;
    let body = completion_body(
        "m/x-1",
        r#"{"role":"assistant","content":"never finished"}"#,
        "stop",
    );
    app.fake.push(Reply::stall_after(60, body.clone()));
    let started = Instant::now();
    let resp = app.turn(&id, &json!({"input": "go on"})).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "answered after {took:?}");
    let turn = assert_failed_turn(&app, &id, &resp, (504, "upstream_timeout"), None, 1).await;
    assert_eq!(turn["upstream"]["status"], 200, "{turn}");
    // What arrived before the stall is kept in the audit record.
    let response = turn["upstream"]["response"]
        .as_str()
        .unwrap_or_else(|| panic!("partial body not audited: {turn}"));
    assert_eq!(response, &body[..60]);
    assert_thread_goes_on(&app, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_in_the_middle_of_a_stream_fails_the_streamed_turn_with_upstream_timeout() {
    let app = spawn_app_with(Opts::default().args(&["--upstream-timeout", "2s"])).await;
    let id = app.new_thread_id(&json!({})).await;
    let first = chunk(r#"{"role":"assistant","content":"to be"}"#, None);
    let sse = format!(
        "data: {first}\n\ndata: {}\n\ndata: [DONE]\n\n",
        chunk(r#"{"content":" continued"}"#, Some("stop"))
    );
    let cut_at = format!("data: {first}\n\n").len();
    app.fake.push(Reply::stall_after(cut_at, sse.clone()));
    let streamed = app.stream_turn(&id, &json!({"input": "go on"})).await;
    streamed.assert_well_formed();
    assert_eq!(streamed.chunks(), vec![first]);
    let failed = streamed.failed();
    assert_eq!(failed["error"]["code"], "upstream_timeout", "{failed}");
    let turn_id = failed["turn_id"].as_str().unwrap();
    let turn = app.turn_detail(&id, turn_id).await.json();
    assert_eq!(turn["status"], "failed");
    assert_eq!(turn["error"]["code"], "upstream_timeout");
    assert_eq!(
        audit_transcript(&app, &id, turn_id).await,
        sse[..cut_at],
        "the partial transcript is audited"
    );
    assert_eq!(app.messages(&id).await.len(), 1);
    assert_thread_goes_on(&app, &id).await;
}

// A stream whose `[DONE]` arrived is whole: if the connection then stays open and silent
// instead of closing, the turn completes (after a short wait), not failed by the silence limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stalls_after_done_completes_the_turn() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let sse = format!(
        "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
        chunk(r#"{"role":"assistant","content":"all"}"#, None),
        chunk(r#"{"content":" here"}"#, Some("stop"))
    );
    app.fake.push(Reply::stall_after(sse.len(), sse.clone()));
    let started = std::time::Instant::now();
    let streamed = app.stream_turn(&id, &json!({"input": "go"})).await;
    streamed.assert_well_formed();
    let turn = streamed.completed();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "waited {:?}",
        started.elapsed()
    );
    let turn_id = turn["id"].as_str().unwrap();
    assert_eq!(audit_transcript(&app, &id, turn_id).await, sse);
    let messages = app.messages(&id).await;
    assert_eq!(messages[1]["content"], "all here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_that_is_not_json_is_an_upstream_error() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let body = "<html><body>502 Bad Gateway</body></html>";
    app.fake
        .push(Reply::raw(200, body).with_header("content-type", "text/html"));
    let resp = app.turn(&id, &json!({"input": "hello"})).await;
    let turn = assert_failed_turn(&app, &id, &resp, (502, "upstream_error"), Some(200), 1).await;
    assert_eq!(turn["upstream"]["status"], 200);
    assert_eq!(turn["upstream"]["response"], body, "{turn}");
    assert_thread_goes_on(&app, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_object_inside_a_200_body_is_an_upstream_error() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let body = r#"{"error":{"message":"Provider returned error","code":502,"metadata":{"raw":"{\"error\":\"overloaded_error: the model is overloaded\"}","provider_name":"Anthropic"}},"user_id":"user_x"}"#;
    app.fake.push(Reply::raw(200, body).with_padding(2));
    let resp = app.turn(&id, &json!({"input": "hello"})).await;
    let turn = assert_failed_turn(&app, &id, &resp, (502, "upstream_error"), Some(200), 1).await;
    let message = resp.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("Provider returned error"), "{message}");
    assert!(
        message.contains("overloaded"),
        "metadata.raw passed on: {message}"
    );
    let detail = app.turn_detail(&id, &id_of(&turn)).await;
    assert_eq!(
        raw_at(&detail.text, &["upstream", "response"]).unwrap(),
        body
    );
    assert_thread_goes_on(&app, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_reason_error_in_a_200_body_is_an_upstream_error() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let body = completion_body("m/x-1", r#"{"role":"assistant","content":"half"}"#, "error");
    app.fake.push(Reply::raw(200, body));
    let resp = app.turn(&id, &json!({"input": "hello"})).await;
    assert_failed_turn(&app, &id, &resp, (502, "upstream_error"), Some(200), 1).await;
    assert_thread_goes_on(&app, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_request_retries_a_500_before_the_stream_starts() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    app.fake.push(Reply::raw(500, error_json(500, "oops")));
    app.fake.push(Reply::sse_events(vec![
        SseEvent::Data(chunk(r#"{"role":"assistant","content":"second"}"#, None)),
        SseEvent::Data(chunk(r#"{"content":" try"}"#, Some("stop"))),
        SseEvent::Done,
    ]));
    let streamed = app.stream_turn(&id, &json!({"input": "hello"})).await;
    let turn = streamed.completed();
    assert_eq!(streamed.chunks().len(), 2, "only the good attempt's chunks");
    assert_eq!(turn["output"]["content"], "second try");
    assert_completed_after(&app, &id, &turn, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_408_502_504_then_200_complete_on_the_second_attempt() {
    for status in [408, 502, 504] {
        let app = spawn_app().await;
        let id = app.new_thread_id(&json!({})).await;
        app.fake
            .push(Reply::raw(status, error_json(status, "transient")));
        let turn = app.turn_ok(&id, &json!({"input": "hello"})).await;
        assert_eq!(app.fake.requests()[0].reply_status, status);
        assert_completed_after(&app, &id, &turn, 2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_never_goes_silent_still_ends_at_the_total_timeout() {
    let app = spawn_app_with(Opts::default().args(&["--upstream-timeout", "2s"])).await;
    let id = app.new_thread_id(&json!({})).await;
    // A chunk every 300 ms for 4.5 s: never idle, but longer than the whole-answer limit.
    let mut events = vec![SseEvent::Data(chunk(
        r#"{"role":"assistant","content":"."}"#,
        None,
    ))];
    for _ in 0..15 {
        events.push(SseEvent::Delay(Duration::from_millis(300)));
        events.push(SseEvent::Data(chunk(r#"{"content":"."}"#, None)));
    }
    events.push(SseEvent::Data(chunk(r#"{"content":""}"#, Some("stop"))));
    events.push(SseEvent::Done);
    app.fake.push(Reply::sse_events(events));
    let streamed = app
        .stream_turn(&id, &json!({"input": "talk forever"}))
        .await;
    let took = streamed.last().at - streamed.sent_at;
    assert!(took < Duration::from_millis(3500), "ended after {took:?}");
    let failed = streamed.failed();
    assert_eq!(failed["error"]["code"], "upstream_timeout", "{failed}");
    assert!(
        streamed.chunks().len() >= 3,
        "chunks were relayed until then"
    );
    let turn = app
        .turn_detail(&id, failed["turn_id"].as_str().unwrap())
        .await
        .json();
    assert_eq!(turn["status"], "failed");
    assert_eq!(turn["error"]["code"], "upstream_timeout");
    assert_eq!(app.messages(&id).await.len(), 1);
    assert_thread_goes_on(&app, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_whose_retry_after_passes_the_deadline_answers_rate_limited_at_once() {
    let app = spawn_app_with(Opts::default().args(&["--upstream-timeout", "3s"])).await;
    let id = app.new_thread_id(&json!({})).await;
    app.fake.push(
        Reply::raw(429, error_json(429, "Rate limit exceeded")).with_header("Retry-After", "10"),
    );
    let started = Instant::now();
    let resp = app.turn(&id, &json!({"input": "hello"})).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The upstream answered at once: this is its rate limit, not a timeout.
    let turn = assert_failed_turn(&app, &id, &resp, (429, "rate_limited"), Some(429), 1).await;
    let retry_after: u64 = resp
        .header("retry-after")
        .unwrap_or_default()
        .parse()
        .unwrap_or(0);
    assert!(retry_after >= 1, "{resp:?}");
    assert_eq!(turn["upstream"]["status"], 429);
    assert_thread_goes_on(&app, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_429_on_a_streaming_turn_ends_in_turn_failed_rate_limited() {
    let app = spawn_app_with(Opts::default().args(&["--upstream-attempts", "2"])).await;
    let id = app.new_thread_id(&json!({})).await;
    for _ in 0..2 {
        app.fake
            .push(Reply::raw(429, error_json(429, "slow down")).with_header("Retry-After", "0"));
    }
    let streamed = app.stream_turn(&id, &json!({"input": "hello"})).await;
    streamed.assert_well_formed();
    let failed = streamed.failed();
    assert_eq!(failed["error"]["code"], "rate_limited", "{failed}");
    assert_eq!(failed["error"]["upstream_status"], 429, "{failed}");
    let turn = app
        .turn_detail(&id, failed["turn_id"].as_str().unwrap())
        .await
        .json();
    assert_eq!(turn["upstream"]["attempts"], 2);
    assert_eq!(app.fake.requests().len(), 2);
    assert_thread_goes_on(&app, &id).await;
}
