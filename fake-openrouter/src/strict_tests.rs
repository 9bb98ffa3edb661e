//! Strict mode accepts exact bytes and rejects anything re-serialised.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;

use super::*;
use crate::generate::Generation;
use crate::recordings::load_fixture;
use crate::request::parse;

/// The raw `reasoning_details` text of a generated reply to a tool request, plus its tool call id.
fn handed_out(memory: &mut Memory) -> (String, String) {
    let request = r#"{"model":"deepseek/deepseek-v3.2-exp","messages":[{"role":"user","content":"Weather in Florence?"}],
        "tools":[{"type":"function","function":{"name":"weather"}}]}"#;
    let body = Generation::new(&parse(request).unwrap()).completion_body();
    remember_body(memory, &body);
    let start = body.find(r#""reasoning_details":"#).unwrap() + r#""reasoning_details":"#.len();
    let details = body[start..body.find("}]}}]").unwrap() + 2].to_owned();
    let id = serde_json::from_str::<Value>(&body).unwrap()["choices"][0]["message"]["tool_calls"]
        [0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (details, id)
}

fn follow_up(assistant_extra: &str, id: &str) -> String {
    format!(
        r#"{{"messages":[{{"role":"user","content":"Weather in Florence?"}},{{"role":"assistant","content":null,"tool_calls":[{{"id":"{id}","type":"function","function":{{"name":"weather","arguments":"{{}}"}}}}]{assistant_extra}}},{{"role":"tool","tool_call_id":"{id}","content":"40 C"}}]}}"#
    )
}

fn raw_message(error: &str) -> String {
    let value: Value = serde_json::from_str(error).unwrap();
    assert_eq!(value["error"]["message"], "Provider returned error");
    assert_eq!(value["error"]["code"], 400);
    assert_eq!(value["error"]["metadata"]["provider_name"], "DeepSeek");
    let raw: Value =
        serde_json::from_str(value["error"]["metadata"]["raw"].as_str().unwrap()).unwrap();
    assert_eq!(raw["error"]["type"], "invalid_request_error");
    raw["error"]["message"].as_str().unwrap().to_owned()
}

#[test]
fn exact_bytes_are_accepted() {
    let mut memory = Memory::default();
    let (details, id) = handed_out(&mut memory);
    assert!(details.starts_with(r#"[{"type":"reasoning.text","text":"The user wrote"#));
    assert!(details.contains("\\u00e9"));
    let request = follow_up(&format!(r#","reasoning_details":{details}"#), &id);
    assert_eq!(check(&memory, &request), Ok(()));
    // Whitespace around the value in the request is not part of the value's bytes.
    let spaced = follow_up(&format!(r#", "reasoning_details" :  {details} "#), &id);
    assert_eq!(check(&memory, &spaced), Ok(()));
}

#[test]
fn reserialised_details_are_rejected() {
    let mut memory = Memory::default();
    let (details, id) = handed_out(&mut memory);
    let value: Value = serde_json::from_str(&details).unwrap();
    // serde_json sorts the keys and writes `é` raw instead of `\u00e9`.
    let reordered = serde_json::to_string(&value).unwrap();
    let pretty = serde_json::to_string_pretty(&value).unwrap();
    let spaced = details.replace(r#""index":0"#, r#""index": 0"#);
    for altered in [reordered, pretty, spaced] {
        assert_ne!(altered, details);
        let request = follow_up(&format!(r#","reasoning_details":{altered}"#), &id);
        let error = check(&memory, &request).unwrap_err();
        assert_eq!(
            raw_message(&error),
            "reasoning_details of message 1 were altered or dropped"
        );
    }
}

#[test]
fn tool_call_turn_must_return_its_reasoning() {
    let mut memory = Memory::default();
    let (_, id) = handed_out(&mut memory);
    let error = check(&memory, &follow_up("", &id)).unwrap_err();
    assert_eq!(
        raw_message(&error),
        "Missing reasoning_content field in the assistant message at message index 1"
    );
    assert!(check(&memory, &follow_up(r#","reasoning":null"#, &id)).is_err());
    // `reasoning` alone satisfies DeepSeek's rule.
    assert_eq!(
        check(&memory, &follow_up(r#","reasoning":"thought""#, &id)),
        Ok(())
    );
    // A tool call the fake never handed out with reasoning is not its business.
    assert_eq!(check(&memory, &follow_up("", "call_other")), Ok(()));
}

#[test]
fn unknown_details_and_empty_memory() {
    let memory = Memory::default();
    let request = r#"{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b","reasoning_details":[]},{"role":"user","content":"c"}]}"#;
    assert!(check(&memory, request).is_err());
    let plain = r#"{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b","reasoning_details":null}]}"#;
    assert_eq!(check(&memory, plain), Ok(()));
    let bad = r#"{"messages":[{"role":"assistant","tool_calls":{}}]}"#;
    let error: Value = serde_json::from_str(&check(&memory, bad).unwrap_err()).unwrap();
    assert_eq!(error["error"]["code"], 400);
}

#[test]
fn recorded_bodies_are_remembered_verbatim() {
    let kimi = load_fixture("fantasy/TestOpenRouterCommon/kimi/tool.yaml").unwrap();
    let mut memory = Memory::default();
    remember_body(&mut memory, &kimi[0].response_body);
    assert_eq!(memory.reasoning_details.len(), 1);
    assert!(memory.reasoning_tool_calls.contains("functions.weather:0"));
    // The real client (fantasy) sent the details back with sorted keys: strict mode says no,
    // although the real provider accepted it.
    assert!(check(&memory, &kimi[1].request_body).is_err());
    let original = memory.reasoning_details.iter().next().unwrap().clone();
    let sent = &kimi[1].request_body;
    let end = r#""type":"reasoning.text"}]"#;
    let reordered = &sent[sent.find(r#"[{"format""#).unwrap()..sent.find(end).unwrap() + end.len()];
    let fixed = sent.replacen(reordered, &original, 1);
    assert_eq!(check(&memory, &fixed), Ok(()));
}

#[test]
fn error_bodies_and_sse_are_ignored() {
    let mut memory = Memory::default();
    remember_body(&mut memory, r#"{"error":{"message":"x","code":429}}"#);
    remember_body(&mut memory, "data: {}\n\ndata: [DONE]\n\n");
    remember_body(
        &mut memory,
        "\n         \n{\"choices\":[{\"message\":{\"content\":\"a\",\"reasoning\":null}}]}",
    );
    assert!(memory.reasoning_details.is_empty() && memory.reasoning_tool_calls.is_empty());
}
