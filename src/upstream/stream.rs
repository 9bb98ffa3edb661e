//! Building the assistant message from a chat-completions stream.
//!
//! Strings (content, reasoning, tool-call arguments) are joined from their raw JSON
//! interiors, so the upstream's escapes are stored as sent; tool-call fragments are joined
//! by their `index`; `reasoning_details` fragments go through the merge rule of
//! `domain::reasoning`. A chunk carrying a top-level `error` or `finish_reason: "error"`
//! makes the whole turn a failure: half a reasoning block must never be replayed.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::wire::{usage_totals, Completion};
use crate::domain::json::ObjectWriter;
use crate::domain::raw::{self, present};
use crate::domain::reasoning::{string_interior, ReasoningMerger};

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default, borrow)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(default, borrow, deserialize_with = "present")]
    usage: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    /// Which choice (with `n` > 1 in the params, several are streamed interleaved).
    #[serde(default)]
    index: u64,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    native_finish_reason: Option<String>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    content: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    reasoning: Option<&'a RawValue>,
    #[serde(default, borrow)]
    reasoning_details: Option<Vec<&'a RawValue>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolCallDelta<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present", rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(default, borrow)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    name: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    arguments: Option<&'a RawValue>,
}

#[derive(Debug, Default)]
struct ToolCall {
    id: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    arguments: String,
}

/// Accumulates a stream's chunks into the reply they describe.
#[derive(Debug, Default)]
pub struct StreamAccumulator {
    id: Option<String>,
    model: Option<String>,
    provider: Option<String>,
    content: Option<String>,
    reasoning: Option<String>,
    details: ReasoningMerger,
    /// By `index`, in the order each first appeared. A fragment joins the last call of its
    /// index, unless it names another call `id`: some providers stream parallel calls all at
    /// index 0, each starting with its own id. Then it joins the call of that index and id,
    /// or starts one.
    tool_calls: Vec<(u64, ToolCall)>,
    /// Where in `tool_calls` the last call of each index is, and each (index, id)'s call:
    /// a fragment finds its call without a scan, however many calls a stream has.
    last_call_at_index: HashMap<u64, usize>,
    call_with_id: HashMap<(u64, String), usize>,
    finish_reason: Option<String>,
    native_finish_reason: Option<String>,
    usage: Option<String>,
    error: Option<String>,
}

impl StreamAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// The failure a chunk reported, if any; once set the turn is failed.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    pub fn finish_reason(&self) -> Option<&str> {
        self.finish_reason.as_deref()
    }

    /// Feeds the data of one event. `Err` when it is not a chunk at all.
    pub fn push(&mut self, data: &str) -> Result<(), String> {
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            format!("the upstream sent a stream event that is not a JSON chunk: {e}")
        })?;
        self.id = self.id.take().or(chunk.id);
        self.model = self.model.take().or(chunk.model);
        self.provider = self.provider.take().or(chunk.provider);
        if let Some(usage) = raw::non_null(chunk.usage) {
            self.usage = Some(usage.get().to_owned());
        }
        if let Some(error) = raw::non_null(chunk.error) {
            self.error
                .get_or_insert_with(|| super::wire::describe_error(error.get()));
        }
        // The reply is the first choice, as in a non-streamed answer; others are not merged in.
        for choice in chunk.choices.unwrap_or_default() {
            if choice.index != 0 {
                continue;
            }
            // A usage-only chunk has `finish_reason: null`: it must not erase the real one.
            if let Some(reason) = choice.finish_reason {
                if reason == "error" {
                    let detail = raw::non_null(choice.error)
                        .map(|e| super::wire::describe_error(e.get()))
                        .unwrap_or_else(|| "the model stopped with finish_reason \"error\"".into());
                    self.error.get_or_insert(detail);
                }
                self.finish_reason = Some(reason);
            }
            if let Some(reason) = choice.native_finish_reason {
                self.native_finish_reason = Some(reason);
            }
            if let Some(delta) = choice.delta {
                self.push_delta(delta);
            }
        }
        Ok(())
    }

    fn push_delta(&mut self, delta: Delta<'_>) {
        if let Some(piece) = delta.content.and_then(string_interior) {
            self.content.get_or_insert_with(String::new).push_str(piece);
        }
        if let Some(piece) = delta.reasoning.and_then(string_interior) {
            self.reasoning
                .get_or_insert_with(String::new)
                .push_str(piece);
        }
        for fragment in delta.reasoning_details.unwrap_or_default() {
            self.details.push(fragment);
        }
        for call in delta.tool_calls.unwrap_or_default() {
            let index = call.index.unwrap_or(0);
            // An empty id ("") names no call.
            let id = raw::non_null(call.id)
                .map(|id| id.get())
                .filter(|id| *id != "\"\"");
            let last = self.last_call_at_index.get(&index).copied();
            let at = match (last, id) {
                (Some(at), None) => Some(at),
                (Some(at), Some(id))
                    if self.tool_calls[at]
                        .1
                        .id
                        .as_deref()
                        .is_none_or(|own| own == id) =>
                {
                    Some(at)
                }
                (_, Some(id)) => self.call_with_id.get(&(index, id.to_owned())).copied(),
                (None, None) => None,
            };
            let at = at.unwrap_or_else(|| {
                self.tool_calls.push((index, ToolCall::default()));
                self.tool_calls.len() - 1
            });
            self.last_call_at_index.insert(index, at);
            let slot = &mut self.tool_calls[at].1;
            if let Some(id) = id {
                if slot.id.is_none() {
                    slot.id = Some(id.to_owned());
                    self.call_with_id.insert((index, id.to_owned()), at);
                }
            }
            if let Some(kind) = raw::non_null(call.kind) {
                slot.kind.get_or_insert_with(|| kind.get().to_owned());
            }
            if let Some(function) = call.function {
                if let Some(name) = raw::non_null(function.name) {
                    slot.name.get_or_insert_with(|| name.get().to_owned());
                }
                if let Some(piece) = function.arguments.and_then(string_interior) {
                    slot.arguments.push_str(piece);
                }
            }
        }
    }

    /// The reply, as the non-streaming answer would carry it.
    pub fn finish(self) -> Completion {
        let mut tool_calls_by_index = self.tool_calls;
        // Stable: calls sharing an index stay in the order they appeared.
        tool_calls_by_index.sort_by_key(|(index, _)| *index);
        let tool_calls = (!tool_calls_by_index.is_empty()).then(|| {
            let calls: Vec<String> = tool_calls_by_index
                .iter()
                .map(|(_, call)| {
                    let mut function = ObjectWriter::new();
                    function
                        .raw("name", call.name.as_deref().unwrap_or("\"\""))
                        .raw("arguments", &format!("\"{}\"", call.arguments));
                    let mut w = ObjectWriter::new();
                    w.raw("id", call.id.as_deref().unwrap_or("\"\""))
                        .raw("type", call.kind.as_deref().unwrap_or("\"function\""))
                        .raw("function", &function.finish());
                    w.finish()
                })
                .collect();
            format!("[{}]", calls.join(","))
        });
        // A tool-call-only reply has `content: null`, as in the non-streaming answer.
        let content = match self.content {
            Some(text) if !text.is_empty() || tool_calls.is_none() => Some(format!("\"{text}\"")),
            _ if tool_calls.is_some() => Some("null".into()),
            _ => Some("\"\"".into()),
        };
        let totals = self.usage.as_deref().and_then(usage_totals);
        Completion {
            generation_id: self.id,
            model: self.model,
            provider: self.provider,
            finish_reason: self.finish_reason,
            native_finish_reason: self.native_finish_reason,
            content,
            reasoning: self.reasoning.map(|r| format!("\"{r}\"")),
            reasoning_details: self.details.finish(),
            tool_calls,
            usage: self.usage,
            totals,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_call_fragments_join_by_index_and_usage_chunk_keeps_finish_reason() {
        let mut acc = StreamAccumulator::new();
        for data in [
            r#"{"id":"gen-1","model":"m-1","provider":"P","choices":[{"delta":{"role":"assistant","content":"","reasoning":"th\u00e9","reasoning_details":[{"type":"reasoning.text","text":"th\u00e9","format":"unknown","index":0}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"weather","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"loc"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\": 1}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"content":""},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"cost":0.5}}"#,
            r#"{"choices":[{"delta":{},"finish_reason":null}]}"#,
        ] {
            acc.push(data).unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(acc.error().is_none());
        let c = acc.finish();
        assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(c.content.as_deref(), Some("null"));
        assert_eq!(c.reasoning.as_deref(), Some(r#""th\u00e9""#));
        assert_eq!(
            c.tool_calls.as_deref(),
            Some(
                r#"[{"id":"call_1","type":"function","function":{"name":"weather","arguments":"{\"loc\": 1}"}}]"#
            )
        );
        assert_eq!(c.totals.map(|t| t.completion_tokens), Some(2));
        assert_eq!(c.generation_id.as_deref(), Some("gen-1"));
    }

    #[test]
    fn parallel_tool_calls_streamed_at_one_index_stay_apart_by_their_ids() {
        let mut acc = StreamAccumulator::new();
        for data in [
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"weather","arguments":"{\"city\":"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Oslo\"}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_b","type":"function","function":{"name":"time","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"","function":{"arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"call_c","type":"function","function":{"name":"date","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
        ] {
            acc.push(data).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(
            acc.finish().tool_calls.as_deref(),
            Some(concat!(
                r#"[{"id":"call_a","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Oslo\"}"}},"#,
                r#"{"id":"call_b","type":"function","function":{"name":"time","arguments":"{}"}},"#,
                r#"{"id":"call_c","type":"function","function":{"name":"date","arguments":"{}"}}]"#
            ))
        );
    }

    #[test]
    fn interleaved_fragments_at_one_index_join_the_call_their_id_names() {
        let mut acc = StreamAccumulator::new();
        for data in [
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_a","function":{"name":"a","arguments":"{\"x\":"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_b","function":{"name":"b","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_a","function":{"arguments":"1}"}}]}}]}"#,
        ] {
            acc.push(data).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(
            acc.finish().tool_calls.as_deref(),
            Some(concat!(
                r#"[{"id":"call_a","type":"function","function":{"name":"a","arguments":"{\"x\":1}"}},"#,
                r#"{"id":"call_b","type":"function","function":{"name":"b","arguments":"{}"}}]"#
            ))
        );
    }

    #[test]
    fn with_several_choices_the_reply_is_the_first_as_when_not_streamed() {
        let mut acc = StreamAccumulator::new();
        for data in [
            r#"{"choices":[{"index":0,"delta":{"content":"one"}},{"index":1,"delta":{"content":"uno"}}]}"#,
            r#"{"choices":[{"index":1,"delta":{"content":" dos"},"finish_reason":"length"}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":" two"},"finish_reason":"stop"}]}"#,
        ] {
            acc.push(data).unwrap_or_else(|e| panic!("{e}"));
        }
        let c = acc.finish();
        assert_eq!(c.content.as_deref(), Some(r#""one two""#));
        assert_eq!(c.finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn error_chunks_fail_the_stream() {
        let mut acc = StreamAccumulator::new();
        let chunk = r#"{"error":{"code":400,"message":"Token limit reached"},"choices":[{"delta":{},"finish_reason":null}],"usage":{"prompt_tokens":3}}"#;
        acc.push(chunk).unwrap_or_else(|e| panic!("{e}"));
        assert!(acc
            .error()
            .is_some_and(|e| e.contains("Token limit reached")));
        let mut acc = StreamAccumulator::new();
        acc.push(r#"{"choices":[{"delta":{},"finish_reason":"error"}]}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(acc.error().is_some());
        assert!(StreamAccumulator::new().push("not json").is_err());
    }
}
