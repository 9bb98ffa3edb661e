//! Streaming turns (`"stream": true`): chunks relayed as they arrive and verbatim, the SSE
//! transcript audited byte for byte, keep-alives, requests refused before anything is
//! stored, and a client that leaves before the end. Shared stream builders live here.

use std::time::Duration;

use fake_openrouter::{Reply, SseEvent};
use serde_json::json;

use crate::helpers::*;
use crate::sse_client::{read_events_until, read_stream};

/// A chunk in OpenRouter's shape with this `delta` and `finish_reason`.
pub fn chunk(delta: &str, finish: Option<&str>) -> String {
    let finish = finish.map_or_else(|| "null".to_owned(), |f| format!("\"{f}\""));
    format!(
        r#"{{"id":"gen-stream-1","object":"chat.completion.chunk","created":1700000000,"model":"test/streamer-20250101","provider":"Syn","choices":[{{"index":0,"delta":{delta},"finish_reason":{finish},"native_finish_reason":{finish}}}]}}"#
    )
}

/// A usage chunk that also carries a choice with `finish_reason: null` (as Anthropic's
/// streams end): it must not erase the finish reason that came before.
pub fn usage_chunk() -> String {
    r#"{"id":"gen-stream-1","object":"chat.completion.chunk","created":1700000000,"model":"test/streamer-20250101","provider":"Syn","choices":[{"index":0,"delta":{"content":""},"finish_reason":null,"native_finish_reason":null}],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18,"cost":0.00012,"completion_tokens_details":{"reasoning_tokens":3}}}"#.to_owned()
}

/// The bytes the fake writes for these events.
pub fn sse_text(events: &[SseEvent]) -> String {
    events
        .iter()
        .map(|event| match event {
            SseEvent::Data(data) => format!("data: {data}\n\n"),
            SseEvent::Comment(text) => format!(": {text}\n\n"),
            SseEvent::Done => "data: [DONE]\n\n".to_owned(),
            SseEvent::Delay(_) | SseEvent::Cut => String::new(),
        })
        .collect()
}

/// The `data` of every event in an SSE text, `[DONE]` excluded.
pub fn data_of(sse: &str) -> Vec<String> {
    sse.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .filter(|d| d.trim() != "[DONE]")
        .collect()
}

/// The audit record's `upstream.response` of a turn, decoded from its JSON string.
pub async fn audit_transcript(api: &Api, thread_id: &str, turn_id: &str) -> String {
    let detail = api.turn_detail(thread_id, turn_id).await;
    let raw = raw_at(&detail.text, &["upstream", "response"])
        .unwrap_or_else(|| panic!("no upstream.response: {}", detail.text));
    serde_json::from_str(&raw)
        .unwrap_or_else(|e| panic!("upstream.response of a stream is not a string ({e}): {raw}"))
}

/// The exact fields of one stored message.
pub async fn stored_message(api: &Api, thread_id: &str, message_id: &str) -> Resp {
    let resp = api
        .get(&format!("/v1/threads/{thread_id}/messages/{message_id}"))
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    resp
}

fn text_reply(pieces: &[&str]) -> Vec<SseEvent> {
    let mut events = vec![SseEvent::Data(chunk(
        r#"{"role":"assistant","content":""}"#,
        None,
    ))];
    for piece in pieces {
        events.push(SseEvent::Data(chunk(
            &format!(r#"{{"content":"{piece}"}}"#),
            None,
        )));
    }
    events.push(SseEvent::Data(chunk(r#"{"content":""}"#, Some("stop"))));
    events.push(SseEvent::Data(usage_chunk()));
    events.push(SseEvent::Done);
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_chunks_reach_the_client_as_the_upstream_sends_them() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let gap = Duration::from_millis(700);
    let c1 = chunk(r#"{"role":"assistant","content":"one"}"#, None);
    let c2 = chunk(r#"{"content":" two"}"#, None);
    let c3 = chunk(r#"{"content":" three"}"#, Some("stop"));
    app.fake.push(Reply::sse_events(vec![
        SseEvent::Data(c1.clone()),
        SseEvent::Delay(gap),
        SseEvent::Data(c2.clone()),
        SseEvent::Delay(gap),
        SseEvent::Data(c3.clone()),
        SseEvent::Done,
    ]));
    let streamed = app.stream_turn(&id, &json!({"input": "count"})).await;
    streamed.completed();
    streamed.assert_well_formed();
    assert_eq!(streamed.chunks(), vec![c1, c2, c3]);
    let chunks: Vec<_> = streamed
        .events
        .iter()
        .filter(|e| e.event == "chunk")
        .collect();
    let first = chunks[0].at - streamed.sent_at;
    let spread = chunks[2].at - chunks[0].at;
    // The last chunk is sent 1.4 s after the first: a relay shows that spread, a buffer not.
    assert!(
        first < Duration::from_millis(900),
        "first chunk after {first:?}"
    );
    assert!(
        spread >= Duration::from_millis(1200),
        "chunks arrived within {spread:?}: buffered, not relayed"
    );
    let second = chunks[1].at - chunks[0].at;
    assert!(second >= Duration::from_millis(550), "{second:?}");
    // turn.started came before the upstream's first chunk could have been waited for.
    assert!(streamed.events[0].at <= chunks[0].at);
    let messages = app.messages(&id).await;
    assert_eq!(messages[1]["content"], "one two three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_turn_relays_chunks_verbatim_drops_upstream_comments_and_audits_the_transcript() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({"model": "test/streamer"})).await;
    // Escapes, raw non-ASCII and odd spacing inside chunks must be relayed untouched.
    let c1 = chunk(
        r#"{"role":"assistant","content":"caf\u00e9 \"q\"", "reasoning":null}"#,
        None,
    );
    let c2 = chunk(r#"{"content":" — d\u00e9j\u00e0\n"}"#, None);
    let events = vec![
        SseEvent::Comment("OPENROUTER PROCESSING".into()),
        SseEvent::Comment("OPENROUTER PROCESSING".into()),
        SseEvent::Data(c1.clone()),
        SseEvent::Delay(Duration::from_millis(50)),
        SseEvent::Comment("OPENROUTER PROCESSING".into()),
        SseEvent::Data(c2.clone()),
        SseEvent::Comment("OPENROUTER PROCESSING".into()),
        SseEvent::Data(chunk(r#"{"content":""}"#, Some("stop"))),
        SseEvent::Data(usage_chunk()),
        SseEvent::Done,
    ];
    app.fake.push(Reply::sse_events(events.clone()));
    let streamed = app.stream_turn(&id, &json!({"input": "talk"})).await;
    let turn = streamed.completed();
    streamed.assert_well_formed();
    assert_eq!(
        streamed.chunks(),
        data_of(&sse_text(&events)),
        "chunk data as received"
    );
    assert!(
        streamed.comments.is_empty(),
        "upstream comments relayed: {:?}",
        streamed.comments
    );
    assert!(!streamed.text.contains("OPENROUTER"), "{}", streamed.text);
    assert!(!streamed.text.contains("[DONE]"), "{}", streamed.text);
    assert!(streamed
        .headers
        .get("cache-control")
        .is_some_and(|v| v.to_str().unwrap_or_default().contains("no-cache")));

    // turn.started names the turn and its stored input.
    let started = streamed.started();
    let turn_id = id_of(&turn);
    assert_eq!(started["turn_id"], turn_id.as_str());
    let messages = app.messages(&id).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(started["input_message_ids"], json!([messages[0]["id"]]));
    assert_eq!(turn["input_message_ids"], started["input_message_ids"]);

    // The request went upstream with stream:true; the audit keeps the exact transcript.
    let requests = app.fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].json()["stream"], true);
    assert_eq!(
        audit_transcript(&app, &id, &turn_id).await,
        sse_text(&events)
    );
    let detail = app.turn_detail(&id, &turn_id).await;
    assert_eq!(
        raw_at(&detail.text, &["upstream", "request"]).unwrap(),
        requests[0].body
    );
    let audit = detail.json()["upstream"].clone();
    assert_eq!(audit["status"], 200);
    assert_eq!(audit["attempts"], 1);

    // The stored message is built from the raw string bytes, escapes as streamed.
    let output_id = turn["output_message_id"].as_str().unwrap().to_owned();
    let stored = raw_fields(&stored_message(&app, &id, &output_id).await.text);
    assert_eq!(stored["content"], r#""caf\u00e9 \"q\" — d\u00e9j\u00e0\n""#);
    assert_eq!(stored["finish_reason"], r#""stop""#, "usage chunk kept it");
    assert_eq!(stored["generation_id"], r#""gen-stream-1""#);
    assert_eq!(stored["model"], r#""test/streamer-20250101""#);
    assert!(!stored.contains_key("reasoning_details"), "{stored:?}");
    assert_eq!(turn["usage"]["completion_tokens"], 7);
    assert_eq!(app.thread(&id).await["usage"]["prompt_tokens"], 11);

    // turn.completed carries the Turn as the non-streaming answer and the list show it.
    let listed = app.turns(&id).await;
    assert_eq!(listed[0], turn);
    let detail_json = detail.json();
    assert_eq!(detail_json["output"], turn["output"]);

    // The thread goes on, non-streaming, with the streamed reply in its context.
    app.turn_ok(&id, &json!({"input": "again"})).await;
    let sent = sent_messages(&app.fake.requests()[1].body);
    assert_eq!(
        raw_fields(&sent[1])["content"],
        stored["content"],
        "the streamed content goes back as stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_stream_does_not_stop_the_turn() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let pieces = ["Alpha", " beta", " gamma", " delta", " epsilon"];
    let mut events = Vec::new();
    for event in text_reply(&pieces) {
        events.push(event);
        events.push(SseEvent::Delay(Duration::from_millis(150)));
    }
    app.fake.push(Reply::sse_events(events.clone()));
    let (mut response, _) = app
        .open_stream(&id, r#"{"input":"tell me","stream":true}"#, &[])
        .await;
    assert_eq!(response.status(), 200);
    let seen = read_events_until(&mut response, |events| {
        events.iter().filter(|e| e.event == "chunk").count() >= 1
    })
    .await;
    assert_eq!(seen[0].event, "turn.started");
    let turn_id = seen[0].json()["turn_id"].as_str().unwrap().to_owned();
    drop(response);

    let settled = wait_until_settled(&app, &id, &turn_id).await;
    let turn = settled.json();
    assert_eq!(turn["status"], "completed", "{turn}");
    assert_eq!(turn["output"]["content"], pieces.concat());
    assert_eq!(
        audit_transcript(&app, &id, &turn_id).await,
        sse_text(&events),
        "the upstream was read to its end"
    );
    let messages = app.messages(&id).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1], turn["output"]);
    app.turn_ok(&id, &json!({"input": "next"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_requests_refused_before_the_input_is_stored_get_json_errors() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let missing = "0190aaaa-0000-7000-8000-000000000000";
    let cases: Vec<(String, String, u16, &str)> = vec![
        (
            missing.into(),
            r#"{"input":"x","stream":true}"#.into(),
            404,
            "not_found",
        ),
        (
            id.clone(),
            r#"{"input":"x","stream":true,"bogus":1}"#.into(),
            400,
            "invalid_request",
        ),
        (
            id.clone(),
            r#"{"input":"x","stream":true,"params":{"stream":false}}"#.into(),
            400,
            "invalid_request",
        ),
        (
            id.clone(),
            r#"{"input":"x","stream":tru"#.into(),
            400,
            "invalid_json",
        ),
    ];
    for (thread, body, status, code) in cases {
        let streamed = app.stream_turn_with(&thread, &body, &[]).await;
        streamed.resp().expect_error(status, code);
    }

    // 409 while another turn runs, also for a streaming request.
    app.fake
        .push(Reply::generated().with_delay(Duration::from_secs(2)));
    let api = app.api.clone();
    let thread = id.clone();
    let slow =
        tokio::spawn(async move { api.stream_turn(&thread, &json!({"input": "slow"})).await });
    wait_for_requests(&app.fake, 1).await;
    let busy = app
        .stream_turn_with(&id, r#"{"input":"x","stream":true}"#, &[])
        .await;
    busy.resp().expect_error(409, "thread_busy");
    app.post(
        &format!("/v1/threads/{id}/messages"),
        &json!({"messages": [{"role": "user", "content": "sneaky"}]}),
    )
    .await
    .expect_error(409, "thread_busy");
    app.delete(&format!("/v1/threads/{id}"))
        .await
        .expect_error(409, "thread_busy");
    slow.await.unwrap().completed();
    // Nothing of the refused requests was stored or sent.
    assert_eq!(app.messages(&id).await.len(), 2);
    assert_eq!(app.turns(&id).await.len(), 1);
    assert_eq!(app.fake.requests().len(), 1);

    // 503 without an upstream key.
    let keyless = spawn_app_with(Opts::default().without_key()).await;
    let id = keyless.new_thread_id(&json!({})).await;
    keyless
        .stream_turn_with(&id, r#"{"input":"x","stream":true}"#, &[])
        .await
        .resp()
        .expect_error(503, "upstream_not_configured");
    assert!(keyless.fake.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_keep_alive_comments_cover_a_long_silent_reasoning_phase() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    app.fake.push(Reply::sse_events(vec![
        SseEvent::Data(chunk(r#"{"role":"assistant","content":""}"#, None)),
        SseEvent::Delay(Duration::from_millis(16_500)),
        SseEvent::Data(chunk(r#"{"content":"finally"}"#, Some("stop"))),
        SseEvent::Done,
    ]));
    let (response, sent_at) = app
        .open_stream(&id, r#"{"input":"take your time","stream":true}"#, &[])
        .await;
    let streamed = read_stream(response, sent_at).await;
    let turn = streamed.completed();
    assert_eq!(turn["output"]["content"], "finally");
    let chunks: Vec<_> = streamed
        .events
        .iter()
        .filter(|e| e.event == "chunk")
        .collect();
    assert_eq!(chunks.len(), 2);
    let in_gap = streamed
        .comments
        .iter()
        .filter(|(_, at)| *at > chunks[0].at && *at < chunks[1].at)
        .count();
    assert!(
        in_gap >= 1,
        "no keep-alive comment during 16.5 s of upstream silence: {:?}",
        streamed.comments
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_request_answered_with_a_json_completion_completes_like_a_plain_turn() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let details = r#"[{"type":"reasoning.text","text":"j\u00e9","format":"unknown","index":0}]"#;
    let body = completion_body(
        "m/x-1",
        &format!(
            r#"{{"role":"assistant","content":"as JSON","reasoning":"j","reasoning_details":{details}}}"#
        ),
        "stop",
    );
    app.fake.push(Reply::raw(200, body.clone()).with_padding(2));
    let streamed = app.stream_turn(&id, &json!({"input": "x"})).await;
    streamed.assert_well_formed();
    let turn = streamed.completed();
    assert_eq!(turn["output"]["content"], "as JSON");
    let stored = raw_fields(
        &stored_message(&app, &id, turn["output_message_id"].as_str().unwrap())
            .await
            .text,
    );
    assert_eq!(stored["reasoning_details"], details);
    let detail = app.turn_detail(&id, &id_of(&turn)).await;
    assert_eq!(
        raw_at(&detail.text, &["upstream", "response"]).unwrap(),
        body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crlf_framed_upstream_stream_is_parsed_relayed_and_audited_exactly() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let c1 = chunk(r#"{"role":"assistant","content":"carriage"}"#, None);
    let c2 = chunk(r#"{"content":" returns"}"#, Some("stop"));
    let sse = format!(
        ": OPENROUTER PROCESSING\r\n\r\ndata: {c1}\r\n\r\ndata: {c2}\r\n\r\ndata: [DONE]\r\n\r\n"
    );
    app.fake.push(Reply::sse(sse.clone()));
    let streamed = app.stream_turn(&id, &json!({"input": "x"})).await;
    let turn = streamed.completed();
    assert_eq!(streamed.chunks(), vec![c1, c2]);
    assert_eq!(turn["output"]["content"], "carriage returns");
    assert_eq!(audit_transcript(&app, &id, &id_of(&turn)).await, sse);
}
