//! Reading an incoming chat-completions request: basic validation (what OpenRouter itself rejects
//! before any provider sees the request) and the few facts the generated reply depends on.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

/// What the generated reply needs to know about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChatRequest {
    pub model: String,
    pub stream: bool,
    /// Whether the reply shows reasoning (off for `reasoning.enabled:false`, `exclude:true`,
    /// `effort:"none"`).
    pub reasoning: bool,
    /// Text of the last `user` message (string content, or its text parts joined).
    pub last_user_text: String,
    /// Number of `user` messages: the conversation turn being answered.
    pub user_turns: usize,
    /// Name of the first tool, when the request offers tools and its last message is a user turn
    /// (the fake then answers with a call to it).
    pub tool_to_call: Option<String>,
    /// Size of the request body, for a plausible `prompt_tokens`.
    pub body_len: usize,
}

/// Model used when a request names none (OpenRouter would pick the account default).
const DEFAULT_MODEL: &str = "deepseek/deepseek-v3.2-exp";

/// Validate `body` the way OpenRouter does before routing, and extract the facts for generation.
/// The error is the message of OpenRouter's 400 answer.
///
/// One pass over the body that keeps only the few fields it reads, borrowed as raw JSON, and
/// skips the rest (earlier messages, reasoning blocks) without building them: the benchmark's
/// fake shares two cores with the service it measures, and parsing every request into a
/// `serde_json::Value` was most of the fake's time. A key given twice counts once, the last
/// one, as with `Value`.
pub(crate) fn parse(body: &str) -> Result<ChatRequest, String> {
    let top: Top = serde_json::from_str(body).map_err(|e| invalid_json(&e))?;
    let Top::Object(fields) = top else {
        return Err("Request body must be a JSON object".to_owned());
    };
    let Some(Messages(Some(messages))) = fields.messages else {
        return Err("Input required: specify \"prompt\" or \"messages\"".to_owned());
    };
    if let Some(index) = messages.iter().position(|m| m.0.is_none()) {
        return Err(format!("messages[{index}] must be an object"));
    }
    let messages: Vec<MessageHead> = messages.into_iter().filter_map(|m| m.0).collect();
    let mut users = Vec::new();
    for message in &messages {
        if let Some(role) = message.role {
            if is_user(body, role)? {
                users.push(message);
            }
        }
    }
    let last_is_user = users
        .last()
        .zip(messages.last())
        .is_some_and(|(user, last)| std::ptr::eq(*user, last));
    let model = value_of(body, fields.model)?
        .as_ref()
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or(DEFAULT_MODEL)
        .to_owned();
    let tool_to_call = value_of(body, fields.tools)?
        .as_ref()
        .and_then(Value::as_array)
        .and_then(|tools| tools.first())
        .and_then(|tool| tool.pointer("/function/name"))
        .and_then(Value::as_str)
        .filter(|_| last_is_user)
        .map(str::to_owned);
    let last_user_text = match users.last() {
        Some(user) => text_of(value_of(body, user.content)?.as_ref()),
        None => String::new(),
    };
    Ok(ChatRequest {
        model,
        stream: value_of(body, fields.stream)? == Some(Value::Bool(true)),
        reasoning: reasoning_shown(value_of(body, fields.reasoning)?.as_ref()),
        last_user_text,
        user_turns: users.len(),
        tool_to_call,
        body_len: body.len(),
    })
}

fn invalid_json(e: &serde_json::Error) -> String {
    format!("Invalid JSON in request body: {e}")
}

/// A kept field's value, parsed now that it is known to be needed. Skipping checked its
/// syntax but not all of it (escapes, numbers' range): what `Value` refuses in a field the
/// fake reads is answered as the whole body's invalid JSON, as before.
fn value_of(body: &str, raw: Option<&RawValue>) -> Result<Option<Value>, String> {
    raw.map(|raw| serde_json::from_str(raw.get()).map_err(|_| whole_body_error(body)))
        .transpose()
}

/// Whether a role is the string "user" (however it is escaped).
fn is_user(body: &str, role: &RawValue) -> Result<bool, String> {
    let raw = role.get();
    if raw == "\"user\"" {
        return Ok(true);
    }
    if raw.starts_with('"') && !raw.contains('\\') {
        return Ok(false); // a plain string, and not "user"
    }
    Ok(value_of(body, Some(role))? == Some(Value::from("user")))
}

/// The error `Value` finds in the whole body (where it reports it).
fn whole_body_error(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Err(e) => invalid_json(&e),
        Ok(_) => "Invalid JSON in request body".to_owned(),
    }
}

/// The rest of a visitor that takes any JSON value (what it expects, for serde's messages)
/// and answers `$other` for every kind it does not read (an array is read through, so that
/// what follows it is still checked; `no_seq` leaves arrays to the visitor).
macro_rules! not_an_object {
    ($other:expr) => {
        not_an_object!($other, no_seq);
        fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($other)
        }
    };
    ($other:expr, no_seq) => {
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($other)
        }
    };
}

/// The request body: an object with the fields `parse` reads, or anything else.
enum Top<'a> {
    Object(Fields<'a>),
    NotObject,
}

#[derive(Default)]
struct Fields<'a> {
    model: Option<&'a RawValue>,
    messages: Option<Messages<'a>>,
    stream: Option<&'a RawValue>,
    tools: Option<&'a RawValue>,
    reasoning: Option<&'a RawValue>,
}

/// The messages, read as they are parsed; `None` when `messages` is not an array.
struct Messages<'a>(Option<Vec<Message<'a>>>);

impl<'de: 'a, 'a> Deserialize<'de> for Messages<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = Messages<'a>;
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Messages<'a>, S::Error> {
                let mut messages = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(message) = seq.next_element()? {
                    messages.push(message);
                }
                Ok(Messages(Some(messages)))
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Messages<'a>, M::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Messages(None))
            }
            not_an_object!(Messages(None), no_seq);
        }
        deserializer.deserialize_any(Visit(PhantomData))
    }
}

/// What `parse` needs of one message; `None` for a message that is not an object.
struct Message<'a>(Option<MessageHead<'a>>);

struct MessageHead<'a> {
    role: Option<&'a RawValue>,
    content: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Top<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = Top<'a>;
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Top<'a>, M::Error> {
                let mut fields = Fields::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let slot = match key.as_ref() {
                        "model" => &mut fields.model,
                        "messages" => {
                            fields.messages = Some(map.next_value()?);
                            continue;
                        }
                        "stream" => &mut fields.stream,
                        "tools" => &mut fields.tools,
                        "reasoning" => &mut fields.reasoning,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(Top::Object(fields))
            }
            not_an_object!(Top::NotObject);
        }
        deserializer.deserialize_any(Visit(PhantomData))
    }
}

struct MessageVisit<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for MessageVisit<'a> {
    type Value = Message<'a>;
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Message<'a>, M::Error> {
        let mut head = MessageHead {
            role: None,
            content: None,
        };
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "role" => head.role = Some(map.next_value()?),
                "content" => head.content = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Message(Some(head)))
    }
    not_an_object!(Message(None));
}

impl<'de: 'a, 'a> Deserialize<'de> for Message<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MessageVisit(PhantomData))
    }
}

fn reasoning_shown(reasoning: Option<&Value>) -> bool {
    let Some(reasoning) = reasoning else {
        return true;
    };
    let disabled = reasoning.get("enabled") == Some(&Value::Bool(false));
    let excluded = reasoning.get("exclude") == Some(&Value::Bool(true));
    let effort_none = reasoning.get("effort") == Some(&Value::from("none"));
    !(disabled || excluded || effort_none)
}

/// A message's text: string content as is, or the `text` of each content part joined by spaces.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn extracts_what_generation_needs() {
        let body = r#"{"model":"deepseek/deepseek-v3.2-exp","stream":true,
            "messages":[{"role":"user","content":"one"},{"role":"assistant","content":"x"},
                        {"role":"user","content":[{"type":"text","text":"two"},{"type":"text","text":"parts"}]}],
            "tools":[{"type":"function","function":{"name":"weather"}}]}"#;
        let request = parse(body).unwrap();
        assert!(request.stream && request.reasoning);
        assert_eq!(request.last_user_text, "two parts");
        assert_eq!(request.user_turns, 2);
        assert_eq!(request.tool_to_call.as_deref(), Some("weather"));
    }

    #[test]
    fn no_tool_call_after_a_tool_result_and_reasoning_switches() {
        let body = r#"{"messages":[{"role":"user","content":"q"},{"role":"tool","content":"40 C"}],
            "tools":[{"type":"function","function":{"name":"weather"}}],"reasoning":{"enabled":false}}"#;
        let request = parse(body).unwrap();
        assert_eq!(request.tool_to_call, None);
        assert!(!request.reasoning);
        assert_eq!(request.model, DEFAULT_MODEL);
        let excluded = parse(r#"{"messages":[],"reasoning":{"exclude":true}}"#).unwrap();
        assert!(!excluded.reasoning);
        let effort = parse(r#"{"messages":[],"reasoning":{"effort":"high"}}"#).unwrap();
        assert!(effort.reasoning);
    }

    /// The parse as it was written first, through `serde_json::Value`: the one-pass parse must
    /// answer every body exactly as this does.
    fn parse_through_value(body: &str) -> Result<ChatRequest, String> {
        let value: Value = serde_json::from_str(body).map_err(|e| invalid_json(&e))?;
        let Some(object) = value.as_object() else {
            return Err("Request body must be a JSON object".to_owned());
        };
        let Some(messages) = object.get("messages").and_then(Value::as_array) else {
            return Err("Input required: specify \"prompt\" or \"messages\"".to_owned());
        };
        if let Some(index) = messages.iter().position(|m| !m.is_object()) {
            return Err(format!("messages[{index}] must be an object"));
        }
        let model = object
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .unwrap_or(DEFAULT_MODEL)
            .to_owned();
        let user = Value::from("user");
        let last_is_user = messages.last().and_then(|m| m.get("role")) == Some(&user);
        let tool_to_call = object
            .get("tools")
            .and_then(Value::as_array)
            .and_then(|tools| tools.first())
            .and_then(|tool| tool.pointer("/function/name"))
            .and_then(Value::as_str)
            .filter(|_| last_is_user)
            .map(str::to_owned);
        let users: Vec<&Value> = messages
            .iter()
            .filter(|m| m.get("role") == Some(&user))
            .collect();
        Ok(ChatRequest {
            model,
            stream: object.get("stream").and_then(Value::as_bool) == Some(true),
            reasoning: reasoning_shown(object.get("reasoning")),
            last_user_text: users
                .last()
                .map(|m| text_of(m.get("content")))
                .unwrap_or_default(),
            user_turns: users.len(),
            tool_to_call,
            body_len: body.len(),
        })
    }

    #[test]
    fn answers_every_body_as_a_parse_through_value_would() {
        let bodies = [
            "",
            "not json",
            "[1, {\"messages\": []}]",
            "\"text\"",
            "12",
            "null",
            "true",
            "{}",
            r#"{"messages":null}"#,
            r#"{"messages":{}}"#,
            r#"{"messages":[]}"#,
            r#"{"messages":[null]}"#,
            r#"{"messages":[{"role":"user","content":"a"},7,{"role":"user"}]}"#,
            r#"{"messages":[{"role":"user","content":"a"}],"model":5,"stream":"yes"}"#,
            r#"{"messages":[{"role":"user","content":"a"}],"model":"","stream":true}"#,
            r#"{"messages":[{"role":"\u0075ser","content":"escaped role"}]}"#,
            r#"{"messages":[{"role":["user"],"content":"not a role"}]}"#,
            r#"{"messages":[{"content":"first","role":"user","content":"second"}]}"#,
            r#"{"messages":[{"role":"user","content":"x"}],"messages":[{"role":"system","content":"last key wins"}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url"},{"text":"b"}]}]}"#,
            r#"{"messages":[{"role":"user","content":{"text":"object content"}}]}"#,
            r#"{"messages":[{"role":"user","content":"q"}],"tools":[{"function":{"name":"f"}}],"reasoning":{"effort":"none"}}"#,
            r#"{"messages":[{"role":"assistant","content":"q"}],"tools":[{"function":{"name":"f"}}]}"#,
            r#"{"messages":[{"role":"user","content":"q"}],"tools":{"function":{"name":"f"}}}"#,
            r#"{"messages":[{"role":"user","content":"q","reasoning_details":[{"type":"reasoning.text","text":"\u00e9 \ud83d\ude00"}]}],"extra":{"deep":[[[{}]]]}}"#,
            r#"{"messages":[{"role":"user","content":"q"}],"extra":[1,2,}"#,
            r#"{"messages":[{"role":"user","content":"q"}]} trailing"#,
            r#"{"messages":[{"role":"user","content":"unterminated}]}"#,
            // What `Value` refuses in the fields the fake reads: refused alike.
            r#"{"messages":[{"role":"user","content":"hi \ud800"}]}"#,
            r#"{"messages":[{"role":"\ud800","content":"q"}]}"#,
            r#"{"messages":[{"role":1e400,"content":"q"}]}"#,
            r#"{"messages":[{"role":"user","content":"q"}],"reasoning":{"effort":"none","x":1e400}}"#,
            r#"{"messages":[{"role":"user","content":"q"}],"tools":[{"function":{"name":"f"},"n":1e400}]}"#,
            r#"{"messages":[{"role":"user","content":"q"}],"model":"\udc00","stream":1e999}"#,
        ];
        for body in bodies {
            assert_eq!(parse(body), parse_through_value(body), "{body}");
        }
        // Differences only in fields the fake does not read, all on OpenRouter's side (its
        // JSON parser is JavaScript's): a number too large for a double is accepted (read as
        // Infinity), and so is nesting deeper than serde_json's limit of 128 (skipped without
        // recursion); `Value` refused both. (A lone surrogate escape there too.)
        let huge = r#"{"messages":[{"role":"user","content":"q"}],"n":1e400}"#;
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let deep = format!(r#"{{"messages":[{{"role":"user","content":"q"}}],"x":{deep}}}"#);
        let surrogate = r#"{"messages":[{"role":"user","content":"q","x":"\ud800"}]}"#;
        for body in [huge, deep.as_str(), surrogate] {
            assert!(parse(body).is_ok() && parse_through_value(body).is_err());
        }
    }

    #[test]
    fn rejects_what_openrouter_rejects() {
        assert!(parse("not json").is_err());
        assert!(parse("[1]").is_err());
        assert!(parse(r#"{"model":"m"}"#).is_err());
        assert!(parse(r#"{"messages":{}}"#).is_err());
        assert!(parse(r#"{"messages":["hi"]}"#).is_err());
    }
}
