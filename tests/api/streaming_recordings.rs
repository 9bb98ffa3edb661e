//! Real recorded OpenRouter streams replayed through a streaming turn: the merged
//! `reasoning_details` must look like the non-streaming twin's (block count, types, keys,
//! index values) and hold the text of the streamed fragments; tool calls are the streamed
//! ones; and the next turn sends the merged bytes exactly as the API returns them.

use std::collections::{BTreeMap, BTreeSet};

use fake_openrouter::recordings::{load_fixture, Exchange};
use serde_json::{json, Map, Value};

use crate::helpers::*;
use crate::streaming::{audit_transcript, data_of, stored_message};

/// One reasoning block as expected from walking the streamed fragments.
#[derive(Debug, Default)]
struct Block {
    kind: String,
    keys: BTreeSet<String>,
    /// `text` or `summary`, joined from the fragments' raw string bytes.
    joined: String,
    /// The last non-empty `signature`, raw.
    signature: Option<String>,
    /// The first `data`, raw.
    data: Option<String>,
}

/// Everything a client can learn from a recorded stream by reading its chunks.
#[derive(Debug, Default)]
struct StreamFacts {
    blocks: Vec<Block>,
    reasoning: Option<String>,
    content: Option<String>,
    /// By tool-call index: id (raw), name (raw), arguments joined (raw interior).
    calls: BTreeMap<u64, (String, String, String)>,
}

fn interior(raw: &str) -> &str {
    raw.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not a string: {raw}"))
}

fn facts(sse: &str) -> StreamFacts {
    let mut facts = StreamFacts::default();
    for data in data_of(sse) {
        let Some(choices) = raw_at(&data, &["choices"]) else {
            continue;
        };
        for choice in raw_items(&choices) {
            let Some(delta) = raw_at(&choice, &["delta"]) else {
                continue;
            };
            let delta = raw_fields(&delta);
            for (key, slot) in [
                ("content", &mut facts.content),
                ("reasoning", &mut facts.reasoning),
            ] {
                if let Some(value) = delta.get(key).filter(|v| v.starts_with('"')) {
                    slot.get_or_insert_with(String::new)
                        .push_str(interior(value));
                }
            }
            for fragment in delta
                .get("reasoning_details")
                .map(|d| raw_items(d))
                .unwrap_or_default()
            {
                push_fragment(&mut facts.blocks, &raw_fields(&fragment));
            }
            for call in delta
                .get("tool_calls")
                .map(|c| raw_items(c))
                .unwrap_or_default()
            {
                let call = raw_fields(&call);
                let index: u64 = call.get("index").map_or(0, |i| i.parse().unwrap());
                let slot = facts.calls.entry(index).or_default();
                if let Some(id) = call.get("id") {
                    slot.0 = id.clone();
                }
                if let Some(function) = call.get("function").map(|f| raw_fields(f)) {
                    if let Some(name) = function.get("name") {
                        slot.1 = name.clone();
                    }
                    if let Some(arguments) = function.get("arguments") {
                        slot.2.push_str(interior(arguments));
                    }
                }
            }
        }
    }
    facts
}

fn push_fragment(blocks: &mut Vec<Block>, fragment: &BTreeMap<String, String>) {
    let kind = interior(&fragment["type"]).to_owned();
    let extends = matches!(kind.as_str(), "reasoning.text" | "reasoning.summary")
        && blocks.last().is_some_and(|b| b.kind == kind);
    if !extends {
        blocks.push(Block {
            kind,
            ..Block::default()
        });
    }
    let block = blocks.last_mut().unwrap();
    block.keys.extend(fragment.keys().cloned());
    for key in ["text", "summary"] {
        if let Some(text) = fragment.get(key).filter(|t| t.starts_with('"')) {
            block.joined.push_str(interior(text));
        }
    }
    if let Some(signature) = fragment
        .get("signature")
        .filter(|s| *s != "\"\"" && *s != "null")
    {
        block.signature = Some(signature.clone());
    }
    if block.data.is_none() {
        block.data = fragment.get("data").cloned();
    }
}

/// `(type, key set, index)` of each block of a `reasoning_details` array.
fn structure(details: &str) -> Vec<(String, BTreeSet<String>, String)> {
    raw_items(details)
        .iter()
        .map(|block| {
            let fields = raw_fields(block);
            (
                fields["type"].clone(),
                fields.keys().cloned().collect(),
                fields.get("index").cloned().unwrap_or_default(),
            )
        })
        .collect()
}

fn twin_details(twin: &str) -> Option<String> {
    let exchanges = load_fixture(twin).unwrap();
    raw_at(
        &exchanges[0].response_body,
        &["choices", "0", "message", "reasoning_details"],
    )
    .filter(|d| d != "null")
}

/// The turn request fields the recorded client sent, as thread settings and turn params.
fn recorded_setup(exchange: &Exchange) -> (Value, Value) {
    let first: Value = serde_json::from_str(&exchange.request_body).unwrap();
    let mut thread = json!({"model": first["model"]});
    let messages = first["messages"].as_array().unwrap();
    if let Some(system) = messages.iter().find(|m| m["role"] == "system") {
        thread["system"] = system["content"].clone();
    }
    let user = messages.iter().find(|m| m["role"] == "user").unwrap()["content"].clone();
    let mut params = Map::new();
    for key in [
        "tools",
        "tool_choice",
        "max_tokens",
        "max_completion_tokens",
    ] {
        if let Some(value) = first.get(key) {
            params.insert(key.to_owned(), value.clone());
        }
    }
    let mut turn = json!({"input": {"role": "user", "content": user}, "params": params});
    if let Some(reasoning) = first.get("reasoning").filter(|r| !r.is_null()) {
        turn["reasoning"] = reasoning.clone();
    }
    (thread, turn)
}

/// Streams a recording through the service and checks the stored reply against the
/// fragments and against the non-streaming twin; then runs the next turn (the recorded
/// tool result when there is one) and checks what it sends back.
async fn stream_recording(path: &str, twin: &str) {
    let exchanges = load_fixture(path).unwrap();
    let recorded = &exchanges[0];
    assert!(recorded.is_sse && recorded.status == 200, "{path}");
    let expected = facts(&recorded.response_body);
    let (thread_body, turn_body) = recorded_setup(recorded);

    let app = spawn_app().await;
    let id = app.new_thread_id(&thread_body).await;
    app.fake.push(recorded.reply());
    let streamed = app.stream_turn(&id, &turn_body).await;
    streamed.assert_well_formed();
    let turn = streamed.completed();
    assert_eq!(
        streamed.chunks(),
        data_of(&recorded.response_body),
        "{path}: chunks relayed verbatim"
    );
    assert_eq!(
        audit_transcript(&app, &id, &id_of(&turn)).await,
        recorded.response_body,
        "{path}: audit transcript"
    );
    let sent = app.fake.requests()[0].json();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["model"], thread_body["model"]);

    let output_id = turn["output_message_id"].as_str().unwrap().to_owned();
    let one = stored_message(&app, &id, &output_id).await;
    let stored = raw_fields(&one.text);

    // Reasoning: the twin's structure, the fragments' text.
    match (twin_details(twin), stored.get("reasoning_details")) {
        (None, None) => assert!(expected.blocks.is_empty(), "{path}"),
        (Some(twin_details), Some(merged)) => {
            let merged_structure = structure(merged);
            let twin_structure = structure(&twin_details);
            assert_eq!(
                merged_structure, twin_structure,
                "{path}: merged reasoning_details vs the non-streaming twin\nmerged: {merged}"
            );
            let blocks = raw_items(merged);
            assert_eq!(blocks.len(), expected.blocks.len(), "{path}: {merged}");
            for (position, (block, want)) in blocks.iter().zip(&expected.blocks).enumerate() {
                let fields = raw_fields(block);
                assert_eq!(interior(&fields["type"]), want.kind, "{path}");
                assert_eq!(fields["index"], position.to_string(), "{path}");
                assert_eq!(
                    fields.keys().cloned().collect::<BTreeSet<_>>(),
                    want.keys,
                    "{path}: keys of block {position}"
                );
                if let Some(text) = fields.get("text").or_else(|| fields.get("summary")) {
                    assert_eq!(
                        interior(text),
                        want.joined,
                        "{path}: block {position} text is the fragments joined"
                    );
                }
                assert_eq!(fields.get("signature"), want.signature.as_ref(), "{path}");
                assert_eq!(fields.get("data"), want.data.as_ref(), "{path}");
            }
            assert_reasoning_endpoint(&app, &id, &output_id, merged).await;
        }
        (twin, merged) => panic!("{path}: twin {twin:?}, merged {merged:?}"),
    }
    match &expected.reasoning {
        Some(text) => assert_eq!(stored["reasoning"], format!("\"{text}\""), "{path}"),
        None => assert!(
            stored.get("reasoning").is_none_or(|r| r == "null"),
            "{path}"
        ),
    }

    // Tool calls: the streamed ids, names and arguments, in index order.
    let calls: Vec<String> = expected
        .calls
        .values()
        .map(|(id, name, arguments)| {
            format!(
                r#"{{"id":{id},"type":"function","function":{{"name":{name},"arguments":"{arguments}"}}}}"#
            )
        })
        .collect();
    if calls.is_empty() {
        assert!(!stored.contains_key("tool_calls"), "{path}: {}", one.text);
        let content = expected.content.clone().unwrap_or_default();
        assert_eq!(stored["content"], format!("\"{content}\""), "{path}");
    } else {
        let calls = format!("[{}]", calls.join(","));
        assert_eq!(stored["tool_calls"], calls, "{path}: tool_calls");
        assert_eq!(stored["finish_reason"], r#""tool_calls""#, "{path}");
        match expected.content.as_deref() {
            None | Some("") => assert_eq!(stored["content"], "null", "{path}"),
            Some(text) => assert_eq!(stored["content"], format!("\"{text}\""), "{path}"),
        }
    }

    // The next turn: the recorded tool results (streamed again when the recording was),
    // else a plain follow-up.
    let next_input = match exchanges.get(1) {
        Some(second) => {
            app.fake.push(second.reply());
            let request: Value = serde_json::from_str(&second.request_body).unwrap();
            let tools: Vec<Value> = request["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["role"] == "tool")
                .map(|m| json!({"role": "tool", "tool_call_id": m["tool_call_id"], "content": m["content"]}))
                .collect();
            assert!(!tools.is_empty(), "{path}");
            Value::Array(tools)
        }
        None => json!("and then?"),
    };
    let next = app.stream_turn(&id, &json!({"input": next_input})).await;
    next.completed();
    let requests = app.fake.requests();
    assert_eq!(requests.len(), 2, "{path}");
    let assistant = sent_messages(&requests[1].body)
        .iter()
        .map(|m| raw_fields(m))
        .find(|m| m["role"] == r#""assistant""#)
        .unwrap_or_else(|| panic!("{path}: no assistant message sent back"));
    for key in ["reasoning_details", "reasoning", "tool_calls", "content"] {
        assert_eq!(
            assistant.get(key),
            stored.get(key),
            "{path}: {key} sent back exactly as stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_streamed_thinking_with_late_signature_merges_like_the_non_streaming_answer() {
    stream_recording(
        "fantasy/TestOpenRouterThinking/claude-sonnet-4-sig/thinking-streaming.yaml",
        "fantasy/TestOpenRouterThinking/claude-sonnet-4-sig/thinking.yaml",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_streamed_text_and_encrypted_reasoning_merges_like_the_non_streaming_answer() {
    stream_recording(
        "fantasy/TestOpenRouterThinking/gemini-3-pro-preview/thinking-streaming.yaml",
        "fantasy/TestOpenRouterThinking/gemini-3-pro-preview/thinking.yaml",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpt5_streamed_summary_and_encrypted_reasoning_merges_like_the_non_streaming_answer() {
    stream_recording(
        "fantasy/TestOpenRouterThinking/gpt-5/thinking-streaming.yaml",
        "fantasy/TestOpenRouterThinking/gpt-5/thinking.yaml",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kimi_streamed_reasoning_keeps_its_first_fragment_and_merges_like_the_non_streaming_answer()
{
    stream_recording(
        "fantasy/TestOpenRouterCommon/kimi/tool_streaming.yaml",
        "fantasy/TestOpenRouterCommon/kimi/tool.yaml",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deepseek_streamed_tool_call_is_stored_like_the_non_streaming_answer() {
    stream_recording(
        "fantasy/TestOpenRouterCommon/deepseek/deepseek-v3.2/tool_streaming.yaml",
        "fantasy/TestOpenRouterCommon/deepseek/deepseek-v3.2/tool.yaml",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deepseek_two_streamed_parallel_tool_calls_are_joined_by_index() {
    stream_recording(
        "fantasy/TestOpenRouterCommon/deepseek/deepseek-v3.2/multi_tool_streaming.yaml",
        "fantasy/TestOpenRouterCommon/deepseek/deepseek-v3.2/tool.yaml",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_stream_with_empty_opening_fragment_and_signature_merges_into_one_block() {
    // No non-streaming twin was recorded for these: the Anthropic shape of the fantasy
    // recording is the reference.
    stream_recording(
        "pydantic-ai/test_openrouter_streaming_reasoning.yaml",
        "fantasy/TestOpenRouterThinking/claude-sonnet-4-sig/thinking.yaml",
    )
    .await;
    stream_recording(
        "ai-sdk-provider/UKtNtbos06U",
        "fantasy/TestOpenRouterThinking/claude-sonnet-4-sig/thinking.yaml",
    )
    .await;
}
