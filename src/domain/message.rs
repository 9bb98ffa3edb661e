//! Messages a client sends, parsed and validated at the edge.
//!
//! Every JSON value that the contract says is "kept as sent" (content, tool_calls, reasoning,
//! reasoning_details) is carried as the exact bytes of the request body: the parser borrows
//! them as `RawValue`s and the validated form owns copies of those bytes.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::raw::{self, present, Kind};
use crate::error::ApiError;

/// Most messages one request may carry (thread creation, append, a turn's input).
pub const MAX_MESSAGES_PER_REQUEST: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "tool" => Some(Role::Tool),
            _ => None,
        }
    }
}

/// A validated message ready to be stored. Raw fields hold exact JSON bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub role: Role,
    pub content: Option<String>,
    pub name: Option<String>,
    pub tool_calls: Option<String>,
    pub tool_call_id: Option<String>,
    pub reasoning: Option<String>,
    pub reasoning_details: Option<String>,
    pub model: Option<String>,
}

impl NewMessage {
    /// About how many bytes storing it writes (its raw values).
    pub fn stored_len(&self) -> usize {
        [
            &self.content,
            &self.name,
            &self.tool_calls,
            &self.tool_call_id,
            &self.reasoning,
            &self.reasoning_details,
            &self.model,
        ]
        .iter()
        .map(|v| v.as_ref().map_or(0, String::len))
        .sum()
    }

    /// A user message whose content is `literal`, a JSON string exactly as the client wrote
    /// it (escapes included): content is stored and returned as given.
    pub fn user_string(literal: &str) -> NewMessage {
        NewMessage {
            role: Role::User,
            content: Some(literal.to_owned()),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            reasoning: None,
            reasoning_details: None,
            model: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireMessage<'a> {
    role: String,
    #[serde(default, borrow, deserialize_with = "present")]
    content: Option<&'a RawValue>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, borrow, deserialize_with = "present")]
    tool_calls: Option<&'a RawValue>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default, borrow, deserialize_with = "present")]
    reasoning: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    reasoning_details: Option<&'a RawValue>,
    #[serde(default)]
    model: Option<String>,
}

/// Parses an array of messages (`messages` of a create or append request).
pub fn parse_messages(raw: &RawValue, param: &str) -> Result<Vec<NewMessage>, ApiError> {
    if raw::kind(raw) != Kind::Array {
        return Err(ApiError::invalid_param(
            param,
            format!("`{param}` must be an array of messages"),
        ));
    }
    let items: Vec<&RawValue> = serde_json::from_str(raw.get())
        .map_err(|e| ApiError::invalid_param(param, format!("`{param}`: {e}")))?;
    if items.len() > MAX_MESSAGES_PER_REQUEST {
        return Err(ApiError::invalid_param(
            param,
            format!("`{param}` holds more than {MAX_MESSAGES_PER_REQUEST} messages"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_message(item, &format!("{param}[{i}]")))
        .collect()
}

/// Parses a turn's `input`: a string, one message, or an array of messages.
pub fn parse_input(raw: &RawValue) -> Result<Vec<NewMessage>, ApiError> {
    match raw::kind(raw) {
        Kind::Null => Ok(Vec::new()),
        Kind::String => {
            // Decoded only to check it: the message keeps the bytes as sent.
            let text: String = serde_json::from_str(raw.get())
                .map_err(|e| ApiError::invalid_param("input", e.to_string()))?;
            if text.is_empty() {
                return Ok(Vec::new());
            }
            Ok(vec![NewMessage::user_string(raw.get())])
        }
        Kind::Object => Ok(vec![parse_message(raw, "input")?]),
        Kind::Array => parse_messages(raw, "input"),
        _ => Err(ApiError::invalid_param(
            "input",
            "`input` must be a string, a message object or an array of messages",
        )),
    }
}

fn parse_message(raw: &RawValue, param: &str) -> Result<NewMessage, ApiError> {
    if raw::kind(raw) != Kind::Object {
        return Err(ApiError::invalid_param(
            param,
            format!("`{param}` must be a message object"),
        ));
    }
    let wire: WireMessage = serde_json::from_str(raw.get())
        .map_err(|e| ApiError::invalid_param(param, format!("`{param}`: {e}")))?;
    let invalid = |field: &str, message: String| {
        ApiError::invalid_param(
            format!("{param}.{field}"),
            format!("`{param}.{field}` {message}"),
        )
    };

    let role = Role::parse(&wire.role).ok_or_else(|| {
        invalid(
            "role",
            format!(
                "must be one of user, assistant, tool, system (got `{}`)",
                wire.role
            ),
        )
    })?;

    let content = match wire.content {
        None if role == Role::Assistant => None,
        None => return Err(invalid("content", "is required".into())),
        Some(c) => match raw::kind(c) {
            Kind::String => Some(c.get().to_owned()),
            Kind::Array => {
                validate_content_parts(c).map_err(|m| invalid("content", m))?;
                Some(c.get().to_owned())
            }
            Kind::Null if role == Role::Assistant => Some(c.get().to_owned()),
            Kind::Null => return Err(invalid("content", "must not be null".into())),
            _ => {
                return Err(invalid(
                    "content",
                    "must be a string or an array of content parts".into(),
                ))
            }
        },
    };

    let tool_calls = match raw::non_null(wire.tool_calls) {
        None => None,
        Some(_) if role != Role::Assistant => {
            return Err(invalid(
                "tool_calls",
                "is only allowed on assistant messages".into(),
            ))
        }
        Some(calls) => {
            validate_tool_calls(calls).map_err(|m| invalid("tool_calls", m))?;
            Some(calls.get().to_owned())
        }
    };
    // `null` content is an assistant message that only calls tools (SPEC): without
    // tool_calls providers refuse it, and a stored message would fail every later turn.
    let no_content = content.as_deref().is_none_or(|c| c == "null");
    if role == Role::Assistant && no_content && tool_calls.is_none() {
        return Err(invalid(
            "content",
            "is required (not null) on an assistant message without tool_calls".into(),
        ));
    }

    let tool_call_id = match (role, wire.tool_call_id) {
        (Role::Tool, Some(id)) if !id.is_empty() => Some(id),
        (Role::Tool, _) => {
            return Err(invalid(
                "tool_call_id",
                "is required on tool messages".into(),
            ))
        }
        (_, Some(_)) => {
            return Err(invalid(
                "tool_call_id",
                "is only allowed on tool messages".into(),
            ))
        }
        (_, None) => None,
    };

    let assistant_only = |field: &str, present: bool| {
        if present && role != Role::Assistant {
            Err(invalid(
                field,
                "is only allowed on assistant messages".into(),
            ))
        } else {
            Ok(())
        }
    };
    let reasoning = raw::non_null(wire.reasoning);
    assistant_only("reasoning", reasoning.is_some())?;
    if let Some(r) = reasoning {
        if raw::kind(r) != Kind::String {
            return Err(invalid("reasoning", "must be a string".into()));
        }
    }
    let reasoning_details = raw::non_null(wire.reasoning_details);
    assistant_only("reasoning_details", reasoning_details.is_some())?;
    if let Some(r) = reasoning_details {
        if raw::kind(r) != Kind::Array {
            return Err(invalid("reasoning_details", "must be an array".into()));
        }
    }
    assistant_only("model", wire.model.is_some())?;
    if let Some(model) = &wire.model {
        super::thread::validate_model(model).map_err(|m| invalid("model", m))?;
    }
    if let Some(name) = &wire.name {
        if name.is_empty() || name.len() > 256 {
            return Err(invalid("name", "must be 1 to 256 characters".into()));
        }
    }

    Ok(NewMessage {
        role,
        content,
        name: wire.name,
        tool_calls,
        tool_call_id,
        reasoning: reasoning.map(|r| r.get().to_owned()),
        reasoning_details: reasoning_details.map(|r| r.get().to_owned()),
        model: wire.model,
    })
}

/// Tool calls follow the OpenAI shape: an array of objects, each with an `id` and a
/// `function` holding a `name` and an `arguments` string. Only the shape is checked; the
/// bytes are kept as sent.
/// Content parts: a non-empty array of objects, each with a non-empty string `type`; the
/// chat completions types carry the member they are named for (`text` a string,
/// `image_url`, `input_audio`, `file` objects), and the Responses API's names
/// (`input_text`, ...), which OpenRouter answers 400, are refused with the right one. Other
/// types pass (providers add some). Only that is checked (the bytes are stored as given): a
/// message no provider would take would fail every later turn of its thread, and messages
/// cannot be changed or removed.
fn validate_content_parts(raw: &RawValue) -> Result<(), String> {
    let parts: Vec<ContentPart> = serde_json::from_str(raw.get()).map_err(|e| {
        format!("must be a string or an array of content parts (objects with a `type`): {e}")
    })?;
    if parts.is_empty() {
        return Err("must not be an empty array".into());
    }
    for (i, part) in parts.iter().enumerate() {
        let kind = match part.kind.as_deref() {
            None => return Err(format!("[{i}] has no `type`")),
            Some("") => return Err(format!("[{i}] has an empty `type`")),
            Some(kind) => kind,
        };
        let (member, value, wanted, described) = match kind {
            "input_text" | "input_image" | "input_file" => {
                let chat = match kind {
                    "input_text" => "text",
                    "input_image" => "image_url",
                    _ => "file",
                };
                return Err(format!(
                    "[{i}] has type `{kind}`, the Responses API's name: chat completions \
                     take `{chat}`"
                ));
            }
            "text" => ("text", part.text, Kind::String, "a string"),
            "image_url" => (
                "image_url",
                part.image_url,
                Kind::Object,
                "an object with a `url`",
            ),
            "input_audio" => ("input_audio", part.input_audio, Kind::Object, "an object"),
            "file" => ("file", part.file, Kind::Object, "an object"),
            _ => continue,
        };
        if !value.is_some_and(|value| raw::kind(value) == wanted) {
            return Err(format!(
                "[{i}] of type `{kind}` needs `{member}`: {described}"
            ));
        }
    }
    Ok(())
}

/// A content part, as far as it is checked: its `type` and the member that type needs. Its
/// other members are skipped without decoding their names, which (like any string stored as
/// given) may hold lone surrogate escapes that a `str` cannot.
#[derive(Default)]
struct ContentPart<'a> {
    kind: Option<String>,
    text: Option<&'a RawValue>,
    image_url: Option<&'a RawValue>,
    input_audio: Option<&'a RawValue>,
    file: Option<&'a RawValue>,
}

impl<'de> Deserialize<'de> for ContentPart<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Part;
        impl<'de> serde::de::Visitor<'de> for Part {
            type Value = ContentPart<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a content part object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut members: A,
            ) -> Result<ContentPart<'de>, A::Error> {
                let mut part = ContentPart::default();
                while let Some(name) = members.next_key::<PartMember>()? {
                    match name {
                        PartMember::Type => part.kind = Some(members.next_value()?),
                        PartMember::Text => part.text = Some(members.next_value()?),
                        PartMember::ImageUrl => part.image_url = Some(members.next_value()?),
                        PartMember::InputAudio => part.input_audio = Some(members.next_value()?),
                        PartMember::File => part.file = Some(members.next_value()?),
                        PartMember::Other => {
                            members.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(part)
            }
        }
        deserializer.deserialize_map(Part)
    }
}

/// A content part member's name, read as bytes (never refused for its escapes).
enum PartMember {
    Type,
    Text,
    ImageUrl,
    InputAudio,
    File,
    Other,
}

impl<'de> Deserialize<'de> for PartMember {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = PartMember;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_bytes<E: serde::de::Error>(self, name: &[u8]) -> Result<PartMember, E> {
                Ok(match name {
                    b"type" => PartMember::Type,
                    b"text" => PartMember::Text,
                    b"image_url" => PartMember::ImageUrl,
                    b"input_audio" => PartMember::InputAudio,
                    b"file" => PartMember::File,
                    _ => PartMember::Other,
                })
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<PartMember, E> {
                self.visit_bytes(name.as_bytes())
            }
        }
        deserializer.deserialize_bytes(Name)
    }
}

fn validate_tool_calls(raw: &RawValue) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Call {
        id: String,
        function: Function,
    }
    #[derive(Deserialize)]
    struct Function {
        name: String,
        arguments: String,
    }
    let calls: Vec<Call> = serde_json::from_str(raw.get()).map_err(|e| {
        format!("must be an array of {{id, type, function: {{name, arguments}}}} objects: {e}")
    })?;
    if calls.is_empty() {
        return Err("must not be empty".into());
    }
    for call in &calls {
        let _ = (&call.function.name, &call.function.arguments);
        if call.id.is_empty() {
            return Err("has a call with an empty id".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn content_parts_must_be_objects_with_a_type() {
        let message = |content: &str| {
            parse_input(&raw(&format!(r#"[{{"role":"user","content":{content}}}]"#)))
        };
        let kept = r#"[ {"type":"text","text":"hi","cache_control":{"type":"ephemeral"},"x\ud800":"\udc00"} ]"#;
        let parsed = message(kept).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed[0].content.as_deref(), Some(kept), "stored as given");
        for refused in [
            "[]",
            "[1]",
            r#"["text"]"#,
            r#"[{"text":"no type"}]"#,
            r#"[{"type":""}]"#,
            r#"[{"type":1}]"#,
            // What OpenRouter answers 400 (recorded): the Responses API's part names.
            r#"[{"type":"input_text","text":"Hello"}]"#,
            r#"[{"type":"text"}]"#,
            r#"[{"type":"text","text":1}]"#,
            r#"[{"type":"image_url","image_url":"data:,x"}]"#,
            r#"[{"type":"file"}]"#,
        ] {
            assert!(message(refused).is_err(), "{refused}");
        }
        for kept in [
            r#"[{"type":"image_url","image_url":{"url":"data:,x"}},{"type":"text","text":""}]"#,
            r#"[{"type":"input_audio","input_audio":{"data":"AA==","format":"wav"}}]"#,
            r#"[{"type":"video_url","video_url":{"url":"https://x"}}]"#,
        ] {
            assert!(message(kept).is_ok(), "{kept}");
        }
    }

    #[test]
    fn string_input_becomes_one_user_message() {
        let msgs = parse_input(&raw(r#""hi \"there\"""#)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].role, Role::User);
        assert_eq!(msgs[0].content.as_deref(), Some(r#""hi \"there\"""#));
    }

    #[test]
    fn assistant_reasoning_details_keep_their_bytes() {
        let text = r#"[{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}],"reasoning_details":[ {"z":1.50e3,"a":"\ud83d\ude00"} ]}]"#;
        let msgs = parse_input(&raw(text)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            msgs[0].reasoning_details.as_deref(),
            Some(r#"[ {"z":1.50e3,"a":"\ud83d\ude00"} ]"#)
        );
        assert_eq!(msgs[0].content.as_deref(), Some("null"));
    }

    #[test]
    fn bad_messages_are_refused_with_the_field_named() {
        let cases = [
            (r#"{"role":"robot","content":"x"}"#, "role"),
            (r#"{"role":"user"}"#, "content"),
            (r#"{"role":"user","content":5}"#, "content"),
            (r#"{"role":"tool","content":"x"}"#, "tool_call_id"),
            (
                r#"{"role":"user","content":"x","tool_calls":[]}"#,
                "tool_calls",
            ),
            (
                r#"{"role":"user","content":"x","reasoning":"r"}"#,
                "reasoning",
            ),
            (r#"{"role":"user","content":"x","extra":1}"#, "extra"),
            (
                r#"{"role":"assistant","content":"x","reasoning_details":{}}"#,
                "reasoning_details",
            ),
        ];
        for (text, field) in cases {
            let err = parse_input(&raw(text))
                .err()
                .unwrap_or_else(|| panic!("{text} accepted"));
            assert!(err.to_string().contains(field), "{text}: {err}");
        }
    }
}
