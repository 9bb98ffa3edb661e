//! Upstream failures and their status codes (502, 504, 429, 503), and the upstream key that
//! must never leak.

use std::time::{Duration, Instant};

use fake_openrouter::recordings::load_fixture;
use fake_openrouter::Reply;
use serde_json::json;

use crate::helpers::*;

/// Runs one failing turn per scripted reply; each must be a 502 `upstream_error` with the
/// upstream's own message, stored as a failed turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_502_with_the_upstream_message() {
    let app = spawn_app_with(Opts::default().args(&["--upstream-attempts", "1"])).await;
    let anthropic_400 = load_fixture("ai-sdk-provider/6gmSSczGYDL")
        .unwrap()
        .remove(0);
    let empty_400 = load_fixture("ai-sdk-provider/2Hns20Jrj6g")
        .unwrap()
        .remove(0);
    let cases: Vec<(Reply, Option<u16>, Vec<&str>)> = vec![
        (
            anthropic_400.reply(),
            Some(400),
            vec!["Provider returned error", "all messages must have non-empty content", "Anthropic"],
        ),
        (empty_400.reply(), Some(400), vec!["Input must have at least 1 token."]),
        (
            Reply::raw(400, r#"{"error":{"message":"Provider returned error","code":400,"metadata":{"raw":"{\"error\":{\"message\":\"Missing reasoning_content field in the assistant message at message index 2\"}}","provider_name":"DeepSeek"}},"user_id":"u"}"#),
            Some(400),
            vec!["Provider returned error", "Missing reasoning_content field"],
        ),
        (
            Reply::raw(404, r#"{"error":{"message":"No endpoints found for m/x.","code":404}}"#),
            Some(404),
            vec!["No endpoints found for m/x."],
        ),
        (
            Reply::raw(200, r#"{"error":{"message":"Token limit reached","code":400,"metadata":{"raw":"context overflow"}},"user_id":"u"}"#).with_padding(2),
            Some(200),
            vec!["Token limit reached", "context overflow"],
        ),
        (Reply::raw(200, "<html>Bad gateway</html>"), Some(200), vec![]),
        (Reply::raw(200, r#"{"id":"gen-1","choices":[]}"#), Some(200), vec![]),
        (
            Reply::raw(200, completion_body("m/x", r#"{"role":"assistant","content":""}"#, "error")),
            Some(200),
            vec![],
        ),
        (Reply::close(), None, vec![]),
    ];
    let id = app.new_thread_id(&json!({})).await;
    for (i, (reply, status, parts)) in cases.into_iter().enumerate() {
        app.fake.push(reply);
        let resp = app.turn(&id, &json!({"input": format!("case {i}")})).await;
        let error = resp.expect_error(502, "upstream_error");
        assert_eq!(
            error["upstream_status"].as_u64(),
            status.map(u64::from),
            "case {i}: {resp:?}"
        );
        let message = error["message"].as_str().unwrap();
        for part in parts {
            assert!(
                message.contains(part),
                "case {i}: `{part}` missing from {resp:?}"
            );
        }
        let turn_id = error["turn_id"].as_str().unwrap();
        let turn = app.turn_detail(&id, turn_id).await.json();
        assert_eq!(turn["status"], "failed", "case {i}");
        assert_eq!(
            turn["error"], error,
            "case {i}: stored error = answered error"
        );
    }
    let turns = app.turns(&id).await;
    assert_eq!(turns.len(), 9);
    // Nine inputs stored, no assistant message.
    let messages = app.messages(&id).await;
    assert_eq!(messages.len(), 9);
    assert!(messages.iter().all(|m| m["role"] == "user"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_429s_after_retries_are_429_with_retry_after() {
    let app = spawn_app_with(Opts::default().args(&["--upstream-attempts", "3"])).await;
    let exchanges = load_fixture("pydantic-ai/test_openrouter_errors_raised.yaml").unwrap();
    assert_eq!(exchanges.len(), 3);
    for exchange in &exchanges {
        assert_eq!(exchange.status, 429);
        app.fake
            .push(exchange.reply().with_header("Retry-After", "1"));
    }
    let id = app
        .new_thread_id(&json!({"model": "google/gemini-2.0-flash-exp:free"}))
        .await;
    let started = Instant::now();
    let resp = app.turn(&id, &json!({"input": "hi"})).await;
    let elapsed = started.elapsed();
    let error = resp.expect_error(429, "rate_limited");
    assert_eq!(error["upstream_status"], 429);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("rate-limited upstream"),
        "{resp:?}"
    );
    let retry_after: u64 = resp
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {resp:?}"))
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(app.fake.requests().len(), 3);
    assert!(
        elapsed >= Duration::from_millis(1900),
        "Retry-After not honoured: {elapsed:?}"
    );
    let turn = app
        .turn_detail(&id, error["turn_id"].as_str().unwrap())
        .await
        .json();
    assert_eq!(turn["status"], "failed");
    assert_eq!(turn["upstream"]["attempts"], 3);
    assert_eq!(turn["upstream"]["status"], 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeout_is_504() {
    let app = spawn_app_with(Opts::default().args(&[
        "--upstream-timeout",
        "2s",
        "--upstream-attempts",
        "1",
    ]))
    .await;
    let id = app.new_thread_id(&json!({})).await;
    // Headers then silence is a timeout too.
    for reply in [
        Reply::hang(),
        Reply::stall_after(
            20,
            completion_body("m", r#"{"role":"assistant","content":"x"}"#, "stop"),
        ),
    ] {
        app.fake.push(reply);
        let started = Instant::now();
        let resp = app.turn(&id, &json!({"input": "slow"})).await;
        resp.expect_error(504, "upstream_timeout");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(app.fake.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_api_key_is_503_and_nothing_reaches_the_upstream() {
    let app = spawn_app_with(Opts::default().without_key()).await;
    let id = app.new_thread_id(&json!({})).await;
    app.turn(&id, &json!({"input": "hi"}))
        .await
        .expect_error(503, "upstream_not_configured");
    assert!(app.fake.requests().is_empty());
    // Everything else works.
    app.get("/healthz").await.expect(200);
    app.get("/readyz").await.expect(200);
    app.post(
        &format!("/v1/threads/{id}/messages"),
        &json!({"messages": [{"role": "user", "content": "x"}]}),
    )
    .await
    .expect(201);
    app.context(&id, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_key_is_sent_as_bearer_and_never_leaks() {
    let app = spawn_app_with(
        Opts::default()
            .args(&["--upstream-attempts", "2", "--upstream-timeout", "2s"])
            .rust_log("debug"),
    )
    .await;
    let id = app.new_thread_id(&json!({"system": "s"})).await;
    let turn = app.turn_ok(&id, &json!({"input": "hello"})).await;
    app.fake.push(Reply::raw(
        401,
        r#"{"error":{"message":"No auth credentials found","code":401}}"#,
    ));
    let failed = app.turn(&id, &json!({"input": "again"})).await;
    failed.expect_error(502, "upstream_error");
    app.fake.push(Reply::raw(
        503,
        r#"{"error":{"message":"busy","code":503}}"#,
    ));
    app.fake.push(Reply::hang());
    app.turn(&id, &json!({}))
        .await
        .expect_error(504, "upstream_timeout");
    app.fake.push(Reply::close());
    app.turn_ok(&id, &json!({})).await;
    for turn in app.turns(&id).await {
        app.turn_detail(&id, &id_of(&turn)).await;
    }
    app.turn_detail(&id, &id_of(&turn)).await;
    app.context(&id, "").await;
    app.snapshot().await;

    let requests = app.fake.requests();
    assert!(requests.len() >= 6);
    for r in &requests {
        assert_eq!(
            r.authorization.as_deref(),
            Some("Bearer sk-or-test-key"),
            "{}",
            r.path
        );
        assert!(!r.body.contains(TEST_KEY));
    }
    for answer in app.transcript() {
        assert!(
            !answer.contains(TEST_KEY),
            "the key leaked in an answer: {answer}"
        );
    }
    let logs = app.logs();
    assert!(logs.contains("listening on"));
    assert!(
        !logs.contains(TEST_KEY),
        "the key leaked in the logs:\n{logs}"
    );
    // Nor is it stored.
    for entry in std::fs::read_dir(app.dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes
                .windows(TEST_KEY.len())
                .any(|w| w == TEST_KEY.as_bytes()),
            "the key is in the database files"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_rejection_of_missing_reasoning_is_502_with_metadata_raw() {
    // The strict fake applies DeepSeek's rule: a tool-call turn that came with reasoning must
    // be sent back with it. Replaying without reasoning provokes the real error shape.
    let app = spawn_app_with(Opts::default().strict().args(&["--upstream-attempts", "1"])).await;
    let tools = json!([{"type": "function", "function": {"name": "calc", "parameters": {"type": "object", "properties": {}}}}]);
    let id = app
        .new_thread_id(&json!({"params": {"tools": tools}}))
        .await;
    let first = app.turn_ok(&id, &json!({"input": "compute"})).await;
    let call_id = first["output"]["tool_calls"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = app
        .turn(
            &id,
            &json!({
                "input": {"role": "tool", "tool_call_id": call_id, "content": "4"},
                "reasoning_replay": "none"
            }),
        )
        .await;
    let error = resp.expect_error(502, "upstream_error");
    assert_eq!(error["upstream_status"], 400);
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("Provider returned error"), "{resp:?}");
    assert!(
        message.contains("Missing reasoning_content field"),
        "{resp:?}"
    );
    // The retry with the reasoning replayed goes through; the tool result was kept.
    let retry = app.turn_ok(&id, &json!({})).await;
    assert_eq!(retry["input_message_ids"], json!([]));
    let requests = app.fake.requests();
    assert_eq!(
        requests.iter().map(|r| r.reply_status).collect::<Vec<_>>(),
        [200, 400, 200]
    );
}
