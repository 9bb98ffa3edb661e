//! Streamed reasoning merged into the stored reply (SPEC section 4): text joined from the
//! fragments' raw bytes, a late signature kept in its block, encrypted and unknown fragments
//! as blocks of their own, blocks renumbered by position; and the merged bytes sent back
//! exactly on the next turn, also to a strict upstream.

use fake_openrouter::{Reply, SseEvent};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::streaming::{audit_transcript, chunk, data_of, sse_text, stored_message, usage_chunk};

/// Reasoning text fragments with escapes, tool-call deltas, then the signature (after the
/// tool calls, as Anthropic sends it), then an encrypted block, then a usage chunk whose
/// `finish_reason` is null.
fn reasoning_and_tool_stream() -> Vec<SseEvent> {
    let frag = |details: &str, reasoning: &str| {
        chunk(
            &format!(
                r#"{{"role":"assistant","content":"","reasoning":{reasoning},"reasoning_details":[{details}]}}"#
            ),
            None,
        )
    };
    vec![
        SseEvent::Comment("OPENROUTER PROCESSING".into()),
        SseEvent::Data(frag(
            r#"{"type":"reasoning.text","text":"Think \u00e9","format":"anthropic-claude-v1","index":0}"#,
            r#""Think \u00e9""#,
        )),
        SseEvent::Data(frag(
            r#"{"type":"reasoning.text","text":" \"hard\"\n","format":"anthropic-claude-v1","index":0}"#,
            r#"" \"hard\"\n""#,
        )),
        SseEvent::Data(chunk(
            r#"{"content":null,"tool_calls":[{"index":0,"id":"call_syn_1","type":"function","function":{"name":"lookup","arguments":""}}]}"#,
            None,
        )),
        SseEvent::Data(chunk(
            r#"{"content":null,"tool_calls":[{"index":0,"function":{"arguments":"{\"q\":"}}]}"#,
            None,
        )),
        SseEvent::Data(chunk(
            r#"{"content":null,"tool_calls":[{"index":0,"function":{"arguments":"\"caf\u00e9\"}"}}]}"#,
            None,
        )),
        SseEvent::Data(frag(
            r#"{"type":"reasoning.text","signature":"SIG/sig+==","format":"anthropic-claude-v1","index":0}"#,
            "null",
        )),
        SseEvent::Data(frag(
            r#"{"type":"reasoning.encrypted","data":"RU5D/+x==","id":"call_syn_1","format":"anthropic-claude-v1","index":0}"#,
            "null",
        )),
        SseEvent::Data(chunk(r#"{"content":null}"#, Some("tool_calls"))),
        SseEvent::Data(usage_chunk()),
        SseEvent::Done,
    ]
}

/// What SPEC section 4 makes of [`reasoning_and_tool_stream`]: the text joined from the raw
/// bytes, the late signature in its block, the encrypted fragment a block of its own,
/// blocks numbered by position.
const MERGED_REASONING: &str = concat!(
    r#"[{"type":"reasoning.text","text":"Think \u00e9 \"hard\"\n","format":"anthropic-claude-v1","index":0,"signature":"SIG/sig+=="},"#,
    r#"{"type":"reasoning.encrypted","data":"RU5D/+x==","id":"call_syn_1","format":"anthropic-claude-v1","index":1}]"#
);
const MERGED_TOOL_CALLS: &str = r#"[{"id":"call_syn_1","type":"function","function":{"name":"lookup","arguments":"{\"q\":\"caf\u00e9\"}"}}]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_reasoning_with_late_signature_and_encrypted_block_is_merged_and_replayed_exactly()
{
    let app = spawn_app().await;
    let tools = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]);
    let id = app
        .new_thread_id(&json!({"model": "test/streamer", "params": {"tools": tools}}))
        .await;
    let events = reasoning_and_tool_stream();
    app.fake.push(Reply::sse_events(events.clone()));
    let streamed = app.stream_turn(&id, &json!({"input": "look it up"})).await;
    let turn = streamed.completed();
    assert_eq!(streamed.chunks(), data_of(&sse_text(&events)));
    let output_id = turn["output_message_id"].as_str().unwrap().to_owned();

    let one = stored_message(&app, &id, &output_id).await;
    let stored = raw_fields(&one.text);
    assert_eq!(stored["reasoning_details"], MERGED_REASONING);
    assert_eq!(stored["reasoning"], r#""Think \u00e9 \"hard\"\n""#);
    assert_eq!(stored["tool_calls"], MERGED_TOOL_CALLS);
    assert_eq!(stored["content"], "null", "tool calls only: content null");
    assert_eq!(stored["finish_reason"], r#""tool_calls""#);
    assert_reasoning_endpoint(&app, &id, &output_id, MERGED_REASONING).await;
    // turn.completed shows the same bytes as the GET.
    let completed_output = raw_fields(&raw_at(&streamed.last().data, &["output"]).unwrap());
    assert_eq!(completed_output["reasoning_details"], MERGED_REASONING);
    assert_eq!(completed_output["tool_calls"], MERGED_TOOL_CALLS);
    assert_eq!(
        audit_transcript(&app, &id, &id_of(&turn)).await,
        sse_text(&events)
    );

    // The tool result goes back with the merged bytes exactly as the GET returns them.
    let follow = app
        .stream_turn(
            &id,
            &json!({"input": {"role": "tool", "tool_call_id": "call_syn_1", "content": "sunny"}}),
        )
        .await;
    follow.completed();
    let requests = app.fake.requests();
    assert_eq!(requests.len(), 2);
    let sent = sent_messages(&requests[1].body);
    assert_eq!(sent.len(), 3, "{}", requests[1].body);
    let assistant = raw_fields(&sent[1]);
    for key in ["reasoning_details", "tool_calls", "content", "reasoning"] {
        assert_eq!(assistant[key], stored[key], "replayed {key}");
    }
    let tool: Value = serde_json::from_str(&sent[2]).unwrap();
    assert_eq!(
        tool,
        json!({"role": "tool", "tool_call_id": "call_syn_1", "content": "sunny"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_tool_call_round_trip_replays_merged_reasoning_to_a_strict_upstream() {
    // The strict fake accepts back only the merged bytes of the fragments it streamed.
    let app = spawn_app_with(Opts::default().strict()).await;
    let tools = json!([{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}]);
    let id = app
        .new_thread_id(&json!({"model": "m/streamer", "params": {"tools": tools}}))
        .await;
    let first = app
        .stream_turn(&id, &json!({"input": "weather in Fl\u{f6}rence?"}))
        .await;
    let turn = first.completed();
    assert!(first.chunks().len() >= 5, "{}", first.text);
    let output = &turn["output"];
    assert_eq!(output["finish_reason"], "tool_calls");
    assert!(output["content"].is_null(), "{output}");
    let call_id = output["tool_calls"][0]["id"].as_str().unwrap().to_owned();
    let output_id = id_of(output);
    let stored = raw_fields(&stored_message(&app, &id, &output_id).await.text);
    let details = raw_items(&stored["reasoning_details"]);
    assert_eq!(details.len(), 1, "{}", stored["reasoning_details"]);
    assert!(stored["reasoning_details"].contains(r#""index":0"#));

    // The call ids and arguments are the streamed ones.
    let streamed_ids: Vec<String> = first
        .chunks()
        .iter()
        .filter_map(|c| {
            let v: Value = serde_json::from_str(c).ok()?;
            v["choices"][0]["delta"]["tool_calls"][0]["id"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(streamed_ids, vec![call_id.clone()]);
    assert_eq!(output["tool_calls"][0]["function"]["arguments"], "{}");

    let second = app
        .stream_turn(
            &id,
            &json!({"input": {"role": "tool", "tool_call_id": call_id, "content": "22 C"}}),
        )
        .await;
    second.completed();
    let requests = app.fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].reply_status, 200,
        "the strict fake refused the merged reasoning"
    );
    let assistant = raw_fields(&sent_messages(&requests[1].body)[1]);
    assert_eq!(assistant["reasoning_details"], stored["reasoning_details"]);
    assert_eq!(assistant["tool_calls"], stored["tool_calls"]);
    // A third, non-streaming turn still replays both assistant messages acceptably.
    app.turn_ok(&id, &json!({"input": "thanks"})).await;
    assert_eq!(app.fake.requests()[2].reply_status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fragment_types_fields_and_a_new_index_keep_their_own_blocks_in_order() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({"model": "test/streamer"})).await;
    let frag = |details: &str| {
        SseEvent::Data(chunk(
            &format!(r#"{{"role":"assistant","content":"","reasoning_details":[{details}]}}"#),
            None,
        ))
    };
    let events = vec![
        frag(
            r#"{"type":"reasoning.text","text":"A","format":"unknown","index":0,"x-extra":{"k":[1.50e3]}}"#,
        ),
        frag(r#"{"type":"reasoning.text","text":"B","format":"unknown","index":0}"#),
        frag(r#"{"type":"reasoning.text","text":"C","format":"unknown","index":1}"#),
        frag(r#"{"type":"reasoning.future","payload":"\u2713","index":0}"#),
        frag(r#"{"type":"reasoning.text","text":"D","format":"unknown","index":1}"#),
        SseEvent::Data(chunk(r#"{"content":"ok"}"#, Some("stop"))),
        SseEvent::Done,
    ];
    app.fake.push(Reply::sse_events(events));
    let turn = app
        .stream_turn(&id, &json!({"input": "x"}))
        .await
        .completed();
    let stored = raw_fields(
        &stored_message(&app, &id, turn["output_message_id"].as_str().unwrap())
            .await
            .text,
    );
    assert_eq!(
        stored["reasoning_details"],
        concat!(
            r#"[{"type":"reasoning.text","text":"AB","format":"unknown","index":0,"x-extra":{"k":[1.50e3]}},"#,
            r#"{"type":"reasoning.text","text":"C","format":"unknown","index":1},"#,
            r#"{"type":"reasoning.future","payload":"\u2713","index":2},"#,
            r#"{"type":"reasoning.text","text":"D","format":"unknown","index":3}]"#
        )
    );
}
