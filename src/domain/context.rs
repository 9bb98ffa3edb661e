//! The context rebuild (SPEC section 4), as a pure function of the stored thread and the
//! turn's resolved options: it returns the exact request body sent upstream.
//!
//! Stored raw values (content, tool_calls, reasoning, reasoning_details) are spliced in as
//! their exact bytes: providers reject reasoning blocks that were altered or dropped.

use std::borrow::Borrow;
use std::ops::Range;
use std::sync::{Arc, Weak};

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
    compose(thread, messages, options).0
}

/// Where a built request's messages lie in it, so that the thread's next request can be
/// built by appending to it (`build_request_after`).
#[derive(Clone, Debug)]
pub struct RequestLayout {
    /// Bytes before its first message: `{"model":…,"messages":[` and the system entry.
    head: usize,
    /// Bytes after its last message: `]` and the options.
    tail: usize,
    /// How many of the context's messages it holds, and the last of them (not kept alive
    /// by this: only compared with the next context's, as the same object).
    messages: usize,
    last: Weak<MessageRecord>,
    replay: ReasoningReplay,
}

/// `build_request` for a context given as the messages the context cache shares, reusing
/// `previous` (the thread's last request as built, and its layout) when the context starts
/// with the very messages that request was built from and the options would write its head
/// and tail alike: the new request is then the previous one with the added messages written
/// before its tail. The bytes are the same as `build_request`'s (checked in debug builds and
/// by the tests); what is saved is writing the whole context again on every turn, most of
/// the body (BENCHMARKS.md).
///
/// The context cache extends a thread's context by sharing the messages it already holds,
/// and messages never change once stored, so a context whose message at the previous
/// request's last position is the same object as that request's last message starts with
/// the same messages. A context read again (a cache miss, a thread imported again) holds
/// new objects and is written whole.
pub fn build_request_after(
    previous: Option<(&str, &RequestLayout)>,
    thread: &ThreadRecord,
    messages: &[Arc<MessageRecord>],
    options: &ResolvedOptions,
) -> (String, RequestLayout) {
    if let Some(spliced) =
        previous.and_then(|(body, layout)| append_to(body, layout, thread, messages, options))
    {
        debug_assert_eq!(
            spliced.0,
            build_request(thread, messages, options),
            "a request built by appending differs from one built whole"
        );
        return spliced;
    }
    let (body, items) = compose(thread, messages, options);
    let layout = layout_of(&body, items, messages, options);
    (body, layout)
}

fn layout_of(
    body: &str,
    items: Range<usize>,
    messages: &[Arc<MessageRecord>],
    options: &ResolvedOptions,
) -> RequestLayout {
    RequestLayout {
        head: items.start,
        tail: body.len() - items.end,
        messages: messages.len(),
        last: messages.last().map(Arc::downgrade).unwrap_or_default(),
        replay: options.replay,
    }
}

/// The thread's next request, as `previous` followed by the messages added since; `None`
/// when `previous` cannot be reused.
fn append_to(
    previous: &str,
    layout: &RequestLayout,
    thread: &ThreadRecord,
    messages: &[Arc<MessageRecord>],
    options: &ResolvedOptions,
) -> Option<(String, RequestLayout)> {
    let reused = layout.messages;
    if reused == 0 || reused > messages.len() || layout.replay != options.replay {
        return None;
    }
    let last = layout.last.upgrade()?;
    if !Arc::ptr_eq(&last, &messages[reused - 1]) {
        return None;
    }
    // The head and tail these options write (model, system prompt, reasoning, params…).
    let (empty, items) = compose::<&MessageRecord>(thread, &[], options);
    let (head, tail) = (&empty[..items.start], &empty[items.end..]);
    let items_end = previous.len().checked_sub(layout.tail)?;
    if layout.head != head.len()
        || layout.tail != tail.len()
        || previous.get(..layout.head)? != head
        || previous.get(items_end..)? != tail
    {
        return None;
    }
    let added = &messages[reused..];
    let mut body = String::with_capacity(previous.len() + added_size(added));
    body.push_str(&previous[..items_end]);
    for message in added {
        // `reused` >= 1: every added message follows another entry.
        body.push(',');
        ObjectWriter::append_object(&mut body, |m| context_message(m, message, options));
    }
    let end = body.len();
    body.push_str(tail);
    let layout = layout_of(&body, layout.head..end, messages, options);
    Some((body, layout))
}

/// About the bytes `messages` take in a request (to size its buffer once).
fn added_size<M: Borrow<MessageRecord>>(messages: &[M]) -> usize {
    messages
        .iter()
        .map(|m| {
            let m = m.borrow();
            96 + m.content.as_ref().map_or(0, String::len)
                + m.tool_calls.as_ref().map_or(0, String::len)
                + m.reasoning.as_ref().map_or(0, String::len)
                + m.reasoning_details.as_ref().map_or(0, String::len)
        })
        .sum()
}

/// The request body, and where its messages (after the system entry) lie in it.
fn compose<M: Borrow<MessageRecord>>(
    thread: &ThreadRecord,
    messages: &[M],
    options: &ResolvedOptions,
) -> (String, Range<usize>) {
    let capacity = 256 + thread.system.as_ref().map_or(0, String::len) + added_size(messages);
    let mut body = ObjectWriter::with_capacity(capacity);
    body.string("model", &options.model);

    let system = thread.system.as_deref().map(Entry::System);
    let from = usize::from(system.is_some());
    let entries = system
        .into_iter()
        .chain(messages.iter().map(|m| Entry::Message(m.borrow())));
    let items = body.objects_from("messages", entries, from, |m, entry| match entry {
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
    (body.finish(), items)
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

    fn user(text: &str) -> Arc<MessageRecord> {
        Arc::new(MessageRecord {
            role: "user".into(),
            content: Some(format!("{text:?}")),
            ..Default::default()
        })
    }

    /// A conversation as the context cache grows it: each turn's context shares the
    /// messages of the one before, and each request is built after the previous one.
    #[test]
    fn requests_built_by_appending_are_the_requests_built_whole() {
        let same = options(Overrides::default());
        let other_model = options(Overrides {
            model: Some("anthropic/claude-sonnet-4".into()),
            ..Default::default()
        });
        let all = options(Overrides {
            reasoning_replay: Some(ReasoningReplay::All),
            ..Default::default()
        });
        let streaming = ResolvedOptions {
            stream: true,
            ..same.clone()
        };
        let mut no_system = thread();
        no_system.system = None;
        for thread in [thread(), no_system] {
            let mut context: Vec<Arc<MessageRecord>> = Vec::new();
            let mut previous: Option<(String, RequestLayout)> = None;
            // (options of the turn, whether the previous request can be appended to)
            let turns = [
                (&same, false), // the first: nothing to append to
                (&same, true),
                (&same, true),
                (&other_model, false), // another head, and other replay decisions
                (&other_model, true),
                (&all, false),       // another replay rule
                (&streaming, false), // another tail
                (&same, false),
                (&same, true),
            ];
            for (turn, (options, appended)) in turns.into_iter().enumerate() {
                context.push(user(&format!("question {turn} \"quoted\"")));
                let reused = previous
                    .as_ref()
                    .and_then(|(body, layout)| append_to(body, layout, &thread, &context, options));
                assert_eq!(reused.is_some(), appended, "turn {turn}");
                let (body, layout) = build_request_after(
                    previous.as_ref().map(|(b, l)| (b.as_str(), l)),
                    &thread,
                    &context,
                    options,
                );
                assert_eq!(
                    body,
                    build_request(&thread, &context, options),
                    "turn {turn}"
                );
                serde_json::from_str::<serde_json::Value>(&body).unwrap_or_else(|e| panic!("{e}"));
                previous = Some((body, layout));
                context.push(Arc::new(assistant("deepseek/deepseek-v3.2-exp")));
            }
        }
    }

    #[test]
    fn a_context_read_again_is_written_whole() {
        let options = options(Overrides::default());
        let first = vec![user("one")];
        let (body, layout) = build_request_after(None, &thread(), &first, &options);
        // The same messages as new objects (a cache miss, a thread imported again): the
        // previous request is not appended to, whatever it holds.
        let again = vec![user("one"), user("two")];
        assert!(append_to(&body, &layout, &thread(), &again, &options).is_none());
        // Shared objects: appended to.
        let grown = vec![first[0].clone(), user("two")];
        assert!(append_to(&body, &layout, &thread(), &grown, &options).is_some());
        // Fewer messages than the previous request held, or none: written whole.
        assert!(append_to(&body, &layout, &thread(), &[], &options).is_none());
        let (empty, none) = build_request_after(None, &thread(), &[], &options);
        assert!(append_to(&empty, &none, &thread(), &grown, &options).is_none());
        // Another system prompt: another head.
        let mut prompted = thread();
        prompted.system = Some("be thorough".into());
        assert!(append_to(&body, &layout, &prompted, &grown, &options).is_none());
        let (whole, _) = build_request_after(Some((&body, &layout)), &prompted, &grown, &options);
        assert_eq!(whole, build_request(&prompted, &grown, &options));
    }
}
