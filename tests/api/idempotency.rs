//! `Idempotency-Key` on turns, streaming and not: a repeat returns the stored turn without
//! storing or calling anything; a repeat of a failed turn runs the model again on the stored
//! input; another body with the same key is 422; a repeat while the first runs is 409.

use std::time::Duration;

use fake_openrouter::{Reply, SseEvent};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::streaming::{chunk, usage_chunk};

const BAD_REQUEST: &str = r#"{"error":{"message":"Provider returned error","code":400,"metadata":{"raw":"{\"error\":{\"message\":\"bad\"}}","provider_name":"DeepSeek"}}}"#;

/// What a thread holds: (message count, turn count).
async fn counts(app: &App, id: &str) -> (usize, usize) {
    (app.messages(id).await.len(), app.turns(id).await.len())
}

fn key(k: &str) -> [(&str, &str); 1] {
    [("Idempotency-Key", k)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_of_a_completed_turn_returns_the_same_bytes_without_storing_or_calling() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let body = r#"{"input": "only once, please"}"#;
    let first = app.turn_with(&id, body, &key("key-1")).await;
    let turn = first.expect(200);
    assert_eq!(turn["status"], "completed");
    assert_eq!(counts(&app, &id).await, (2, 1));

    let again = app.turn_with(&id, body, &key("key-1")).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.text, first.text, "the repeat is byte-identical");
    assert_eq!(counts(&app, &id).await, (2, 1), "nothing stored again");
    assert_eq!(app.fake.requests().len(), 1, "no second upstream call");

    // Still the same turn after the thread moved on.
    app.turn_ok(&id, &json!({"input": "something else"})).await;
    let later = app.turn_with(&id, body, &key("key-1")).await;
    assert_eq!(later.text, first.text);
    assert_eq!(counts(&app, &id).await, (4, 2));
    assert_eq!(app.fake.requests().len(), 2);

    // The key is per thread: on another thread it starts a new turn.
    let other = app.new_thread_id(&json!({})).await;
    let elsewhere = app.turn_with(&other, body, &key("key-1")).await.expect(200);
    assert_ne!(elsewhere["id"], turn["id"]);
    assert_eq!(counts(&app, &other).await, (2, 1));
    assert_eq!(app.fake.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_of_a_streamed_turn_replays_its_events_without_storing_or_calling() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let events = vec![
        SseEvent::Comment("OPENROUTER PROCESSING".into()),
        SseEvent::Data(chunk(
            r#"{"role":"assistant","content":"caf\u00e9","reasoning":"r\u00e9","reasoning_details":[{"type":"reasoning.text","text":"r\u00e9","format":"unknown","index":0}]}"#,
            None,
        )),
        SseEvent::Data(chunk(r#"{"content":" au lait"}"#, Some("stop"))),
        SseEvent::Data(usage_chunk()),
        SseEvent::Done,
    ];
    app.fake.push(Reply::sse_events(events));
    let body = r#"{"input":"coffee?","stream":true}"#;
    let first = app.stream_turn_with(&id, body, &key("stream-1")).await;
    let turn = first.completed();
    assert_eq!(counts(&app, &id).await, (2, 1));

    let again = app.stream_turn_with(&id, body, &key("stream-1")).await;
    again.assert_well_formed();
    assert_eq!(again.started(), first.started(), "same turn.started");
    assert_eq!(again.chunks(), first.chunks(), "the stored chunks again");
    assert_eq!(again.chunks().len(), 3);
    assert_eq!(again.last().event, "turn.completed");
    assert_eq!(again.last().data, first.last().data, "same turn.completed");
    assert_eq!(again.completed()["id"], turn["id"]);
    assert_eq!(counts(&app, &id).await, (2, 1));
    assert_eq!(app.fake.requests().len(), 1);
    app.turn_ok(&id, &json!({"input": "thread still usable"}))
        .await;
}

/// A turn with a key fails; the repeat runs the model again on the stored input (not stored
/// a second time); a further repeat returns the completed turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_of_a_failed_turn_runs_the_model_again_on_the_stored_input() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({"system": "sys"})).await;
    app.fake.push(Reply::raw(400, BAD_REQUEST));
    let body = r#"{"input":"try me"}"#;
    let failed = app.turn_with(&id, body, &key("retry-1")).await;
    let error = failed.expect_error(502, "upstream_error");
    let failed_id = error["turn_id"].as_str().unwrap().to_owned();
    let failed_turn = app.turn_detail(&id, &failed_id).await.json();
    assert_eq!(failed_turn["status"], "failed");
    assert_eq!(counts(&app, &id).await, (1, 1));

    let rerun = app.turn_with(&id, body, &key("retry-1")).await;
    let turn = rerun.expect(200);
    assert_eq!(turn["status"], "completed");
    assert_ne!(turn["id"], failed_id.as_str(), "a new turn");
    assert_eq!(turn["input_message_ids"], failed_turn["input_message_ids"]);
    let messages = app.messages(&id).await;
    assert_eq!(messages.len(), 2, "the input is not stored twice");
    assert_eq!(messages[0]["content"], "try me");
    let requests = app.fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].json()["messages"],
        json!([{"role": "system", "content": "sys"}, {"role": "user", "content": "try me"}])
    );
    // The failed turn keeps its record.
    let turns = app.turns(&id).await;
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[0]["status"], "failed");

    let third = app.turn_with(&id, body, &key("retry-1")).await;
    assert_eq!(third.text, rerun.text, "now the completed turn is replayed");
    assert_eq!(app.fake.requests().len(), 2);
    assert_eq!(counts(&app, &id).await, (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_of_a_failed_streamed_turn_streams_the_model_again_on_the_stored_input() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    app.fake.push(Reply::sse_events(vec![
        SseEvent::Data(chunk(r#"{"role":"assistant","content":"par"}"#, None)),
        SseEvent::Cut,
    ]));
    let body = r#"{"input":"stream me","stream":true}"#;
    let first = app.stream_turn_with(&id, body, &key("s-retry")).await;
    let failed = first.failed();
    let started = first.started();
    assert_eq!(counts(&app, &id).await, (1, 1));

    let again = app.stream_turn_with(&id, body, &key("s-retry")).await;
    let turn = again.completed();
    let restarted = again.started();
    assert_ne!(restarted["turn_id"], failed["turn_id"]);
    assert_eq!(restarted["input_message_ids"], started["input_message_ids"]);
    assert_eq!(turn["input_message_ids"], started["input_message_ids"]);
    assert!(!again.chunks().is_empty(), "the model streamed again");
    assert_eq!(counts(&app, &id).await, (2, 2));
    let requests = app.fake.requests();
    assert_eq!(requests.len(), 2);
    let users: Vec<Value> = requests[1].json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["content"] == "stream me")
        .cloned()
        .collect();
    assert_eq!(users.len(), 1);

    // And a further repeat replays the completed one.
    let third = app.stream_turn_with(&id, body, &key("s-retry")).await;
    assert_eq!(third.last().data, again.last().data);
    assert_eq!(third.chunks(), again.chunks());
    assert_eq!(app.fake.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_with_a_different_body_is_422_and_changes_nothing() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    app.turn_with(&id, r#"{"input":"original"}"#, &key("k"))
        .await
        .expect(200);
    for other in [
        r#"{"input":"different"}"#,
        r#"{"input":"original","model":"m/other"}"#,
        r#"{"input":"original","stream":true}"#,
    ] {
        app.turn_with(&id, other, &key("k"))
            .await
            .expect_error(422, "idempotency_key_reused");
    }
    // Streaming first, then a different body.
    let streamed_key = key("s");
    app.stream_turn_with(&id, r#"{"input":"s1","stream":true}"#, &streamed_key)
        .await
        .completed();
    let reused = app
        .stream_turn_with(&id, r#"{"input":"s2","stream":true}"#, &streamed_key)
        .await;
    reused.resp().expect_error(422, "idempotency_key_reused");
    assert_eq!(counts(&app, &id).await, (4, 2));
    assert_eq!(app.fake.requests().len(), 2);
    app.turn_ok(&id, &json!({"input": "usable"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_while_the_first_runs_is_409_then_returns_the_finished_turn() {
    let app = spawn_app().await;
    for stream in [false, true] {
        let id = app.new_thread_id(&json!({})).await;
        app.fake
            .push(Reply::generated().with_delay(Duration::from_millis(1500)));
        let before = app.fake.requests().len();
        let body = if stream {
            r#"{"input":"slow","stream":true}"#
        } else {
            r#"{"input":"slow"}"#
        };
        let api = app.api.clone();
        let thread = id.clone();
        let first = tokio::spawn(async move {
            if stream {
                let s = api.stream_turn_with(&thread, body, &key("busy")).await;
                s.last().data.clone()
            } else {
                api.turn_with(&thread, body, &key("busy")).await.text
            }
        });
        wait_for_requests(&app.fake, before + 1).await;
        app.turn_with(&id, body, &key("busy"))
            .await
            .expect_error(409, "thread_busy");
        // A different body under the key is refused as such, even now.
        app.turn_with(&id, r#"{"input":"other"}"#, &key("busy"))
            .await
            .expect_error(422, "idempotency_key_reused");
        let finished = first.await.unwrap();
        let turn: Value = serde_json::from_str(&finished).unwrap();
        assert_eq!(turn["status"], "completed", "stream={stream}: {turn}");
        assert_eq!(counts(&app, &id).await, (2, 1), "stream={stream}");
        // Now the repeat returns it, with no further call.
        let repeat = if stream {
            app.stream_turn_with(&id, body, &key("busy"))
                .await
                .last()
                .data
                .clone()
        } else {
            app.turn_with(&id, body, &key("busy")).await.text
        };
        assert_eq!(repeat, finished, "stream={stream}");
        assert_eq!(app.fake.requests().len(), before + 1);
    }
}

// A repeat of a completed turn is answered from what was stored: it needs neither the model
// nor usable settings, so neither an upstream key missing now nor settings spoiled since
// refuse it. New requests are still refused, with nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_of_a_completed_turn_needs_no_upstream_key_nor_usable_settings() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let body = json!({"input": "once"}).to_string();
    let key = [("Idempotency-Key", "k1")];
    let first = app.turn_with(&id, &body, &key).await.expect(200);

    let keyless = Service::start(
        &app.db_url,
        &app.fake.base_url(),
        &Opts::default().without_key(),
    );
    let api = keyless.api();
    assert_eq!(api.turn_with(&id, &body, &key).await.expect(200), first);
    let other = json!({"input": "new"}).to_string();
    api.turn_with(&id, &other, &[("Idempotency-Key", "k2")])
        .await
        .expect_error(503, "upstream_not_configured");
    api.turn(&id, &json!({"input": "new"}))
        .await
        .expect_error(503, "upstream_not_configured");
    drop(keyless);

    app.spoil_settings(&id);
    assert_eq!(app.turn_with(&id, &body, &key).await.expect(200), first);
    app.turn(&id, &json!({"input": "new"}))
        .await
        .expect_error(400, "invalid_request");

    assert_eq!(
        app.messages(&id).await.len(),
        2,
        "a refused request stored something"
    );
    assert_eq!(app.fake.requests().len(), 1, "the model was called again");
}
