//! Failed turns and the audit record: a failure keeps the input, a retry without input sends
//! it once, and the audit record shows attempts and the exact bytes exchanged.

use std::time::Duration;

use fake_openrouter::{Reply, PADDING_UNIT};
use serde_json::{json, Value};

use crate::helpers::*;

/// Scripts a failure, checks the failed turn and its stored input, then retries without input.
async fn failed_turn_keeps_input_and_retry_sends_it_once(
    reply: Reply,
    upstream_status: u16,
    message_part: &str,
) {
    let app = spawn_app_with(Opts::default().args(&["--upstream-attempts", "1"])).await;
    let id = app.new_thread_id(&json!({"system": "sys"})).await;
    app.fake.push(reply);
    let resp = app.turn(&id, &json!({"input": "please answer"})).await;
    let error = resp.expect_error(502, "upstream_error");
    assert_eq!(error["upstream_status"], upstream_status, "{resp:?}");
    assert!(
        error["message"].as_str().unwrap().contains(message_part),
        "{resp:?}"
    );
    let failed_id = error["turn_id"].as_str().unwrap().to_owned();

    let turns = app.turns(&id).await;
    assert_eq!(turns.len(), 1);
    let failed = &turns[0];
    assert_eq!(failed["id"], failed_id.as_str());
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "upstream_error");
    assert_eq!(failed["error"]["upstream_status"], upstream_status);
    assert!(failed.get("output").is_none() && failed.get("output_message_id").is_none());
    let input_id = failed["input_message_ids"][0].as_str().unwrap().to_owned();

    let detail = app.turn_detail(&id, &failed_id).await;
    let audit = detail.json()["upstream"].clone();
    assert_eq!(audit["status"], upstream_status);
    assert_eq!(audit["attempts"], 1);
    assert_eq!(
        raw_at(&detail.text, &["upstream", "request"]).unwrap(),
        app.fake.requests()[0].body
    );
    assert!(audit.get("response").is_some(), "{audit}");

    // The input stays; no assistant message was added.
    let messages = app.messages(&id).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["id"], input_id.as_str());

    let retry = app.turn_ok(&id, &json!({})).await;
    assert_eq!(retry["input_message_ids"], json!([]));
    let requests = app.fake.requests();
    assert_eq!(requests.len(), 2);
    let sent = requests[1].json();
    let users: Vec<&Value> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["content"] == "please answer")
        .collect();
    assert_eq!(users.len(), 1, "input sent exactly once: {sent}");
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "sys"}, {"role": "user", "content": "please answer"}])
    );
    assert_eq!(app.messages(&id).await.len(), 2);
    let statuses: Vec<Value> = app
        .turns(&id)
        .await
        .iter()
        .map(|t| t["status"].clone())
        .collect();
    assert_eq!(statuses, vec![json!("failed"), json!("completed")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_turn_after_500_keeps_its_input_and_a_retry_completes() {
    failed_turn_keeps_input_and_retry_sends_it_once(
        Reply::raw(
            500,
            r#"{"error":{"message":"Internal Server Error","code":500}}"#,
        ),
        500,
        "Internal Server Error",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_turn_after_400_keeps_its_input_and_a_retry_completes() {
    let exchange = fake_openrouter::recordings::load_fixture("ai-sdk-provider/6gmSSczGYDL")
        .unwrap()
        .remove(0);
    assert_eq!(exchange.status, 400);
    failed_turn_keeps_input_and_retry_sends_it_once(
        exchange.reply(),
        400,
        "Provider returned error",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_record_counts_retries_and_keeps_the_exact_bodies() {
    let app = spawn_app_with(Opts::default().args(&["--upstream-attempts", "3"])).await;
    let id = app.new_thread_id(&json!({})).await;
    let body = completion_body(
        "m/audit-20250101",
        r#"{"role":"assistant","content":"ok \u00e9","reasoning":"r","reasoning_details":[{"type":"reasoning.text","text":"r","format":"unknown","index":0}]}"#,
        "stop",
    );
    app.fake.push(Reply::raw(
        500,
        r#"{"error":{"message":"flaky","code":500}}"#,
    ));
    app.fake
        .push(Reply::recorded(200, body.clone()).with_padding(3));
    let turn = app
        .turn_ok(&id, &json!({"input": "audit me", "model": "m/audit"}))
        .await;

    let requests = app.fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].reply_status, 500);
    assert_eq!(requests[1].reply_status, 200);
    assert_eq!(
        requests[0].body, requests[1].body,
        "a retry resends the same bytes"
    );

    let detail = app.turn_detail(&id, &id_of(&turn)).await;
    let audit = detail.json()["upstream"].clone();
    assert_eq!(audit["attempts"], 2, "{audit}");
    assert_eq!(audit["status"], 200);
    assert_timestamp(&audit["started_at"]);
    assert_timestamp(&audit["finished_at"]);
    assert!(audit["finished_at"].as_str() >= audit["started_at"].as_str());
    assert_eq!(
        raw_at(&detail.text, &["upstream", "request"]).unwrap(),
        requests[1].body
    );
    assert_eq!(
        raw_at(&detail.text, &["upstream", "response"]).unwrap(),
        body
    );
    let padded = format!("{}{body}", PADDING_UNIT.repeat(3));
    assert!(
        detail.text.contains(&padded),
        "padding kept in the audit response: {}",
        detail.text
    );
    // The answer of the turn itself and list entries do not carry the audit record.
    assert!(turn.get("upstream").is_none());
    assert!(app.turns(&id).await[0].get("upstream").is_none());

    // The same with the generated reply: its body starts with two padding units.
    app.fake.push(Reply::raw(
        503,
        r#"{"error":{"message":"busy","code":503}}"#,
    ));
    let turn = app.turn_ok(&id, &json!({"input": "again"})).await;
    let detail = app.turn_detail(&id, &id_of(&turn)).await;
    let audit = detail.json()["upstream"].clone();
    assert_eq!(audit["attempts"], 2, "{audit}");
    assert_eq!(audit["status"], 200);
    let requests = app.fake.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(
        raw_at(&detail.text, &["upstream", "request"]).unwrap(),
        requests[3].body
    );
    let response = raw_at(&detail.text, &["upstream", "response"]).unwrap();
    let generation = turn["generation_id"].as_str().unwrap();
    assert!(
        response.starts_with(&format!("{{\"id\":\"{generation}\"")),
        "{response}"
    );
    assert!(detail
        .text
        .contains(&format!("{}{response}", PADDING_UNIT.repeat(2))));
    // What was stored is a slice of what was received.
    let details = raw_at(&response, &["choices", "0", "message", "reasoning_details"]).unwrap();
    let stored = raw_at(&detail.text, &["output", "reasoning_details"]).unwrap();
    assert_eq!(stored, details);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_turn_audit_shows_a_timeout_without_a_response() {
    let app = spawn_app_with(Opts::default().args(&[
        "--upstream-timeout",
        "2s",
        "--upstream-attempts",
        "1",
    ]))
    .await;
    let id = app.new_thread_id(&json!({})).await;
    app.fake.push(Reply::hang());
    let started = std::time::Instant::now();
    let error = app
        .turn(&id, &json!({"input": "anyone?"}))
        .await
        .expect_error(504, "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "timeout took {:?}",
        started.elapsed()
    );
    let turn_id = error["turn_id"].as_str().unwrap().to_owned();
    let detail = app.turn_detail(&id, &turn_id).await.json();
    assert_eq!(detail["status"], "failed");
    assert_eq!(detail["error"]["code"], "upstream_timeout");
    assert_eq!(detail["upstream"]["attempts"], 1);
    assert!(detail["upstream"].get("response").is_none(), "{detail}");
    assert_eq!(app.fake.requests()[0].reply_status, 0);
    // The thread is free again.
    app.turn_ok(&id, &json!({})).await;
}

// A thread whose stored settings a turn cannot use (a database edited by hand, or written by
// an older version: import refuses such settings) refuses its turns before storing anything,
// and is not left busy.
#[tokio::test]
async fn unusable_stored_settings_refuse_the_turn_and_store_nothing() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    app.spoil_settings(&id);
    app.turn(&id, &json!({"input": "hello"}))
        .await
        .expect_error(400, "invalid_request");
    assert!(app.fake.requests().is_empty(), "the model was called");
    let messages = app
        .get(&format!("/v1/threads/{id}/messages"))
        .await
        .expect(200);
    assert_eq!(messages["data"], json!([]), "input stored: {messages}");
    let turns = app
        .get(&format!("/v1/threads/{id}/turns"))
        .await
        .expect(200);
    assert_eq!(turns["data"], json!([]), "a turn left behind: {turns}");
    // Mended, the thread takes a turn at once: no lease was left held.
    app.patch(
        &format!("/v1/threads/{id}"),
        &json!({"reasoning_replay": "all"}),
    )
    .await
    .expect(200);
    app.turn_ok(&id, &json!({"input": "hello"})).await;
}

/// Another process holds the database's write lock past the busy timeout (10 s) just as a
/// turn's reply arrives: the closing write is tried again once the lock is free, and the
/// paid reply is stored and answered, not dropped for a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_whose_write_meets_a_locked_database_is_stored_once_the_lock_is_free() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    app.fake
        .push(Reply::generated().with_delay(Duration::from_millis(500)));
    let api = app.api.clone();
    let thread = id.clone();
    let turn = tokio::spawn(async move { api.turn(&thread, &json!({"input": "hold on"})).await });
    wait_for_requests(&app.fake, 1).await;
    // The lock is taken while the model works and held past one busy timeout of the
    // closing write.
    let db = app.db_path();
    let locker = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        std::thread::sleep(Duration::from_secs(12));
        conn.execute_batch("ROLLBACK").unwrap();
    });
    let answer = turn.await.unwrap();
    locker.join().unwrap();
    let turn = answer.expect(200);
    assert_eq!(turn["status"], "completed");
    assert!(
        app.logs()
            .contains("could not store the end of the turn; trying again"),
        "{}",
        app.logs()
    );
    let stored = app
        .turn_detail(&id, turn["id"].as_str().unwrap())
        .await
        .expect(200);
    assert_eq!(stored["status"], "completed");
    assert_eq!(stored["upstream"]["attempts"], 1, "{stored}");
    let messages = app.messages(&id).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1]["id"], turn["output_message_id"]);
    // The thread is free again.
    app.turn_ok(&id, &json!({"input": "next"})).await;
}

/// A reply the database refuses to store (here a trigger stands in for whatever makes the
/// write fail) does not vanish: the turn ends `failed`, keeping what the model reported it
/// cost and the whole upstream exchange, reply included, in its audit record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_cannot_be_stored_leaves_a_failed_turn_with_its_exchange() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    app.turn_ok(&id, &json!({"input": "first"})).await;
    let db = rusqlite::Connection::open(app.db_path()).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_replies BEFORE INSERT ON messages WHEN NEW.role = 'assistant' \
         BEGIN SELECT RAISE(ABORT, 'no room for replies'); END;",
    )
    .unwrap();

    let resp = app.turn(&id, &json!({"input": "second"})).await;
    let error = resp.expect_error(500, "internal_error");
    let turns = app.turns(&id).await;
    assert_eq!(turns.len(), 2);
    // The turn was stored: the answer names it.
    assert_eq!(error["turn_id"], turns[1]["id"], "{error}");
    let detail = app.turn_detail(&id, turns[1]["id"].as_str().unwrap()).await;
    let failed = detail.expect(200);
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "internal_error", "{failed}");
    assert!(failed.get("output_message_id").is_none());
    assert!(
        failed["usage"]["total_tokens"].as_u64().unwrap() > 0,
        "{failed}"
    );
    assert!(failed["generation_id"].is_string(), "{failed}");
    assert_eq!(failed["upstream"]["attempts"], 1, "{failed}");
    let response = raw_at(&detail.text, &["upstream", "response"]).unwrap();
    assert!(response.contains("\"choices\""), "{response}");
    // The input stays; the thread's usage totals count completed turns only.
    let messages = app.messages(&id).await;
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[2]["content"], "second");
    let thread = app.thread(&id).await;
    assert_eq!(
        thread["usage"]["prompt_tokens"],
        turns[0]["usage"]["prompt_tokens"]
    );

    db.execute_batch("DROP TRIGGER refuse_replies").unwrap();
    let next = app.turn_ok(&id, &json!({})).await;
    assert_eq!(next["status"], "completed");
}
