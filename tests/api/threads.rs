//! Threads: create, read, list, PATCH semantics, DELETE cascades, usage totals.

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_crud_round_trip_keeps_every_setting() {
    let app = spawn_app().await;
    let body = json!({
        "metadata": {"project": "apollo", "owner": "ada"},
        "model": "anthropic/claude-sonnet-4",
        "system": "Be brief. Caf\u{e9} \u{1F600}",
        "reasoning": {"effort": "low"},
        "reasoning_replay": "all",
        "params": {"temperature": 0.5, "max_tokens": 100}
    });
    let created = app.create_thread(&body).await;
    let id = id_of(&created);
    assert_uuid_v7(&id);
    assert_eq!(created["object"], "thread");
    assert_timestamp(&created["created_at"]);
    assert_timestamp(&created["updated_at"]);
    for key in [
        "metadata",
        "model",
        "system",
        "reasoning",
        "reasoning_replay",
        "params",
    ] {
        assert_eq!(created[key], body[key], "{key} in {created}");
    }
    assert_eq!(created["message_count"], 0);
    assert!(created.get("last_message_id").is_none(), "{created}");
    assert_no_nulls(&created, &[]);

    let read = app.thread(&id).await;
    assert_eq!(read, created);

    let list = app.get("/v1/threads").await.expect(200);
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"], json!([created]));

    // An empty body (any content type) counts as `{}`: a thread with defaults only.
    let empty = app
        .send(reqwest::Method::POST, "/v1/threads", None, None)
        .await
        .expect(201);
    assert_eq!(empty["metadata"], json!({}));
    for key in [
        "model",
        "system",
        "reasoning",
        "reasoning_replay",
        "params",
        "usage",
    ] {
        assert!(empty.get(key).is_none(), "{key} should be omitted: {empty}");
    }
    let empty_text_plain = app
        .send(
            reqwest::Method::POST,
            "/v1/threads",
            Some("text/plain"),
            Some(Vec::new()),
        )
        .await
        .expect(201);
    assert_eq!(empty_text_plain["message_count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_changes_given_fields_and_null_clears_a_setting() {
    let app = spawn_app().await;
    let created = app
        .create_thread(&json!({
            "metadata": {"a": "1"},
            "model": "m/one",
            "system": "old system",
            "reasoning": {"effort": "high"},
            "reasoning_replay": "none",
            "params": {"temperature": 0.2}
        }))
        .await;
    let id = id_of(&created);
    let path = format!("/v1/threads/{id}");

    let patched = app
        .patch(&path, &json!({"model": null, "system": "new system"}))
        .await
        .expect(200);
    assert!(
        patched.get("model").is_none(),
        "null must clear model: {patched}"
    );
    assert_eq!(patched["system"], "new system");
    // Fields not in the PATCH stay as they were.
    assert_eq!(patched["reasoning"], json!({"effort": "high"}));
    assert_eq!(patched["reasoning_replay"], "none");
    assert_eq!(patched["params"], json!({"temperature": 0.2}));
    assert_eq!(patched["metadata"], json!({"a": "1"}));
    assert_eq!(patched["created_at"], created["created_at"]);
    assert!(patched["updated_at"].as_str() >= created["updated_at"].as_str());
    assert_no_nulls(&patched, &[]);

    let cleared = app
        .patch(
            &path,
            &json!({"reasoning": null, "reasoning_replay": null, "params": null, "system": null}),
        )
        .await
        .expect(200);
    for key in ["model", "system", "reasoning", "reasoning_replay", "params"] {
        assert!(
            cleared.get(key).is_none(),
            "{key} should be cleared: {cleared}"
        );
    }
    let metadata = app
        .patch(&path, &json!({"metadata": {"b": "2"}}))
        .await
        .expect(200);
    assert_eq!(metadata["metadata"]["b"], "2");

    // An empty PATCH changes nothing.
    let same = app.patch(&path, &json!({})).await.expect(200);
    assert_eq!(same["metadata"], metadata["metadata"]);
    assert_eq!(app.thread(&id).await["metadata"], metadata["metadata"]);

    // Cleared settings fall back to the service defaults in the context.
    let context: Value = serde_json::from_str(&app.context(&id, "").await).unwrap();
    assert_eq!(context["model"], DEFAULT_MODEL);
    assert_eq!(context["reasoning"], json!({"enabled": true}));

    app.patch(&path, &json!({"bogus": 1}))
        .await
        .expect_error(400, "invalid_request");
    app.patch(&path, &json!({"reasoning_replay": "sometimes"}))
        .await
        .expect_error(400, "invalid_request");
    let unknown = uuid::Uuid::now_v7();
    app.patch(&format!("/v1/threads/{unknown}"), &json!({"system": "x"}))
        .await
        .expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_thread_with_its_messages_and_turns() {
    let app = spawn_app().await;
    let keep = app.new_thread_id(&json!({})).await;
    app.turn_ok(&keep, &json!({"input": "keep me"})).await;
    let id = app.new_thread_id(&json!({})).await;
    let turn = app.turn_ok(&id, &json!({"input": "hello"})).await;
    let turn_id = id_of(&turn);
    let user_id = turn["input_message_ids"][0].as_str().unwrap().to_owned();
    let assistant_id = turn["output_message_id"].as_str().unwrap().to_owned();

    let deleted = app.delete(&format!("/v1/threads/{id}")).await.expect(200);
    assert_eq!(
        deleted,
        json!({"id": id, "object": "thread.deleted", "deleted": true})
    );

    for path in [
        format!("/v1/threads/{id}"),
        format!("/v1/threads/{id}/messages"),
        format!("/v1/threads/{id}/messages/{user_id}"),
        format!("/v1/threads/{id}/messages/{assistant_id}"),
        format!("/v1/threads/{id}/messages/{assistant_id}/reasoning_details"),
        format!("/v1/threads/{id}/turns"),
        format!("/v1/threads/{id}/turns/{turn_id}"),
        format!("/v1/threads/{id}/context"),
    ] {
        app.get(&path).await.expect_error(404, "not_found");
    }
    app.delete(&format!("/v1/threads/{id}"))
        .await
        .expect_error(404, "not_found");
    app.turn(&id, &json!({"input": "again"}))
        .await
        .expect_error(404, "not_found");

    // The other thread is untouched.
    let list = app.get("/v1/threads").await.expect(200);
    let ids: Vec<String> = list["data"].as_array().unwrap().iter().map(id_of).collect();
    assert_eq!(ids, vec![keep.clone()]);
    assert_eq!(app.messages(&keep).await.len(), 2);
    assert_eq!(app.turns(&keep).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_usage_totals_sum_completed_turns_only() {
    let app = spawn_app_with(Opts::default().args(&["--upstream-attempts", "1"])).await;
    let id = app.new_thread_id(&json!({})).await;
    let mut turns = Vec::new();
    turns.push(app.turn_ok(&id, &json!({"input": "one"})).await);
    turns.push(app.turn_ok(&id, &json!({"input": "two"})).await);
    app.fake.push(fake_openrouter::Reply::raw(
        500,
        r#"{"error":{"message":"boom","code":500}}"#,
    ));
    app.turn(&id, &json!({"input": "three"}))
        .await
        .expect_error(502, "upstream_error");
    turns.push(app.turn_ok(&id, &json!({})).await);

    let sum = |pointer: &str| -> u64 {
        turns
            .iter()
            .map(|t| t["usage"].pointer(pointer).and_then(Value::as_u64).unwrap())
            .sum()
    };
    let thread = app.thread(&id).await;
    let usage = &thread["usage"];
    assert_eq!(
        usage["prompt_tokens"].as_u64().unwrap(),
        sum("/prompt_tokens")
    );
    assert_eq!(
        usage["completion_tokens"].as_u64().unwrap(),
        sum("/completion_tokens")
    );
    assert_eq!(
        usage["reasoning_tokens"].as_u64().unwrap(),
        sum("/completion_tokens_details/reasoning_tokens")
    );
    let cost: f64 = turns
        .iter()
        .map(|t| t["usage"]["cost"].as_f64().unwrap())
        .sum();
    let reported = usage["cost"].as_f64().unwrap();
    assert!((reported - cost).abs() < 1e-9, "cost {reported} vs {cost}");
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    // three user messages and three assistant replies: the failed turn added none.
    assert_eq!(thread["message_count"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_omit_absent_fields_instead_of_null() {
    let app = spawn_app_with(Opts::default().args(&["--upstream-attempts", "1"])).await;
    let id = app
        .new_thread_id(&json!({
            "params": {"tools": [{"type": "function", "function": {"name": "clock", "parameters": {"type": "object", "properties": {}}}}]}
        }))
        .await;
    // A tool-call reply has `content: null`, the one null the contract keeps.
    let first = app
        .turn_ok(&id, &json!({"input": "what time is it?"}))
        .await;
    assert!(first["output"]["content"].is_null());
    let call_id = first["output"]["tool_calls"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.turn_ok(
        &id,
        &json!({"input": {"role": "tool", "tool_call_id": call_id, "content": "noon"}}),
    )
    .await;
    app.fake.push(fake_openrouter::Reply::raw(
        400,
        r#"{"error":{"message":"bad","code":400}}"#,
    ));
    app.turn(&id, &json!({"input": "fail"}))
        .await
        .expect_error(502, "upstream_error");

    assert_no_nulls(&app.thread(&id).await, &[]);
    for message in app.messages(&id).await {
        assert_no_nulls(&message, &["content"]);
        assert_eq!(message["object"], "message");
        assert_uuid_v7(message["id"].as_str().unwrap());
        assert_timestamp(&message["created_at"]);
    }
    for turn in app.turns(&id).await {
        assert_no_nulls(&turn, &[]);
        if let Some(output) = turn.get("output") {
            assert_no_nulls(output, &["content"]);
        }
        let detail = app.turn_detail(&id, &id_of(&turn)).await.json();
        assert_no_nulls(&detail, &[]);
        assert_no_nulls(&detail["upstream"], &[]);
    }
}
