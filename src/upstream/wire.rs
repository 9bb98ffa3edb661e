//! OpenRouter's wire format, read without losing bytes: the fields the contract stores
//! verbatim (content, reasoning, reasoning_details, tool_calls, usage) are borrowed as raw
//! JSON slices of the response body, never re-serialised.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::domain::raw::{self, present, Kind};
use crate::domain::records::UsageTotals;

/// An assistant reply, its raw fields holding the exact bytes of the upstream body.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Completion {
    pub generation_id: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub finish_reason: Option<String>,
    pub native_finish_reason: Option<String>,
    pub content: Option<String>,
    pub reasoning: Option<String>,
    pub reasoning_details: Option<String>,
    pub tool_calls: Option<String>,
    pub usage: Option<String>,
    pub totals: Option<UsageTotals>,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default, borrow)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(default, borrow, deserialize_with = "present")]
    usage: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    native_finish_reason: Option<String>,
    #[serde(default, borrow)]
    message: Option<Message<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    content: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    reasoning: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    reasoning_details: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    tool_calls: Option<&'a RawValue>,
}

/// OpenRouter's error object: `{"message", "code", "metadata": {"raw", "provider_name"}}`.
#[derive(Deserialize)]
struct ErrorObject {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    metadata: Option<ErrorMetadata>,
}

#[derive(Deserialize)]
struct ErrorMetadata {
    #[serde(default)]
    raw: Option<serde_json::Value>,
    #[serde(default)]
    provider_name: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorObject,
}

/// Reads a 2xx body. `Err` carries the reason the answer counts as a failure.
pub fn parse_completion(body: &[u8]) -> Result<Completion, String> {
    let parsed: Body = serde_json::from_slice(body)
        .map_err(|e| format!("upstream answered a body that is not the expected JSON: {e}"))?;
    if let Some(error) = raw::non_null(parsed.error) {
        return Err(describe_error(error.get()));
    }
    let choice = parsed
        .choices
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| "upstream answered without any choice".to_owned())?;
    if choice.finish_reason.as_deref() == Some("error") {
        let detail = raw::non_null(choice.error)
            .map(|e| describe_error(e.get()))
            .unwrap_or_else(|| "the model stopped with finish_reason \"error\"".into());
        return Err(detail);
    }
    let message = choice
        .message
        .ok_or_else(|| "upstream answered a choice without a message".to_owned())?;
    let owned = |r: Option<&RawValue>| raw::non_null(r).map(|r| r.get().to_owned());
    let usage = owned(parsed.usage);
    Ok(Completion {
        generation_id: parsed.id,
        model: parsed.model,
        provider: parsed.provider,
        finish_reason: choice.finish_reason,
        native_finish_reason: choice.native_finish_reason,
        // `content: null` is kept as sent (a tool-call-only reply).
        content: message.content.map(|c| c.get().to_owned()),
        reasoning: owned(message.reasoning)
            .filter(|_| message.reasoning.map(raw::kind) == Some(Kind::String)),
        reasoning_details: owned(message.reasoning_details),
        tool_calls: owned(message.tool_calls),
        totals: usage.as_deref().and_then(usage_totals),
        usage,
    })
}

/// The error message of a non-2xx body, or a description of the body when it has none.
pub fn error_message(status: u16, body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(envelope) => render_error(&envelope.error),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("upstream answered HTTP {status} with an empty body")
            } else {
                let shown: String = text.chars().take(500).collect();
                format!("upstream answered HTTP {status}: {shown}")
            }
        }
    }
}

/// Describes an `error` object found inside a body.
pub(super) fn describe_error(raw_error: &str) -> String {
    match serde_json::from_str::<ErrorObject>(raw_error) {
        Ok(error) => render_error(&error),
        Err(_) => format!("upstream reported an error: {raw_error}"),
    }
}

fn render_error(error: &ErrorObject) -> String {
    let mut text = error
        .message
        .clone()
        .unwrap_or_else(|| "upstream reported an error".into());
    if let Some(code) = &error.code {
        text.push_str(&format!(" (code {code})"));
    }
    if let Some(metadata) = &error.metadata {
        if let Some(provider) = &metadata.provider_name {
            text.push_str(&format!(" [provider {provider}]"));
        }
        match &metadata.raw {
            Some(serde_json::Value::String(raw)) => text.push_str(&format!(": {raw}")),
            Some(serde_json::Value::Null) | None => {}
            Some(other) => text.push_str(&format!(": {other}")),
        }
    }
    text
}

/// Token and cost figures of an OpenRouter usage object.
pub fn usage_totals(usage: &str) -> Option<UsageTotals> {
    #[derive(Deserialize)]
    struct Usage {
        #[serde(default)]
        prompt_tokens: Option<i64>,
        #[serde(default)]
        completion_tokens: Option<i64>,
        #[serde(default)]
        completion_tokens_details: Option<Details>,
        #[serde(default)]
        cost: Option<f64>,
    }
    #[derive(Deserialize)]
    struct Details {
        #[serde(default)]
        reasoning_tokens: Option<i64>,
    }
    let usage: Usage = serde_json::from_str(usage).ok()?;
    Some(UsageTotals {
        prompt_tokens: usage.prompt_tokens.unwrap_or(0),
        completion_tokens: usage.completion_tokens.unwrap_or(0),
        reasoning_tokens: usage
            .completion_tokens_details
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0),
        cost: usage.cost.unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_body_keeps_raw_fields_exact() {
        let body = b"\n         \n\n{\"id\":\"gen-1\",\"model\":\"m-2025\",\"choices\":[{\"finish_reason\":\"tool_calls\",\"message\":{\"role\":\"assistant\",\"content\":null,\"reasoning\":\"r\\u00e9\",\"tool_calls\":[{\"id\":\"c\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\": 1}\"}}],\"reasoning_details\":[ {\"b\":1.50e3,\"a\":-0.0} ]}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"completion_tokens_details\":{\"reasoning_tokens\":2},\"cost\":0.5}}";
        let c = parse_completion(body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.content.as_deref(), Some("null"));
        assert_eq!(c.reasoning.as_deref(), Some("\"r\\u00e9\""));
        assert_eq!(
            c.reasoning_details.as_deref(),
            Some("[ {\"b\":1.50e3,\"a\":-0.0} ]")
        );
        assert_eq!(c.totals.map(|t| t.reasoning_tokens), Some(2));
    }

    #[test]
    fn error_inside_a_200_body_is_a_failure() {
        let body = br#"{"error":{"message":"Provider returned error","code":400,"metadata":{"raw":"missing reasoning_content","provider_name":"DeepSeek"}}}"#;
        let err = parse_completion(body).err().unwrap_or_default();
        assert!(
            err.contains("missing reasoning_content") && err.contains("DeepSeek"),
            "{err}"
        );
        assert!(parse_completion(b"<html>").is_err());
        assert!(parse_completion(br#"{"choices":[]}"#).is_err());
        assert!(parse_completion(
            br#"{"choices":[{"finish_reason":"error","message":{"content":""}}]}"#
        )
        .is_err());
    }
}
