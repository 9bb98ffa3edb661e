//! Input that looks hostile but is legitimately data: SQL metacharacters in every string
//! field are stored and returned verbatim and change nothing else; large requests within the
//! limits (2 MB prompt, 10,000 messages, full metadata, moderate nesting) are accepted.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::hostile::{nested_arrays, DROP, OR_TRUE};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_metacharacters_are_stored_verbatim_as_data() {
    let app = spawn_app().await;
    let key = create_key(&app.db_url, "sql", "sql").await;
    let bystander_key = create_key(&app.db_url, "bystander", "bystander").await;
    let api = keyed(&app.base, &key.key);
    let bystander = keyed(&app.base, &bystander_key.key);
    let bystander_thread = bystander
        .new_thread_id(&json!({"messages": [{"role": "user", "content": "untouched"}]}))
        .await;
    let bystander_before = bystander.snapshot().await;
    let tables = sqlite_query(
        &app.db_path(),
        "SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master ORDER BY name)",
    );

    let arguments = format!("{{\"q\":{}}}", serde_json::to_string(DROP).unwrap());
    let create = json!({
        "metadata": {DROP: OR_TRUE, OR_TRUE: DROP, "plain": "'; DELETE FROM service_keys; --"},
        "model": DROP,
        "system": OR_TRUE,
        "params": {DROP: OR_TRUE},
        "messages": [
            {"role": "user", "content": DROP, "name": OR_TRUE},
            {"role": "assistant", "content": OR_TRUE, "model": DROP,
             "reasoning": DROP,
             "tool_calls": [{"id": DROP, "type": "function",
                             "function": {"name": OR_TRUE, "arguments": arguments}}],
             "reasoning_details": [{"type": "reasoning.text", "text": DROP, "signature": OR_TRUE}]},
            {"role": "tool", "tool_call_id": DROP, "content": [{"type": "text", "text": OR_TRUE}]}
        ]
    });
    let thread = api.create_thread(&create).await;
    let id = id_of(&thread);
    assert_eq!(thread["metadata"], create["metadata"]);
    assert_eq!(thread["model"], DROP);
    assert_eq!(thread["system"], OR_TRUE);
    assert_eq!(thread["params"], create["params"]);
    let stored = api.messages(&id).await;
    assert_eq!(stored.len(), 3);
    for (got, sent) in stored.iter().zip(create["messages"].as_array().unwrap()) {
        for (field, value) in sent.as_object().unwrap() {
            assert_eq!(&got[field], value, "message field {field}: {got}");
        }
    }

    let patched = api
        .patch(
            &format!("/v1/threads/{id}"),
            &json!({"metadata": {"k": DROP}, "system": DROP}),
        )
        .await
        .expect(200);
    assert_eq!(patched["metadata"], json!({"k": DROP}));
    assert_eq!(patched["system"], DROP);

    // A turn whose model, input and Idempotency-Key are SQL; its repeat is a replay.
    let body = json!({"input": OR_TRUE, "model": OR_TRUE}).to_string();
    let idempotency = "'; DROP TABLE turns; --";
    let first = api
        .turn_with(&id, &body, &[("Idempotency-Key", idempotency)])
        .await
        .expect(200);
    assert_eq!(first["status"], "completed", "{first}");
    assert_eq!(first["model"], OR_TRUE);
    let again = api
        .turn_with(&id, &body, &[("Idempotency-Key", idempotency)])
        .await
        .expect(200);
    assert_eq!(id_of(&again), id_of(&first));
    let sent = app.fake.requests().last().unwrap().json();
    assert_eq!(sent["model"], OR_TRUE);
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": DROP})
    );
    assert_eq!(
        sent[DROP], OR_TRUE,
        "params key and value forwarded verbatim"
    );

    // Query parameters that are data.
    let context: Value = serde_json::from_str(
        &api.context(&id, &format!("?model={}", urlencode(DROP)))
            .await,
    )
    .unwrap();
    assert_eq!(context["model"], DROP);
    let resp = api
        .get(&format!(
            "/v1/threads/{id}/messages?after={}",
            urlencode(DROP)
        ))
        .await;
    resp.expect_error(400, "invalid_request");

    // Nothing else changed: one thread, every table still there, the bystander untouched.
    let list = api.get("/v1/threads?limit=100").await.expect(200);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        sqlite_query(
            &app.db_path(),
            "SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master ORDER BY name)"
        ),
        tables
    );
    assert_eq!(
        sqlite_query(&app.db_path(), "SELECT count(*) FROM threads"),
        "2"
    );
    assert_eq!(
        sqlite_query(
            &app.db_path(),
            "SELECT count(*) FROM service_keys WHERE revoked_at IS NULL"
        ),
        "2"
    );
    assert_eq!(bystander.snapshot().await, bystander_before);
    bystander.thread(&bystander_thread).await;
    assert_eq!(sqlite_integrity(&app.db_path()), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_requests_within_the_limits_are_accepted() {
    let app = spawn_app().await;
    // 2 MB system prompt under the default 8 MiB body limit.
    let system = "s".repeat(2 << 20);
    let thread = api_thread(&app, &json!({"system": system})).await;
    assert_eq!(thread["system"].as_str().map(str::len), Some(2 << 20));
    // Exactly 10,000 messages in one request.
    let messages: Vec<Value> = (0..10_000)
        .map(|i| json!({"role": "user", "content": format!("m{i}")}))
        .collect();
    let many = api_thread(&app, &json!({"messages": messages})).await;
    assert_eq!(many["message_count"], 10_000);
    // Metadata at its limits.
    let metadata: serde_json::Map<String, Value> = (0..16)
        .map(|i| (format!("{i:0>64}"), json!("v".repeat(512))))
        .collect();
    let full = api_thread(&app, &json!({"metadata": metadata})).await;
    assert_eq!(full["metadata"].as_object().unwrap().len(), 16);
    // Nesting well under serde_json's limit of 128 is fine.
    let nested = format!(r#"{{"params":{{"x":{}}}}}"#, nested_arrays(100));
    app.send_text(Method::POST, "/v1/threads", &nested)
        .await
        .expect(201);
    app.turn_ok(&id_of(&thread), &json!({"input": "hi"})).await;
}

async fn api_thread(app: &App, body: &Value) -> Value {
    app.post("/v1/threads", body).await.expect(201)
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
