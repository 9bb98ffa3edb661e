//! Generated replies parse and have the recorded DeepSeek / Kimi reasoning shape.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;

use super::*;
use crate::request::parse;

fn request(body: &str) -> ChatRequest {
    parse(body).unwrap()
}

const ASK: &str = r#"{"model":"deepseek/deepseek-v3.2-exp","messages":[{"role":"system","content":"Be brief"},{"role":"user","content":"Say \"hi\" in Portuguese"}]}"#;

#[test]
fn completion_has_the_recorded_shape_and_key_order() {
    let generation = Generation::new(&request(ASK));
    let body = generation.completion_body();
    let value: Value = serde_json::from_str(&body).unwrap();
    assert!(value["id"].as_str().unwrap().starts_with("gen-"));
    assert_eq!(
        value["id"].as_str().unwrap().len(),
        "gen-".len() + 10 + 1 + 20
    );
    assert_eq!(value["object"], "chat.completion");
    assert_eq!(value["model"], "deepseek/deepseek-v3.2-exp-20250929");
    assert_eq!(value["provider"], "DeepSeek");
    let choice = &value["choices"][0];
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["native_finish_reason"], "stop");
    let message = &choice["message"];
    assert_eq!(message["content"], "Reply #1 to: Say \"hi\" in Portuguese");
    let reasoning = message["reasoning"].as_str().unwrap();
    assert!(reasoning.contains("Say \"hi\" in Portuguese") && reasoning.contains("Café"));
    assert!(reasoning.contains('\u{2713}'));
    let details = message["reasoning_details"].as_array().unwrap();
    assert_eq!(details.len(), 1);
    assert_eq!(details[0]["type"], "reasoning.text");
    assert_eq!(details[0]["text"], reasoning);
    assert_eq!(details[0]["format"], "unknown");
    assert_eq!(details[0]["index"], 0);
    let usage = &value["usage"];
    assert!(
        usage["completion_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(usage["cost"].as_f64().unwrap() > 0.0);
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );
    // Byte-level traps and key order as recorded.
    assert!(body.contains(
        r#""reasoning":"The user wrote \"Say \"hi\" in Portuguese\" (turn 1). Caf\u00e9-style na\u00efve check of résumé bytes — fine ✓","#
    ));
    assert!(body.contains(r#","system_fingerprint":null,"choices":[{"index":0,"logprobs":null,"finish_reason":"stop","native_finish_reason":"stop","message":{"role":"assistant","content":"#));
    assert!(body.contains(r#","refusal":null,"reasoning":""#));
    assert!(body.contains(r#""format":"unknown","index":0}]}}],"usage":{"prompt_tokens":"#));
    assert!(body.ends_with(r#""image_tokens":0,"audio_tokens":0}}}"#));
}

#[test]
fn content_is_deterministic_per_request() {
    let a = Generation::new(&request(ASK)).completion_body();
    let b = Generation::new(&request(ASK)).completion_body();
    let message =
        |body: &str| serde_json::from_str::<Value>(body).unwrap()["choices"][0]["message"].clone();
    assert_eq!(message(&a), message(&b));
}

#[test]
fn tool_request_gets_a_tool_call_with_reasoning() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"weather?"}],
        "tools":[{"type":"function","function":{"name":"weather","parameters":{}}},{"type":"function","function":{"name":"other"}}]}"#;
    let generation = Generation::new(&request(body));
    let value: Value = serde_json::from_str(&generation.completion_body()).unwrap();
    let choice = &value["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let message = &choice["message"];
    assert_eq!(message["content"], Value::Null);
    let call = &message["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["index"], 0);
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(call["function"]["arguments"], "{}");
    let id = call["id"].as_str().unwrap();
    assert!(
        id.starts_with("call_") && id.len() == 37 && id[5..].chars().all(|c| c.is_ascii_hexdigit())
    );
    assert!(message["reasoning_details"].is_array());
}

#[test]
fn reasoning_off_gives_null_reasoning_and_no_details() {
    let body =
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning":{"enabled":false}}"#;
    let value: Value =
        serde_json::from_str(&Generation::new(&request(body)).completion_body()).unwrap();
    let message = &value["choices"][0]["message"];
    assert_eq!(message["reasoning"], Value::Null);
    assert!(message.get("reasoning_details").is_none());
    assert_eq!(
        value["usage"]["completion_tokens_details"]["reasoning_tokens"],
        0
    );
}

#[test]
fn long_and_odd_user_text_is_quoted_safely() {
    let text = "line one\nline \u{1}two\t\\ \u{e9}".repeat(10);
    let body = serde_json::json!({"messages":[{"role":"user","content":text}]}).to_string();
    let value: Value =
        serde_json::from_str(&Generation::new(&request(&body)).completion_body()).unwrap();
    let content = value["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.ends_with('\u{2026}'));
    assert_eq!(
        content.chars().count(),
        "Reply #1 to: ".len() + QUOTE_CHARS + 1
    );
}

#[test]
fn stream_events_have_the_recorded_shape() {
    let body =
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hello there"}]}"#;
    let generation = Generation::new(&request(body));
    let events = generation.stream_events();
    assert_eq!(events[0], ": OPENROUTER PROCESSING\n\n");
    assert_eq!(events.last().unwrap(), "data: [DONE]\n\n");
    let chunks: Vec<Value> = events
        .iter()
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| !d.starts_with("[DONE]"))
        .map(|d| serde_json::from_str(d.trim_end()).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut reasoning = String::new();
    let mut content = String::new();
    for chunk in &chunks {
        let delta = &chunk["choices"][0]["delta"];
        if let Some(fragment) = delta["reasoning"].as_str() {
            let detail = &delta["reasoning_details"][0];
            assert_eq!(detail["text"], fragment);
            assert_eq!(
                (detail["index"].as_u64(), detail["format"].as_str()),
                (Some(0), Some("unknown"))
            );
            reasoning.push_str(fragment);
        }
        content.push_str(delta["content"].as_str().unwrap_or(""));
    }
    let fragments = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"]["reasoning"].is_string())
        .count();
    assert!(fragments > 5);
    assert_eq!(content, "Reply #1 to: hello there");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], serde_json::json!([]));
    assert!(usage["usage"]["cost"].is_number());
    let merged: Value =
        serde_json::from_str(&generation.merged_reasoning_details().unwrap()).unwrap();
    assert_eq!(merged[0]["text"], reasoning.as_str());
}

#[test]
fn stream_tool_call_deltas() {
    let body = r#"{"stream":true,"messages":[{"role":"user","content":"w"}],"tools":[{"type":"function","function":{"name":"weather"}}]}"#;
    let events = Generation::new(&request(body)).stream_events();
    let joined = events.concat();
    assert!(joined.contains(r#""tool_calls":[{"index":0,"id":"call_"#));
    assert!(joined.contains(r#""function":{"name":"weather","arguments":""}}]"#));
    assert!(joined.contains(r#""tool_calls":[{"index":0,"function":{"arguments":"{}"}}]"#));
    assert!(joined.contains(r#""finish_reason":"tool_calls","native_finish_reason":"tool_calls""#));
}

#[test]
fn escape_matches_serde_json() {
    let text = "a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{1}i\u{1f}j\u{7f}k\u{e9}/\u{1F60A}";
    assert_eq!(
        format!("\"{}\"", escape(text)),
        serde_json::to_string(text).unwrap()
    );
}

#[test]
fn dollars_are_plain_decimals() {
    assert_eq!(dollars(566), "0.00000566");
    assert_eq!(dollars(13_200), "0.000132");
    assert_eq!(dollars(0), "0");
    assert_eq!(dollars(150_000_000), "1.5");
}
