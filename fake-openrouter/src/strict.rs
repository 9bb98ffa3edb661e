//! Strict mode: the fake behaves like a provider that verifies reasoning it handed out comes back
//! untouched. It remembers the exact bytes of every `reasoning_details` value it sent (taken from
//! the body with `RawValue`, never re-serialised) and rejects an assistant message whose
//! `reasoning_details` bytes differ from all of them. It also applies DeepSeek's rule that an
//! assistant tool-call turn which came with reasoning must be sent back with that reasoning.
//!
//! This is stricter than OpenRouter in the recordings (which accepted key-reordered passbacks);
//! it exists so tests can prove a client is byte-exact.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::generate::escape;
use crate::state::Memory;

/// The parts of a non-streaming completion strict mode remembers.
#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: Option<Message>,
}

/// One message, in a reply's `choices[].message` or in a request's `messages[]`.
#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    reasoning: Option<Box<RawValue>>,
    #[serde(default)]
    reasoning_details: Option<Box<RawValue>>,
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
}

impl Message {
    fn tool_call_ids(&self) -> impl Iterator<Item = &str> {
        self.tool_calls
            .iter()
            .flatten()
            .filter_map(|call| call.get("id").and_then(Value::as_str))
    }

    /// A JSON `null` already deserialises to `None`; an empty string does not count as reasoning.
    fn has_reasoning(&self) -> bool {
        self.reasoning_details.is_some()
            || self.reasoning.as_ref().is_some_and(|r| r.get() != "\"\"")
    }
}

#[derive(Deserialize)]
struct Request {
    messages: Vec<Message>,
}

/// Remember what a non-streaming reply body (JSON, padding allowed) hands out. Bodies that are
/// not completions (errors, SSE) are ignored.
pub(crate) fn remember_body(memory: &mut Memory, body: &str) {
    let Ok(completion) = serde_json::from_str::<Completion>(body) else {
        return;
    };
    for message in completion.choices.iter().filter_map(|c| c.message.as_ref()) {
        if let Some(details) = &message.reasoning_details {
            memory.reasoning_details.insert(details.get().to_owned());
        }
        if message.has_reasoning() {
            let ids = message.tool_call_ids().map(str::to_owned);
            memory.reasoning_tool_calls.extend(ids);
        }
    }
}

/// Check a request against what was handed out; `Err` carries the HTTP 400 body to answer.
pub(crate) fn check(memory: &Memory, body: &str) -> Result<(), String> {
    let request: Request = serde_json::from_str(body).map_err(|e| {
        let message = format!("Invalid messages: {e}");
        format!(
            r#"{{"error":{{"message":"{}","code":400}}}}"#,
            escape(&message)
        )
    })?;
    for (index, message) in request.messages.iter().enumerate() {
        if message.role.as_deref() != Some("assistant") {
            continue;
        }
        if let Some(details) = &message.reasoning_details {
            if !memory.reasoning_details.contains(details.get()) {
                return Err(provider_error(&format!(
                    "reasoning_details of message {index} were altered or dropped"
                )));
            }
        }
        let needs_reasoning = message
            .tool_call_ids()
            .any(|id| memory.reasoning_tool_calls.contains(id));
        if needs_reasoning && !message.has_reasoning() {
            return Err(provider_error(&format!(
                "Missing reasoning_content field in the assistant message at message index {index}"
            )));
        }
    }
    Ok(())
}

/// OpenRouter's wrapper around a provider's own error, as in the recorded 400/429 answers: the
/// provider's JSON travels as a string in `metadata.raw`.
fn provider_error(message: &str) -> String {
    let raw = format!(
        r#"{{"error":{{"message":"{}","type":"invalid_request_error"}}}}"#,
        escape(message)
    );
    format!(
        r#"{{"error":{{"message":"Provider returned error","code":400,"metadata":{{"raw":"{}","provider_name":"DeepSeek"}}}},"user_id":"user_fake"}}"#,
        escape(&raw)
    )
}

#[cfg(test)]
#[path = "strict_tests.rs"]
mod tests;
