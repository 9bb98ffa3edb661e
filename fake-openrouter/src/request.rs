//! Reading an incoming chat-completions request: basic validation (what OpenRouter itself rejects
//! before any provider sees the request) and the few facts the generated reply depends on.

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
pub(crate) fn parse(body: &str) -> Result<ChatRequest, String> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| format!("Invalid JSON in request body: {e}"))?;
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
    let stream = object.get("stream").and_then(Value::as_bool) == Some(true);
    let last_is_user = messages.last().and_then(|m| m.get("role")) == Some(&Value::from("user"));
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
        .filter(|m| m.get("role") == Some(&Value::from("user")))
        .collect();
    Ok(ChatRequest {
        model,
        stream,
        reasoning: reasoning_shown(object.get("reasoning")),
        last_user_text: users.last().map(|m| text_of(m)).unwrap_or_default(),
        user_turns: users.len(),
        tool_to_call,
        body_len: body.len(),
    })
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
fn text_of(message: &Value) -> String {
    match message.get("content") {
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

    #[test]
    fn rejects_what_openrouter_rejects() {
        assert!(parse("not json").is_err());
        assert!(parse("[1]").is_err());
        assert!(parse(r#"{"model":"m"}"#).is_err());
        assert!(parse(r#"{"messages":{}}"#).is_err());
        assert!(parse(r#"{"messages":["hi"]}"#).is_err());
    }
}
