//! Messages: importing history at thread creation, appending without a model call, reading
//! them back exactly as sent.

use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_messages_get_gapless_seqs_and_keep_their_exact_bytes() {
    let app = spawn_app().await;
    let created = app
        .create_thread(&json!({"messages": [{"role": "system", "content": "sys"}]}))
        .await;
    let id = id_of(&created);
    assert_eq!(created["message_count"], 1);

    // Raw text so odd-but-valid JSON reaches the service as written.
    let body = r#"{"messages": [
        {"role": "user", "content": [ {"type":"text", "text":"caf\u00e9 \ud83d\ude00"} ,{"type":"image_url","image_url":{"url":"data:,x"}}], "name": "ada"},
        {"role": "assistant", "content": null, "tool_calls": [{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\": 1.50e3}"}}],
         "reasoning": "hm \u00e9", "reasoning_details": [ {"type":"reasoning.text","text":"t"} ], "model": "m/x"},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"}
    ]}"#;
    let resp = app
        .send_text(
            reqwest::Method::POST,
            &format!("/v1/threads/{id}/messages"),
            body,
        )
        .await;
    let list = resp.expect(201);
    assert_eq!(list["object"], "list");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let seqs: Vec<u64> = data.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![2, 3, 4]);
    for m in data {
        assert_eq!(m["object"], "message");
        assert_eq!(m["thread_id"], id.as_str());
        assert_no_nulls(m, &["content"]);
    }

    let sent = raw_items(&raw_at(body, &["messages"]).unwrap());
    let answered = raw_items(&raw_at(&resp.text, &["data"]).unwrap());
    for (i, (sent, answered)) in sent.iter().zip(&answered).enumerate() {
        let sent = raw_fields(sent);
        let answered = raw_fields(answered);
        for key in ["content", "tool_calls", "reasoning", "reasoning_details"] {
            assert_eq!(sent.get(key), answered.get(key), "message {i} field {key}");
        }
        // GET one message gives the same bytes.
        let mid: String = serde_json::from_str(&answered["id"]).unwrap();
        let one = app.get(&format!("/v1/threads/{id}/messages/{mid}")).await;
        assert_eq!(one.status, 200, "{one:?}");
        assert_eq!(raw_fields(&one.text), answered, "GET message {i}");
    }
    let assistant_id = id_of(&data[1]);
    assert_eq!(data[1]["model"], "m/x");
    assert_eq!(data[0]["name"], "ada");
    assert_eq!(data[2]["tool_call_id"], "call_1");
    assert_reasoning_endpoint(
        &app,
        &id,
        &assistant_id,
        r#"[ {"type":"reasoning.text","text":"t"} ]"#,
    )
    .await;
    // No reasoning_details: 404.
    app.get(&format!(
        "/v1/threads/{id}/messages/{}/reasoning_details",
        id_of(&data[0])
    ))
    .await
    .expect_error(404, "not_found");

    let thread = app.thread(&id).await;
    assert_eq!(thread["message_count"], 4);
    assert_eq!(thread["last_message_id"], data[2]["id"]);

    // Appending does not call the model.
    assert!(app.fake.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_one_thread_are_not_found_through_another() {
    let app = spawn_app().await;
    let a = app
        .new_thread_id(&json!({"messages": [{"role": "user", "content": "in a"}]}))
        .await;
    let b = app.new_thread_id(&json!({})).await;
    let message = id_of(&app.messages(&a).await[0]);
    app.get(&format!("/v1/threads/{b}/messages/{message}"))
        .await
        .expect_error(404, "not_found");
    app.get(&format!(
        "/v1/threads/{a}/messages/{}",
        uuid::Uuid::now_v7()
    ))
    .await
    .expect_error(404, "not_found");
    app.get(&format!("/v1/threads/{a}/messages/not-a-uuid"))
        .await
        .expect_error(400, "invalid_request");
    // Ids are case-insensitive UUIDs.
    app.get(&format!(
        "/v1/threads/{}/messages/{}",
        a.to_uppercase(),
        message.to_uppercase()
    ))
    .await
    .expect(200);
}
