//! The loader against every recording in the fixtures directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn all() -> Vec<(PathBuf, Vec<Exchange>)> {
    let paths = recording_paths(&fixtures_dir()).unwrap();
    // 15 fantasy + 4 pydantic-ai cassettes + 4 ai-sdk-provider directories.
    assert_eq!(paths.len(), 23, "{paths:#?}");
    paths
        .into_iter()
        .map(|path| {
            let exchanges = load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!exchanges.is_empty(), "{}", path.display());
            (path, exchanges)
        })
        .collect()
}

#[test]
fn every_recording_loads_with_sane_status_and_bodies() {
    for (path, exchanges) in all() {
        for exchange in exchanges {
            let at = path.display();
            assert!(
                (200..600).contains(&exchange.status),
                "{at}: {}",
                exchange.status
            );
            let request: serde_json::Value = serde_json::from_str(&exchange.request_body)
                .unwrap_or_else(|e| panic!("{at}: request: {e}"));
            assert!(request["messages"].is_array(), "{at}");
            if exchange.is_sse {
                assert!(exchange.response_body.ends_with("data: [DONE]\n\n"), "{at}");
                for event in exchange.response_body.split_terminator("\n\n") {
                    match event.strip_prefix("data: ") {
                        Some("[DONE]") => {}
                        Some(data) => {
                            serde_json::from_str::<serde_json::Value>(data)
                                .unwrap_or_else(|e| panic!("{at}: {e}: {data}"));
                        }
                        None => assert_eq!(event, ": OPENROUTER PROCESSING", "{at}"),
                    }
                }
            } else {
                // serde_json skips the leading padding, like the clients OpenRouter targets.
                let body: serde_json::Value = serde_json::from_str(&exchange.response_body)
                    .unwrap_or_else(|e| panic!("{at}: response: {e}"));
                let expected = if exchange.status == 200 {
                    "choices"
                } else {
                    "error"
                };
                assert!(body.get(expected).is_some(), "{at}");
            }
        }
    }
}

#[test]
fn fantasy_bodies_are_byte_exact_with_padding() {
    let exchanges =
        load_fixture("fantasy/TestOpenRouterThinking/claude-sonnet-4-sig/thinking.yaml").unwrap();
    assert_eq!(exchanges.len(), 2);
    assert!(exchanges[0].response_body.starts_with("\n         \n"));
    assert!(!exchanges[0].is_sse);
    let simple =
        load_fixture("fantasy/TestOpenRouterCommon/deepseek/deepseek-v3.2/simple.yaml").unwrap();
    let padding = crate::PADDING_UNIT.repeat(5);
    assert!(simple[0].response_body.starts_with(&padding));
    assert!(simple[0].response_body[padding.len()..].starts_with(r#"{"id":"gen-1773323879-"#));
    // A non-BMP escape in the YAML (\U0001F60A) decodes to the raw emoji OpenRouter sent.
    assert!(simple[0]
        .response_body
        .contains("\"content\":\"Olá! \u{1F60A}\""));
    // YAML single-quoted request: '' is a quote, JSON escapes stay as they were.
    let kimi = load_fixture("fantasy/TestOpenRouterCommon/kimi/tool.yaml").unwrap();
    assert!(kimi[0]
        .request_body
        .contains(r#""What's the weather in Florence,Italy?""#));
    assert!(kimi[1]
        .request_body
        .contains(r#"as the location.","type":"reasoning.text"}]"#));
    assert!(kimi[1]
        .request_body
        .starts_with(r#"{"messages":[{"content":"You are"#));
}

#[test]
fn streaming_recordings_keep_their_sse_text() {
    let kimi = load_fixture("fantasy/TestOpenRouterCommon/kimi/tool_streaming.yaml").unwrap();
    assert!(kimi[0].is_sse);
    assert!(kimi[0].response_body.starts_with(
        ": OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\ndata: {\"id\":\"gen-1777319903-"
    ));
    let pydantic = load_fixture("pydantic-ai/test_openrouter_stream_error.yaml").unwrap();
    assert!(pydantic[0].is_sse);
    assert_eq!(
        pydantic[0]
            .response_body
            .matches(": OPENROUTER PROCESSING\n\n")
            .count(),
        17
    );
    assert!(pydantic[0]
        .response_body
        .contains(r#""error":{"code":400,"message":"Token limit reached"}"#));
}

#[test]
fn vcrpy_json_is_reserialised_in_recorded_key_order() {
    let errors = load_fixture("pydantic-ai/test_openrouter_errors_raised.yaml").unwrap();
    assert_eq!(errors.len(), 3);
    assert!(errors.iter().all(|e| e.status == 429 && !e.is_sse));
    assert!(errors[0].response_body.starts_with(r#"{"error":{"code":429,"message":"Provider returned error","metadata":{"provider_name":"Google","raw":"#));
    assert!(errors[0]
        .request_body
        .starts_with(r#"{"messages":[{"content":"Be helpful.","role":"system"}"#));
}

#[test]
fn aisdk_directories_load_raw_json_and_rebuild_sse() {
    let padded = load_fixture("ai-sdk-provider/3u9jN7ced3f").unwrap();
    assert_eq!(padded[0].status, 200);
    assert!(padded[0].response_body.starts_with("\n         \n"));
    let error = load_fixture("ai-sdk-provider/6gmSSczGYDL").unwrap();
    assert_eq!(error[0].status, 400);
    assert!(!error[0].is_sse);
    assert!(error[0]
        .request_body
        .starts_with(r#"{"model":"anthropic/claude-sonnet-4.5","messages":[{"role":"system""#));
    let stream = load_fixture("ai-sdk-provider/UKtNtbos06U").unwrap();
    assert!(stream[0].is_sse);
    let body = &stream[0].response_body;
    assert!(body.starts_with(": OPENROUTER PROCESSING\n\ndata: {\"id\":\"gen-1767762795-8PgS2ihUVura3xKYKXYG\",\"provider\":\"Google\""));
    let events: Vec<&str> = body.split_terminator("\n\n").collect();
    // 36 `json` lines, 2 comments, 1 `[DONE]`; the 36 timing lines leave no trace.
    assert_eq!(events.len(), 39);
    assert_eq!(events.iter().filter(|e| e.starts_with(": ")).count(), 2);
}

#[test]
fn jsonl_comment_forms_and_unknown_lines() {
    let log = "{\"comment\":\": X\\n\\n\"}\n{\"comment\":\"Y\"}\n{\"delay_ms\":3}\n{\"json\":{\"a\": [1, \"b c\"]}}\n{\"text\":\"[DONE]\"}\n";
    assert_eq!(
        aisdk::jsonl_to_sse(log).unwrap(),
        ": X\n\n: Y\n\ndata: {\"a\":[1,\"b c\"]}\n\ndata: [DONE]\n\n"
    );
    assert!(aisdk::jsonl_to_sse("{\"other\":1}").is_err());
    assert!(aisdk::jsonl_to_sse("not json").is_err());
}

#[test]
fn minify_keeps_strings_and_order() {
    assert_eq!(
        minify("{\n  \"z\": \"a \\\" b\",\n  \"a\": [ 1, 2 ]\n}"),
        "{\"z\":\"a \\\" b\",\"a\":[1,2]}"
    );
}

#[test]
fn replies_from_exchanges() {
    let stream =
        load_fixture("fantasy/TestOpenRouterCommon/deepseek/deepseek-v3.2/simple_streaming.yaml")
            .unwrap();
    assert_eq!(
        stream[0].reply(),
        Reply::sse(stream[0].response_body.clone())
    );
    let error = load_fixture("ai-sdk-provider/2Hns20Jrj6g").unwrap();
    assert_eq!(
        error[0].reply(),
        Reply::raw(400, error[0].response_body.clone())
    );
}
