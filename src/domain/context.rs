//! The context rebuild (SPEC section 4), as a pure function of the stored thread and the
//! turn's resolved options: it returns the exact request body sent upstream.
//!
//! Stored raw values (content, tool_calls, reasoning, reasoning_details) are spliced in as
//! their exact bytes: providers reject reasoning blocks that were altered or dropped.

use std::borrow::Borrow;

use serde_json::value::RawValue;

use super::json::ObjectWriter;
use super::records::{MessageRecord, ThreadRecord};
use super::thread::{params_to_json, parse_params, Params, ReasoningReplay};
use super::turn::Overrides;
use crate::error::ApiError;

/// The service-wide defaults a turn falls back to.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub model: String,
    pub reasoning: Box<RawValue>,
}

/// A turn's options after overrides, thread defaults and service defaults are applied.
#[derive(Debug, Clone)]
pub struct ResolvedOptions {
    pub model: String,
    pub reasoning: String,
    pub replay: ReasoningReplay,
    /// Thread params with the turn's params laid over them, key by key.
    pub params: Params,
    pub stream: bool,
}

pub fn resolve(
    defaults: &Defaults,
    thread: &ThreadRecord,
    overrides: &Overrides,
    stream: bool,
) -> Result<ResolvedOptions, ApiError> {
    let mut params = match &thread.params {
        Some(raw) => {
            let raw: Box<RawValue> = serde_json::from_str(raw)
                .map_err(|e| ApiError::Internal(format!("stored params unreadable: {e}")))?;
            parse_params(&raw, "params")?
        }
        None => Params::new(),
    };
    if let Some(turn_params) = &overrides.params {
        for (key, value) in turn_params {
            params.insert(key.clone(), value.clone());
        }
    }
    let replay = match (&overrides.reasoning_replay, &thread.reasoning_replay) {
        (Some(r), _) => *r,
        (None, Some(stored)) => ReasoningReplay::parse(stored)?,
        (None, None) => ReasoningReplay::default(),
    };
    Ok(ResolvedOptions {
        model: overrides
            .model
            .clone()
            .or_else(|| thread.model.clone())
            .unwrap_or_else(|| defaults.model.clone()),
        reasoning: overrides
            .reasoning
            .clone()
            .or_else(|| thread.reasoning.clone())
            .unwrap_or_else(|| defaults.reasoning.get().to_owned()),
        replay,
        params,
        stream,
    })
}

/// Builds the chat-completions request body for the next turn of `thread`.
pub fn build_request<M: Borrow<MessageRecord>>(
    thread: &ThreadRecord,
    messages: &[M],
    options: &ResolvedOptions,
) -> String {
    let capacity = 256
        + thread.system.as_ref().map_or(0, String::len)
        + messages
            .iter()
            .map(|m| {
                let m = m.borrow();
                64 + m.content.as_ref().map_or(0, String::len)
                    + m.tool_calls.as_ref().map_or(0, String::len)
                    + m.reasoning.as_ref().map_or(0, String::len)
                    + m.reasoning_details.as_ref().map_or(0, String::len)
            })
            .sum::<usize>();
    let mut body = ObjectWriter::with_capacity(capacity);
    body.string("model", &options.model);

    let system = thread.system.as_deref().map(Entry::System);
    let entries = system
        .into_iter()
        .chain(messages.iter().map(|m| Entry::Message(m.borrow())));
    body.objects("messages", entries, |m, entry| match entry {
        Entry::System(system) => {
            m.string("role", "system").string("content", system);
        }
        Entry::Message(message) => context_message(m, message, options),
    });
    body.raw("reasoning", &options.reasoning);
    for (key, value) in &options.params {
        body.raw(key, value.get());
    }
    if !options.params.contains_key("session_id") {
        // OpenRouter's sticky routing: one provider serves the whole conversation, so its
        // signed reasoning stays valid.
        body.string("session_id", &thread.id);
    }
    if options.stream {
        body.bool("stream", true);
    }
    body.finish()
}

/// One entry of the request's `messages`.
enum Entry<'a> {
    /// The thread's system prompt, first.
    System(&'a str),
    Message(&'a MessageRecord),
}

fn context_message(m: &mut ObjectWriter, message: &MessageRecord, options: &ResolvedOptions) {
    m.string("role", &message.role)
        .opt_raw("content", message.content.as_deref())
        .opt_string("name", message.name.as_deref())
        .opt_raw("tool_calls", message.tool_calls.as_deref())
        .opt_string("tool_call_id", message.tool_call_id.as_deref());
    if message.role == "assistant" {
        let (text, details) = match options.replay {
            ReasoningReplay::All => (true, true),
            ReasoningReplay::None => (false, false),
            ReasoningReplay::SameModel => {
                // Compare names as requested, not the dated slug the upstream reported.
                let same = message.requested_model.as_deref() == Some(options.model.as_str());
                (true, same)
            }
        };
        if text {
            m.opt_raw("reasoning", message.reasoning.as_deref());
        }
        if details {
            m.opt_raw("reasoning_details", message.reasoning_details.as_deref());
        }
    }
}

/// The resolved params as JSON text (for display in logs and tests).
pub fn params_json(options: &ResolvedOptions) -> String {
    params_to_json(&options.params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread() -> ThreadRecord {
        ThreadRecord {
            id: "0190d3a0-0000-7000-8000-000000000001".into(),
            created_at: String::new(),
            updated_at: String::new(),
            metadata: Default::default(),
            model: None,
            system: Some("be brief".into()),
            reasoning: None,
            reasoning_replay: None,
            params: Some(r#"{"temperature":0.5,"max_tokens":100}"#.into()),
            message_count: 2,
            last_message_id: None,
            usage: None,
        }
    }

    fn assistant(model: &str) -> MessageRecord {
        MessageRecord {
            role: "assistant".into(),
            content: Some("null".into()),
            tool_calls: Some(r#"[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\": 1}"}}]"#.into()),
            reasoning: Some(r#""thinking \u00e9""#.into()),
            reasoning_details: Some(r#"[ {"type":"reasoning.text","text":"\ud83d\ude00","n":1.50e3,"z":-0.0} ]"#.into()),
            requested_model: Some(model.into()),
            ..Default::default()
        }
    }

    fn defaults() -> Defaults {
        Defaults {
            model: "deepseek/deepseek-v3.2-exp".into(),
            reasoning: serde_json::from_str(r#"{"enabled":true}"#)
                .unwrap_or_else(|e| panic!("{e}")),
        }
    }

    fn options(overrides: Overrides) -> ResolvedOptions {
        resolve(&defaults(), &thread(), &overrides, false).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn context_splices_reasoning_bytes_for_the_same_model() {
        let msgs = vec![
            MessageRecord {
                role: "user".into(),
                content: Some(r#""hi""#.into()),
                ..Default::default()
            },
            assistant("deepseek/deepseek-v3.2-exp"),
        ];
        let body = build_request(&thread(), &msgs, &options(Overrides::default()));
        assert_eq!(
            body,
            concat!(
                r#"{"model":"deepseek/deepseek-v3.2-exp","messages":["#,
                r#"{"role":"system","content":"be brief"},"#,
                r#"{"role":"user","content":"hi"},"#,
                r#"{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\": 1}"}}],"reasoning":"thinking \u00e9","reasoning_details":[ {"type":"reasoning.text","text":"\ud83d\ude00","n":1.50e3,"z":-0.0} ]}"#,
                r#"],"reasoning":{"enabled":true},"max_tokens":100,"temperature":0.5,"#,
                r#""session_id":"0190d3a0-0000-7000-8000-000000000001"}"#
            )
        );
        serde_json::from_str::<serde_json::Value>(&body).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn another_model_gets_only_the_reasoning_text() {
        let msgs = vec![assistant("anthropic/claude-sonnet-4")];
        let body = build_request(&thread(), &msgs, &options(Overrides::default()));
        assert!(body.contains(r#""reasoning":"thinking \u00e9""#));
        assert!(!body.contains("reasoning_details"));

        let all = options(Overrides {
            reasoning_replay: Some(ReasoningReplay::All),
            ..Default::default()
        });
        assert!(build_request(&thread(), &msgs, &all).contains("reasoning_details"));
        let none = options(Overrides {
            reasoning_replay: Some(ReasoningReplay::None),
            ..Default::default()
        });
        let body = build_request(&thread(), &msgs, &none);
        assert!(!body.contains("thinking") && !body.contains("reasoning_details"));
    }

    #[test]
    fn turn_params_override_thread_params_and_session_id() {
        let params: Params = serde_json::from_str(r#"{"temperature":1,"session_id":"mine"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        let opts = options(Overrides {
            params: Some(params),
            model: Some("x/y".into()),
            ..Default::default()
        });
        let body = build_request(&thread(), &[] as &[MessageRecord], &opts);
        assert!(body.contains(r#""temperature":1"#));
        assert!(body.contains(r#""session_id":"mine""#));
        assert!(!body.contains("0190d3a0"));
        assert!(body.starts_with(r#"{"model":"x/y""#));
    }
}
