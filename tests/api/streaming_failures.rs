//! Streams that fail: an error chunk, `finish_reason: "error"`, a cut connection, an end
//! without a finish, and JSON error answers to a streaming request. The turn ends with
//! `turn.failed`, keeps its input and its transcript, adds no assistant message, and the
//! thread goes on.

use fake_openrouter::recordings::load_fixture;
use fake_openrouter::{Reply, SseEvent};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::streaming::{audit_transcript, chunk, sse_text};

/// Runs a stream that must fail; checks the event, the stored failed turn, its kept input
/// and audit transcript, then that the thread completes a retry. Returns the failed turn's
/// detail text.
async fn failed_stream(
    app: &App,
    id: &str,
    reply: Reply,
    expected_transcript: Option<&str>,
) -> String {
    app.fake.push(reply);
    let streamed = app.stream_turn(id, &json!({"input": "doomed"})).await;
    streamed.assert_well_formed();
    let failed = streamed.failed();
    let turn_id = failed["turn_id"].as_str().unwrap().to_owned();
    assert_eq!(failed["error"]["turn_id"], turn_id.as_str(), "{failed}");
    assert_eq!(failed["error"]["code"], "upstream_error", "{failed}");
    assert_eq!(failed["error"]["upstream_status"], 200, "{failed}");
    let detail = app.turn_detail(id, &turn_id).await;
    let turn = detail.json();
    assert_eq!(turn["status"], "failed", "{turn}");
    assert_eq!(turn["error"]["code"], "upstream_error");
    assert!(turn.get("output_message_id").is_none(), "{turn}");
    if let Some(expected) = expected_transcript {
        assert_eq!(audit_transcript(app, id, &turn_id).await, expected);
    }
    // Only the input was stored.
    let messages = app.messages(id).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["content"], "doomed");
    // The thread is free: a retry on the stored input completes.
    let retry = app.stream_turn(id, &json!({})).await.completed();
    assert_eq!(retry["input_message_ids"], json!([]));
    assert_eq!(app.messages(id).await.len(), 2);
    detail.text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_stream_error_chunk_fails_the_turn_and_keeps_usage_in_the_audit() {
    let exchange = load_fixture("pydantic-ai/test_openrouter_stream_error.yaml")
        .unwrap()
        .remove(0);
    assert!(exchange.is_sse);
    let app = spawn_app().await;
    let id = app
        .new_thread_id(&json!({"model": "minimax/minimax-m2:free"}))
        .await;
    let detail = failed_stream(&app, &id, exchange.reply(), Some(&exchange.response_body)).await;
    let error = serde_json::from_str::<Value>(&detail).unwrap()["error"].clone();
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("Token limit reached"),
        "{error}"
    );
    let turn_id = serde_json::from_str::<Value>(&detail).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let transcript = audit_transcript(&app, &id, &turn_id).await;
    assert!(transcript.contains(r#""usage":{"prompt_tokens":43"#));
    // Nothing of the failed turn counts in the thread's usage.
    let usage = app.thread(&id).await["usage"].clone();
    assert_ne!(usage["prompt_tokens"], 43, "{usage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_reason_error_in_a_stream_fails_the_turn() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let events = vec![
        SseEvent::Data(chunk(
            r#"{"role":"assistant","content":"half an ans","reasoning":"r","reasoning_details":[{"type":"reasoning.text","text":"r","format":"unknown","index":0}]}"#,
            None,
        )),
        SseEvent::Data(chunk(r#"{"content":""}"#, Some("error"))),
        SseEvent::Done,
    ];
    failed_stream(
        &app,
        &id,
        Reply::sse_events(events.clone()),
        Some(&sse_text(&events)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_stream_fails_the_turn_without_an_assistant_message() {
    let app = spawn_app_with(Opts::default().args(&["--upstream-attempts", "1"])).await;
    let id = app.new_thread_id(&json!({})).await;
    let events = vec![
        SseEvent::Data(chunk(r#"{"role":"assistant","content":"Once upon"}"#, None)),
        SseEvent::Data(chunk(r#"{"content":" a time"}"#, None)),
        SseEvent::Cut,
    ];
    let detail = failed_stream(&app, &id, Reply::sse_events(events.clone()), None).await;
    // What arrived before the cut is kept in the audit record only.
    let turn_id = serde_json::from_str::<Value>(&detail).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let transcript = audit_transcript(&app, &id, &turn_id).await;
    assert!(
        sse_text(&events).starts_with(&transcript) && transcript.contains("Once upon"),
        "{transcript}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ending_without_done_or_finish_reason_fails_but_with_a_finish_reason_completes() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    // The body ends cleanly, but the model never finished.
    let events = vec![
        SseEvent::Data(chunk(r#"{"role":"assistant","content":"trunc"}"#, None)),
        SseEvent::Data(chunk(r#"{"content":"ated"}"#, None)),
    ];
    failed_stream(
        &app,
        &id,
        Reply::sse_events(events.clone()),
        Some(&sse_text(&events)),
    )
    .await;

    // A finish_reason without [DONE] is a complete answer.
    let other = app.new_thread_id(&json!({})).await;
    app.fake.push(Reply::sse_events(vec![
        SseEvent::Data(chunk(r#"{"role":"assistant","content":"all"}"#, None)),
        SseEvent::Data(chunk(r#"{"content":" there"}"#, Some("stop"))),
    ]));
    let turn = app
        .stream_turn(&other, &json!({"input": "q"}))
        .await
        .completed();
    assert_eq!(turn["output"]["content"], "all there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_error_answers_to_a_streaming_request_become_turn_failed_with_the_upstream_status() {
    let app = spawn_app().await;
    for fixture in ["ai-sdk-provider/6gmSSczGYDL", "ai-sdk-provider/2Hns20Jrj6g"] {
        let exchange = load_fixture(fixture).unwrap().remove(0);
        assert_eq!(exchange.status, 400);
        assert!(!exchange.is_sse);
        let id = app.new_thread_id(&json!({})).await;
        app.fake.push(exchange.reply());
        let before = app.fake.requests().len();
        let streamed = app.stream_turn(&id, &json!({"input": "hello"})).await;
        streamed.assert_well_formed();
        assert!(streamed.chunks().is_empty(), "{}", streamed.text);
        let failed = streamed.failed();
        assert_eq!(failed["error"]["code"], "upstream_error", "{failed}");
        assert_eq!(failed["error"]["type"], "upstream_error", "{failed}");
        assert_eq!(failed["error"]["upstream_status"], 400, "{failed}");
        let recorded: Value = serde_json::from_str(&exchange.response_body).unwrap();
        let message = failed["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(recorded["error"]["message"].as_str().unwrap()),
            "{failed}"
        );
        // 400 is not retried.
        assert_eq!(app.fake.requests().len(), before + 1);
        let turn_id = failed["turn_id"].as_str().unwrap();
        let detail = app.turn_detail(&id, turn_id).await;
        let audit = detail.json()["upstream"].clone();
        assert_eq!(audit["status"], 400);
        assert_eq!(audit["attempts"], 1);
        assert_eq!(
            raw_at(&detail.text, &["upstream", "response"]).unwrap(),
            exchange.response_body.trim(),
            "{fixture}: the JSON answer is audited as JSON"
        );
        assert_eq!(app.messages(&id).await.len(), 1);
        app.stream_turn(&id, &json!({})).await.completed();
    }
}
