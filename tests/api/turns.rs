//! Turns: what reaches the upstream, what is stored, tool-call round trips, the context
//! preview, and how thread, turn and service settings combine.

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_stores_input_and_reply_and_sends_the_whole_thread_upstream() {
    let app = spawn_app().await;
    let id = app
        .new_thread_id(&json!({"system": "You are terse.", "model": "m/alpha"}))
        .await;
    let turn = app.turn_ok(&id, &json!({"input": "Hello there"})).await;
    assert_uuid_v7(&id_of(&turn));
    assert_eq!(turn["object"], "turn");
    assert_eq!(turn["thread_id"], id.as_str());
    assert_eq!(turn["model"], "m/alpha");
    assert_timestamp(&turn["created_at"]);
    assert_timestamp(&turn["completed_at"]);
    assert!(turn["latency_ms"].is_u64(), "{turn}");
    assert!(turn["usage"]["prompt_tokens"].is_u64(), "{turn}");
    assert!(turn["generation_id"].as_str().unwrap().starts_with("gen-"));
    assert_no_nulls(&turn, &[]);
    let inputs = turn["input_message_ids"].as_array().unwrap();
    assert_eq!(inputs.len(), 1);

    let output = &turn["output"];
    assert_eq!(output["id"], turn["output_message_id"]);
    assert_eq!(output["role"], "assistant");
    assert_eq!(output["seq"], 2);
    assert_eq!(output["turn_id"], turn["id"]);
    assert_eq!(output["content"], "Reply #1 to: Hello there");
    assert_eq!(output["finish_reason"], "stop");
    assert_eq!(output["provider"], "DeepSeek");
    assert_eq!(output["generation_id"], turn["generation_id"]);
    // The upstream's dated slug is what the message reports.
    assert!(
        output["model"].as_str().unwrap().starts_with("m/alpha-"),
        "{output}"
    );

    let requests = app.fake.requests();
    assert_eq!(requests.len(), 1);
    let sent = requests[0].json();
    assert_eq!(requests[0].path, "/api/v1/chat/completions");
    assert_eq!(sent["model"], "m/alpha");
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hello there"}
        ])
    );
    assert_eq!(sent["reasoning"], json!({"enabled": true}));
    assert_eq!(sent["session_id"], id.as_str());
    assert!(
        sent.get("stream").is_none() || sent["stream"] == false,
        "{sent}"
    );

    let messages = app.messages(&id).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["id"], inputs[0]);
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["content"], "Hello there");
    assert_eq!(messages[1], *output);

    // The second turn carries the first exchange, assistant reasoning included.
    let again = app.turn_ok(&id, &json!({"input": "And again"})).await;
    let second = app.fake.requests()[1].body.clone();
    let sent = sent_messages(&second);
    assert_eq!(sent.len(), 4, "{second}");
    let assistant = raw_fields(&sent[2]);
    let stored = raw_fields(
        &app.get(&format!("/v1/threads/{id}/messages/{}", id_of(output)))
            .await
            .text,
    );
    for key in ["content", "reasoning", "reasoning_details"] {
        assert_eq!(
            assistant.get(key),
            stored.get(key),
            "{key} replayed: {second}"
        );
        assert!(assistant.contains_key(key), "{key} missing: {second}");
    }
    let thread = app.thread(&id).await;
    assert_eq!(thread["message_count"], 4);
    assert_eq!(thread["last_message_id"], again["output_message_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_input_may_be_a_string_a_message_an_array_or_nothing() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let cases: [(Value, usize); 6] = [
        (json!({"input": "plain text"}), 1),
        (
            json!({"input": {"role": "user", "content": [{"type": "text", "text": "parts"}]}}),
            1,
        ),
        (
            json!({"input": [
                {"role": "system", "content": "extra rule"},
                {"role": "user", "content": "two at once", "name": "bob"}
            ]}),
            2,
        ),
        (json!({"input": ""}), 0),
        (json!({"input": []}), 0),
        (json!({}), 0),
    ];
    let mut expected_messages = 0;
    for (i, (body, n)) in cases.iter().enumerate() {
        let turn = app.turn_ok(&id, body).await;
        assert_eq!(
            turn["input_message_ids"].as_array().unwrap().len(),
            *n,
            "case {i}"
        );
        expected_messages += n + 1;
        let sent = app.fake.requests()[i].json();
        let msgs = sent["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), expected_messages - 1, "case {i}: {sent}");
        if let Some(input) = body.get("input").filter(|v| v.is_object()) {
            assert_eq!(msgs.last().unwrap(), input, "case {i}");
        }
    }
    assert_eq!(app.messages(&id).await.len(), expected_messages);
    // An empty body is a turn without input too.
    let turn = app
        .send(
            reqwest::Method::POST,
            &format!("/v1/threads/{id}/turns"),
            None,
            None,
        )
        .await
        .expect(200);
    assert_eq!(turn["input_message_ids"], json!([]));
}

/// A string `input` is content like any other: stored, returned and sent upstream as the
/// client wrote it, escapes included, not decoded and written out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_string_input_keeps_its_exact_bytes() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let literal = r#""caf\u00e9 \/ \ud83d\ude00 tab\t""#;
    let body = format!(r#"{{"input": {literal}}}"#);
    let turn = app.turn_with(&id, &body, &[]).await.expect(200);
    let input_id = turn["input_message_ids"][0].as_str().unwrap().to_owned();
    let stored = app
        .get(&format!("/v1/threads/{id}/messages/{input_id}"))
        .await;
    assert_eq!(raw_at(&stored.text, &["content"]).unwrap(), literal);
    assert_eq!(stored.json()["content"], "caf\u{e9} / \u{1f600} tab\t");
    let sent = &app.fake.requests()[0].body;
    assert!(sent.contains(&format!(r#""content":{literal}"#)), "{sent}");
    let context = app.context(&id, "").await;
    assert!(context.contains(literal), "{context}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_call_round_trip_with_the_generated_reply() {
    let app = spawn_app_with(Opts::default().strict()).await;
    let tools = json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }
    }]);
    let id = app.new_thread_id(&json!({})).await;
    let first = app
        .turn_ok(&id, &json!({"input": "Weather in Oslo?", "params": {"tools": tools, "tool_choice": "auto"}}))
        .await;
    let output = &first["output"];
    assert_eq!(output["finish_reason"], "tool_calls");
    assert!(output["content"].is_null(), "{output}");
    let call = &output["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let call_id = call["id"].as_str().unwrap().to_owned();
    let first_sent = app.fake.requests()[0].json();
    assert_eq!(first_sent["tools"], tools);
    assert_eq!(first_sent["tool_choice"], "auto");

    let stored = app
        .get(&format!("/v1/threads/{id}/messages/{}", id_of(output)))
        .await
        .text;
    let stored = raw_fields(&stored);
    assert_eq!(stored["content"], "null");

    let second = app
        .turn_ok(
            &id,
            &json!({
                "input": {"role": "tool", "tool_call_id": call_id, "content": "{\"temp\": 21}"},
                "params": {"tools": tools}
            }),
        )
        .await;
    assert_eq!(second["output"]["finish_reason"], "stop");
    assert!(second["output"]["content"].is_string());

    let requests = app.fake.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.reply_status == 200));
    let sent = sent_messages(&requests[1].body);
    assert_eq!(sent.len(), 3, "{}", requests[1].body);
    let assistant = raw_fields(&sent[1]);
    assert_eq!(assistant["role"], r#""assistant""#);
    for key in ["content", "tool_calls", "reasoning", "reasoning_details"] {
        assert_eq!(
            assistant.get(key),
            stored.get(key),
            "assistant {key} replayed exactly"
        );
    }
    let tool: Value = serde_json::from_str(&sent[2]).unwrap();
    assert_eq!(
        tool,
        json!({"role": "tool", "tool_call_id": call_id, "content": "{\"temp\": 21}"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_endpoint_shows_exactly_the_body_the_next_turn_sends() {
    let app = spawn_app().await;
    let id = app
        .new_thread_id(&json!({
            "system": "sys",
            "model": "m/ctx",
            "reasoning": {"effort": "low"},
            "params": {"top_p": 0.9, "max_tokens": 50, "temperature": 0.5},
            "messages": [{"role": "user", "content": "from import"}]
        }))
        .await;
    let context = app.context(&id, "").await;
    assert_eq!(
        keys_in_order(&context),
        [
            "model",
            "messages",
            "reasoning",
            "max_tokens",
            "temperature",
            "top_p",
            "session_id"
        ],
        "{context}"
    );
    let value: Value = serde_json::from_str(&context).unwrap();
    assert_eq!(value["session_id"], id.as_str());
    assert_eq!(value["reasoning"], json!({"effort": "low"}));

    // A turn without input sends exactly the previewed bytes.
    app.turn_ok(&id, &json!({})).await;
    assert_eq!(app.fake.requests()[0].body, context);

    // The preview after the turn is again the next request, byte for byte.
    let context = app.context(&id, "").await;
    app.turn_ok(&id, &json!({})).await;
    assert_eq!(app.fake.requests()[1].body, context);

    // Overrides as query parameters (reasoning and params as JSON text)...
    let query = "?model=m%2Fother&reasoning=%7B%22effort%22%3A%22high%22%7D&params=%7B%22temperature%22%3A1%2C%22seed%22%3A7%7D&reasoning_replay=none";
    let overridden = app.context(&id, query).await;
    let v: Value = serde_json::from_str(&overridden).unwrap();
    assert_eq!(v["model"], "m/other");
    assert_eq!(
        raw_at(&overridden, &["reasoning"]).unwrap(),
        r#"{"effort":"high"}"#
    );
    assert_eq!(v["temperature"], 1);
    assert_eq!(v["seed"], 7);
    assert_eq!(v["top_p"], 0.9, "turn params merge over thread params");
    assert!(
        !overridden.contains("reasoning_details"),
        "replay none: {overridden}"
    );
    // ...or as a JSON body, with the same result.
    let by_body = app
        .send_text(
            reqwest::Method::GET,
            &format!("/v1/threads/{id}/context"),
            r#"{"model":"m/other","reasoning":{"effort":"high"},"params":{"temperature":1,"seed":7},"reasoning_replay":"none"}"#,
        )
        .await;
    assert_eq!(by_body.status, 200, "{by_body:?}");
    assert_eq!(by_body.text, overridden);
    // The preview calls nothing and stores nothing.
    assert_eq!(app.fake.requests().len(), 2);
    assert_eq!(app.messages(&id).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_params_merge_key_by_key_and_are_forwarded_verbatim() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    // Raw text: number spellings must reach the upstream unchanged.
    let resp = app
        .send_text(
            reqwest::Method::PATCH,
            &format!("/v1/threads/{id}"),
            r#"{"params":{"temperature":0.50,"max_tokens":100,"stop":["\u000a"],"provider":{"order":["b","a"]}}}"#,
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");

    app.send_text(
        reqwest::Method::POST,
        &format!("/v1/threads/{id}/turns"),
        r#"{"input":"hi","params":{"temperature":1.0e0,"seed":7}}"#,
    )
    .await
    .expect(200);
    let body = app.fake.requests()[0].body.clone();
    let fields = raw_fields(&body);
    assert_eq!(
        fields["temperature"], "1.0e0",
        "turn value wins, verbatim: {body}"
    );
    assert_eq!(fields["max_tokens"], "100");
    assert_eq!(fields["seed"], "7");
    assert_eq!(fields["stop"], r#"["\u000a"]"#);
    assert_eq!(fields["provider"], r#"{"order":["b","a"]}"#);
    assert_eq!(fields["session_id"], format!("\"{id}\""));
    assert_eq!(fields["model"], format!("\"{DEFAULT_MODEL}\""));
    assert_eq!(fields["reasoning"], r#"{"enabled":true}"#);

    // Turn params are for that turn only; a session_id in params replaces the thread id.
    app.turn_ok(
        &id,
        &json!({"input": "again", "params": {"session_id": "mine"}}),
    )
    .await;
    let fields = raw_fields(&app.fake.requests()[1].body);
    assert_eq!(fields["temperature"], "0.50");
    assert!(!fields.contains_key("seed"));
    assert_eq!(fields["session_id"], r#""mine""#);
    assert_eq!(app.fake.requests()[1].body.matches("session_id").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_defaults_come_from_flags() {
    let app = spawn_app_with(Opts::default().args(&[
        "--default-model",
        "x-ai/grok-code-fast-1",
        "--default-reasoning",
        r#"{"effort":"minimal"}"#,
    ]))
    .await;
    let id = app.new_thread_id(&json!({})).await;
    let turn = app.turn_ok(&id, &json!({"input": "hi"})).await;
    assert_eq!(turn["model"], "x-ai/grok-code-fast-1");
    let fields = raw_fields(&app.fake.requests()[0].body);
    assert_eq!(fields["model"], r#""x-ai/grok-code-fast-1""#);
    assert_eq!(fields["reasoning"], r#"{"effort":"minimal"}"#);
    // A turn's own reasoning wins over the thread's and the service's.
    app.turn_ok(
        &id,
        &json!({"input": "hi", "reasoning": {"max_tokens": 64}}),
    )
    .await;
    assert_eq!(
        raw_fields(&app.fake.requests()[1].body)["reasoning"],
        r#"{"max_tokens":64}"#
    );
}

/// The turn a POST answers (or a stream's `turn.completed` carries) is the turn as stored: a
/// later GET reads the same fields, byte for byte, plus its audit record. The closing write
/// builds the answer from what it wrote rather than reading the row back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_turn_answered_is_the_turn_stored() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({"model": "m/alpha"})).await;
    let plain = app.turn_ok(&id, &json!({"input": "first"})).await;
    let keyed = app
        .turn_with(
            &id,
            r#"{"input":"second","model":"m/beta"}"#,
            &[("idempotency-key", "same-turn-7")],
        )
        .await
        .expect(200);
    let streamed = app
        .stream_turn(&id, &json!({"input": "third", "stream": true}))
        .await
        .completed();
    for answered in [&plain, &keyed, &streamed] {
        let turn_id = id_of(answered);
        let mut stored = app.turn_detail(&id, &turn_id).await.json();
        assert!(stored["upstream"].is_object(), "{stored}");
        stored.as_object_mut().unwrap().remove("upstream");
        assert_eq!(
            &stored, answered,
            "answered and stored differ for {turn_id}"
        );
        let listed = app
            .turns(&id)
            .await
            .into_iter()
            .find(|t| t["id"] == turn_id.as_str())
            .unwrap();
        for field in [
            "status",
            "input_message_ids",
            "model",
            "created_at",
            "completed_at",
        ] {
            assert_eq!(listed[field], answered[field], "{field} of {turn_id}");
        }
    }
}
