//! Reasoning byte for byte: real recorded OpenRouter answers replayed through the service,
//! synthetic bodies full of byte-level traps, imported history, and the replay policies.

use std::collections::BTreeMap;

use fake_openrouter::recordings::load_fixture;
use fake_openrouter::{Reply, PADDING_UNIT};
use serde_json::{json, Map, Value};

use crate::helpers::*;

/// The assistant messages of an upstream request body, each as its fields' exact bytes.
fn sent_assistants(body: &str) -> Vec<BTreeMap<String, String>> {
    sent_messages(body)
        .iter()
        .map(|m| raw_fields(m))
        .filter(|m| m.get("role").map(String::as_str) == Some(r#""assistant""#))
        .collect()
}

fn is_absent_or_null(fields: &BTreeMap<String, String>, key: &str) -> bool {
    fields.get(key).is_none_or(|v| v == "null")
}

/// Replays a recorded two-turn tool conversation: the recorded first answer (padding
/// included) is scripted, then the tool result turn must send the assistant message back
/// with the recorded bytes of `reasoning_details`, `reasoning`, `content` and `tool_calls`.
async fn replay_recorded_tool_conversation(path: &str) {
    let exchanges = load_fixture(path).unwrap();
    assert!(exchanges.len() >= 2, "{path}");
    assert!(!exchanges[0].is_sse && exchanges[0].status == 200, "{path}");
    assert!(
        exchanges[0].response_body.starts_with(PADDING_UNIT),
        "{path}: the recording is padded"
    );
    let first: Value = serde_json::from_str(&exchanges[0].request_body).unwrap();
    let model = first["model"].as_str().unwrap().to_owned();
    let recorded_messages = first["messages"].as_array().unwrap().clone();
    let system = recorded_messages
        .iter()
        .find(|m| m["role"] == "system")
        .map(|m| m["content"].clone());
    let user = recorded_messages
        .iter()
        .find(|m| m["role"] == "user")
        .unwrap()["content"]
        .clone();
    let mut params = Map::new();
    for key in ["tools", "tool_choice", "max_tokens"] {
        if let Some(value) = first.get(key) {
            params.insert(key.to_owned(), value.clone());
        }
    }
    let mut turn_body = json!({"params": params});
    if let Some(reasoning) = first.get("reasoning").filter(|r| !r.is_null()) {
        turn_body["reasoning"] = reasoning.clone();
    }

    // The recorded answer as exact bytes, field by field.
    let recorded_message =
        raw_fields(&raw_at(&exchanges[0].response_body, &["choices", "0", "message"]).unwrap());
    let recorded_calls = raw_items(&recorded_message["tool_calls"]);
    let call: Value = serde_json::from_str(&recorded_calls[0]).unwrap();
    let second: Value = serde_json::from_str(&exchanges[1].request_body).unwrap();
    let tool_message = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap()
        .clone();
    assert_eq!(tool_message["tool_call_id"], call["id"], "{path}");

    let app = spawn_app_with(Opts::default().strict()).await;
    let mut thread = json!({"model": model});
    if let Some(system) = &system {
        thread["system"] = system.clone();
    }
    let id = app.new_thread_id(&thread).await;

    app.fake.push(exchanges[0].reply());
    let mut body = turn_body.clone();
    body["input"] = user.clone();
    let turn1 = app.turn_ok(&id, &body).await;
    assert_eq!(turn1["output"]["finish_reason"], "tool_calls", "{path}");
    let message_id = turn1["output_message_id"].as_str().unwrap().to_owned();

    // Stored exactly: the message, the turn's output, the reasoning_details endpoint.
    let one = app
        .get(&format!("/v1/threads/{id}/messages/{message_id}"))
        .await;
    assert_eq!(one.status, 200, "{one:?}");
    let stored = raw_fields(&one.text);
    let turn_text = app.turn_detail(&id, &id_of(&turn1)).await.text;
    let output = raw_fields(&raw_at(&turn_text, &["output"]).unwrap());
    for key in ["content", "tool_calls", "reasoning", "reasoning_details"] {
        let Some(recorded) = recorded_message
            .get(key)
            .filter(|v| *v != "null" || key == "content")
        else {
            assert!(
                is_absent_or_null(&stored, key),
                "{path}: {key} in {}",
                one.text
            );
            continue;
        };
        assert_eq!(stored.get(key), Some(recorded), "{path}: stored {key}");
        assert_eq!(output.get(key), Some(recorded), "{path}: turn output {key}");
    }
    match recorded_message.get("reasoning_details") {
        Some(details) => assert_reasoning_endpoint(&app, &id, &message_id, details).await,
        None => {
            app.get(&format!(
                "/v1/threads/{id}/messages/{message_id}/reasoning_details"
            ))
            .await
            .expect_error(404, "not_found");
        }
    }

    // The audit record holds the exact request sent and the exact padded answer.
    let requests = app.fake.requests();
    assert_eq!(
        raw_at(&turn_text, &["upstream", "request"]).unwrap(),
        requests[0].body
    );
    assert!(
        turn_text.contains(&exchanges[0].response_body),
        "{path}: audit response is not the exact padded body"
    );

    // The first request sends the conversation the recorded client sent.
    let sent = requests[0].json();
    assert_eq!(sent["model"], model.as_str());
    assert_eq!(sent["messages"], Value::Array(recorded_messages), "{path}");
    for key in ["tools", "tool_choice", "max_tokens", "reasoning"] {
        if let Some(value) = first.get(key).filter(|v| !v.is_null()) {
            assert_eq!(&sent[key], value, "{path}: {key}");
        }
    }

    // Turn 2: the tool result, answered with the recorded second response.
    app.fake.push(exchanges[1].reply());
    let mut body = turn_body.clone();
    body["input"] = json!({
        "role": "tool",
        "tool_call_id": tool_message["tool_call_id"],
        "content": tool_message["content"]
    });
    let turn2 = app.turn_ok(&id, &body).await;
    let requests = app.fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].reply_status, 200,
        "{path}: strict fake refused the replay"
    );
    let recorded_answer2 =
        raw_fields(&raw_at(&exchanges[1].response_body, &["choices", "0", "message"]).unwrap());
    assert_eq!(
        raw_fields(
            &raw_at(
                &app.turn_detail(&id, &id_of(&turn2)).await.text,
                &["output"]
            )
            .unwrap()
        )
        .get("content"),
        recorded_answer2.get("content"),
        "{path}: second answer's content"
    );

    let messages = sent_messages(&requests[1].body);
    let expected_len = usize::from(system.is_some()) + 3;
    assert_eq!(messages.len(), expected_len, "{path}: {}", requests[1].body);
    let assistant = raw_fields(&messages[expected_len - 2]);
    assert_eq!(assistant["role"], r#""assistant""#);
    assert_eq!(
        assistant.get("content"),
        Some(&recorded_message["content"]),
        "{path}: content"
    );
    assert_eq!(
        assistant.get("tool_calls"),
        Some(&recorded_message["tool_calls"]),
        "{path}: tool_calls"
    );
    for key in ["reasoning", "reasoning_details"] {
        match recorded_message.get(key).filter(|v| *v != "null") {
            Some(recorded) => {
                assert_eq!(assistant.get(key), Some(recorded), "{path}: replayed {key}")
            }
            None => assert!(is_absent_or_null(&assistant, key), "{path}: {key} invented"),
        }
    }
    let tool: Value = serde_json::from_str(&messages[expected_len - 1]).unwrap();
    assert_eq!(
        tool,
        json!({"role": "tool", "tool_call_id": tool_message["tool_call_id"], "content": tool_message["content"]})
    );
    assert_eq!(requests[1].json()["model"], model.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_signed_reasoning_is_replayed_byte_for_byte() {
    replay_recorded_tool_conversation(
        "fantasy/TestOpenRouterThinking/claude-sonnet-4-sig/thinking.yaml",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_encrypted_reasoning_is_replayed_byte_for_byte() {
    replay_recorded_tool_conversation(
        "fantasy/TestOpenRouterThinking/gemini-3-pro-preview/thinking.yaml",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpt5_summary_and_encrypted_reasoning_is_replayed_byte_for_byte() {
    replay_recorded_tool_conversation("fantasy/TestOpenRouterThinking/gpt-5/thinking.yaml").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kimi_text_reasoning_is_replayed_byte_for_byte() {
    replay_recorded_tool_conversation("fantasy/TestOpenRouterCommon/kimi/tool.yaml").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deepseek_tool_call_without_reasoning_is_replayed_byte_for_byte() {
    replay_recorded_tool_conversation(
        "fantasy/TestOpenRouterCommon/deepseek/deepseek-v3.2/tool.yaml",
    )
    .await;
}

/// `reasoning_details` with every byte-level trap: key order, whitespace (newline, tab)
/// between tokens, `\u` escapes with a surrogate pair, `\/`, U+2028, raw non-ASCII, `1.50e3`,
/// `-0.0`, `1E-7`, an integer beyond u64, unknown fields and an unknown type.
const TRAP_DETAILS: &str = "[ {\"z\":1,\"type\":\"reasoning.text\",\"text\":\"caf\\u00e9 \\ud83d\\ude00 \\\"q\\\" \\/ \\u2028 \u{e9}\",\"format\":\"unknown\",\"index\":0,\"n\":1.50e3,\"neg\":-0.0,\"e\":1E-7,\"big\":123456789012345678901234567890} ,\n\t{\"type\":\"reasoning.encrypted\",\"data\":\"QUJD/+==\",\"id\":\"rs_1\",\"format\":\"openai-responses-v1\",\"index\":1,\"extra\":{\"nested\":[1,2.0,{\"b\":null,\"a\":true}]}},{\"type\":\"reasoning.future_kind\",\"payload\":\"\u{2713}\",\"index\":2}\n]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_reasoning_bytes_survive_storage_context_and_replay() {
    let app = spawn_app_with(Opts::default().strict()).await;
    let content = r#""Caf\u00e9 \ud83d\ude00 done""#;
    let reasoning = r#""think \u00e9 \"q\" \ud83d\ude00""#;
    let message = format!(
        r#"{{"role":"assistant","content":{content},"refusal":null,"reasoning":{reasoning},"reasoning_details":{TRAP_DETAILS}}}"#
    );
    let body = completion_body("test/reasoner-20250101", &message, "stop");
    assert_eq!(
        raw_at(&body, &["choices", "0", "message", "reasoning_details"]).unwrap(),
        TRAP_DETAILS
    );
    app.fake
        .push(Reply::recorded(200, body.clone()).with_padding(2));

    let id = app.new_thread_id(&json!({"model": "test/reasoner"})).await;
    let resp = app.turn(&id, &json!({"input": "think hard"})).await;
    let turn = resp.expect(200);
    let output = raw_fields(&raw_at(&resp.text, &["output"]).unwrap());
    assert_eq!(output["reasoning_details"], TRAP_DETAILS, "turn answer");
    assert_eq!(output["content"], content);
    assert_eq!(output["reasoning"], reasoning);

    let message_id = turn["output_message_id"].as_str().unwrap().to_owned();
    let one = app
        .get(&format!("/v1/threads/{id}/messages/{message_id}"))
        .await;
    let stored = raw_fields(&one.text);
    assert_eq!(stored["reasoning_details"], TRAP_DETAILS, "GET message");
    assert_eq!(stored["content"], content);
    assert_eq!(stored["reasoning"], reasoning);
    let listed = app.get(&format!("/v1/threads/{id}/messages")).await;
    let listed = raw_fields(&raw_at(&listed.text, &["data", "1"]).unwrap());
    assert_eq!(listed["reasoning_details"], TRAP_DETAILS, "list messages");
    assert_reasoning_endpoint(&app, &id, &message_id, TRAP_DETAILS).await;

    let context = app.context(&id, "").await;
    let in_context = &sent_assistants(&context)[0];
    assert_eq!(in_context["reasoning_details"], TRAP_DETAILS, "context");
    assert_eq!(in_context["content"], content);
    assert_eq!(in_context["reasoning"], reasoning);

    app.turn_ok(&id, &json!({"input": "and now?"})).await;
    let requests = app.fake.requests();
    assert_eq!(
        requests[1].reply_status, 200,
        "strict fake refused the replay"
    );
    let sent = &sent_assistants(&requests[1].body)[0];
    assert_eq!(sent["reasoning_details"], TRAP_DETAILS, "upstream request");
    assert_eq!(sent["content"], content);
    assert_eq!(sent["reasoning"], reasoning);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_assistant_reasoning_keeps_its_exact_bytes() {
    let app = spawn_app().await;
    let same = "[ {\"type\":\"reasoning.text\",\"text\":\"\\u00e9\\ud83d\\ude00\",\"signature\":\"sig==\" , \"n\": 1.50e3, \"m\": -0.0, \"u\":{\"k\":[]},\"x-unknown\":\"kept\"},\n {\"type\":\"reasoning.mystery\",\"blob\":[true,false,null]} ]";
    let orphan = r#"[{"type":"reasoning.text","text":"orphan \u00e9"}]"#;
    let tool_calls = r#"[ {"id":"call_9","type":"function","function":{"name":"f","arguments":"{\"x\": \"\\u00e9\"}"}} ]"#;
    let body = format!(
        "{{\"model\":\"test/importer\",\"messages\":[\n\
         {{\"role\":\"user\",\"content\":\"q\"}},\n\
         {{\"role\":\"assistant\",\"model\":\"test/importer\",\"content\":null,\"tool_calls\":{tool_calls},\"reasoning\":\"why \\ud83d\\ude00\",\"reasoning_details\"  :\t{same}}},\n\
         {{\"role\":\"tool\",\"tool_call_id\":\"call_9\",\"content\":\"done\"}},\n\
         {{\"role\":\"assistant\",\"content\":\"no model\",\"reasoning\":\"text only\",\"reasoning_details\":{orphan}}},\n\
         {{\"role\":\"user\",\"content\":\"next\"}}\n]}}"
    );
    let resp = app
        .send_text(reqwest::Method::POST, "/v1/threads", &body)
        .await;
    let thread = resp.expect(201);
    let id = id_of(&thread);
    assert_eq!(thread["message_count"], 5);

    let messages = app.messages(&id).await;
    let with_model = id_of(&messages[1]);
    let without_model = id_of(&messages[3]);
    assert_eq!(messages[1]["model"], "test/importer");
    assert!(messages[3].get("model").is_none());
    let stored = raw_fields(
        &app.get(&format!("/v1/threads/{id}/messages/{with_model}"))
            .await
            .text,
    );
    assert_eq!(stored["reasoning_details"], same);
    assert_eq!(stored["tool_calls"], tool_calls);
    assert_eq!(stored["content"], "null");
    assert_eq!(stored["reasoning"], r#""why \ud83d\ude00""#);
    assert_reasoning_endpoint(&app, &id, &with_model, same).await;
    assert_reasoning_endpoint(&app, &id, &without_model, orphan).await;

    // Same model: the imported bytes go upstream as they are; the message imported without
    // a model gets only its reasoning text.
    let context = app.context(&id, "").await;
    let assistants = sent_assistants(&context);
    assert_eq!(assistants[0]["reasoning_details"], same, "{context}");
    assert_eq!(assistants[0]["tool_calls"], tool_calls);
    assert_eq!(assistants[0]["content"], "null");
    assert_eq!(assistants[1]["reasoning"], r#""text only""#);
    assert!(
        !assistants[1].contains_key("reasoning_details"),
        "{context}"
    );

    app.turn_ok(&id, &json!({})).await;
    let sent = app.fake.requests()[0].body.clone();
    assert_eq!(sent, context, "the turn sends the previewed context");
    assert_eq!(sent_assistants(&sent)[0]["reasoning_details"], same);

    // reasoning_replay "all" sends even the model-less message's bytes.
    let all = app.context(&id, "?reasoning_replay=all").await;
    assert_eq!(sent_assistants(&all)[1]["reasoning_details"], orphan);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoning_replay_policies_and_model_switches() {
    let app = spawn_app_with(Opts::default().strict()).await;
    let id = app.new_thread_id(&json!({"model": "m/a"})).await;
    let t1 = app.turn_ok(&id, &json!({"input": "first"})).await;
    // The upstream reports a dated slug; it is still the model the turn requested.
    assert_ne!(t1["output"]["model"], "m/a");
    assert!(t1["output"]["model"].as_str().unwrap().starts_with("m/a-"));
    let a1 = raw_fields(
        &app.get(&format!(
            "/v1/threads/{id}/messages/{}",
            t1["output_message_id"].as_str().unwrap()
        ))
        .await
        .text,
    );
    assert!(
        a1.contains_key("reasoning_details") && a1.contains_key("reasoning"),
        "{a1:?}"
    );

    // Another model gets only the reasoning text.
    let t2 = app
        .turn_ok(&id, &json!({"input": "second", "model": "m/b"}))
        .await;
    assert_eq!(t2["model"], "m/b");
    let sent = sent_assistants(&app.fake.requests()[1].body);
    assert_eq!(sent[0].get("reasoning"), a1.get("reasoning"));
    assert!(!sent[0].contains_key("reasoning_details"), "{sent:?}");
    let a2 = raw_fields(
        &app.get(&format!(
            "/v1/threads/{id}/messages/{}",
            t2["output_message_id"].as_str().unwrap()
        ))
        .await
        .text,
    );

    // Back on m/a: its own details return, m/b's do not.
    app.turn_ok(&id, &json!({"input": "third"})).await;
    let sent = sent_assistants(&app.fake.requests()[2].body);
    assert_eq!(
        sent[0].get("reasoning_details"),
        a1.get("reasoning_details")
    );
    assert_eq!(sent[1].get("reasoning"), a2.get("reasoning"));
    assert!(!sent[1].contains_key("reasoning_details"));

    // "all": every message's details, whatever the model.
    app.turn_ok(
        &id,
        &json!({"input": "fourth", "model": "m/c", "reasoning_replay": "all"}),
    )
    .await;
    let sent = sent_assistants(&app.fake.requests()[3].body);
    assert_eq!(sent.len(), 3);
    assert_eq!(
        sent[0].get("reasoning_details"),
        a1.get("reasoning_details")
    );
    assert_eq!(
        sent[1].get("reasoning_details"),
        a2.get("reasoning_details")
    );
    assert!(sent.iter().all(|m| m.contains_key("reasoning_details")));

    // "none": neither reasoning nor reasoning_details, even for the same model.
    app.turn_ok(&id, &json!({"input": "fifth", "reasoning_replay": "none"}))
        .await;
    let body = app.fake.requests()[4].body.clone();
    for m in sent_assistants(&body) {
        assert!(
            !m.contains_key("reasoning") && !m.contains_key("reasoning_details"),
            "{body}"
        );
        assert!(m.contains_key("content"));
    }

    // The thread's setting is the default; a turn overrides it.
    app.patch(
        &format!("/v1/threads/{id}"),
        &json!({"reasoning_replay": "none"}),
    )
    .await
    .expect(200);
    let context = app.context(&id, "").await;
    assert!(!context.contains("reasoning_details"), "{context}");
    assert!(sent_assistants(&context)
        .iter()
        .all(|m| !m.contains_key("reasoning")));
    let context = app.context(&id, "?reasoning_replay=same_model").await;
    assert_eq!(
        sent_assistants(&context)[0].get("reasoning_details"),
        a1.get("reasoning_details")
    );
    app.turn_ok(
        &id,
        &json!({"input": "sixth", "reasoning_replay": "same_model"}),
    )
    .await;
    let sent = sent_assistants(&app.fake.requests()[5].body);
    assert_eq!(
        sent[0].get("reasoning_details"),
        a1.get("reasoning_details")
    );
    assert!(!sent[1].contains_key("reasoning_details"));
    assert!(app.fake.requests().iter().all(|r| r.reply_status == 200));
}
