//! YAML cassettes: fantasy's go-vcr v2 format and pydantic-ai's vcrpy format. Both list
//! `interactions`; they differ in where bodies and status live:
//!
//! * go-vcr: `request.body` and `response.body` are the exact strings, status in `response.code`.
//! * vcrpy: `request.parsed_body` / `response.parsed_body` are JSON re-parsed into YAML (so they
//!   are re-serialised here, in the YAML's key order), `response.body.string` is exact text (used
//!   for SSE), status in `response.status.code`.

use serde_yaml::Value;

use super::Exchange;

pub(super) fn load(text: &str) -> Result<Vec<Exchange>, String> {
    let cassette: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let interactions = cassette
        .get("interactions")
        .and_then(Value::as_sequence)
        .ok_or("no `interactions` list")?;
    interactions
        .iter()
        .enumerate()
        .map(|(index, interaction)| {
            exchange(interaction).map_err(|e| format!("interaction {index}: {e}"))
        })
        .collect()
}

fn exchange(interaction: &Value) -> Result<Exchange, String> {
    let request = interaction.get("request").ok_or("no request")?;
    let response = interaction.get("response").ok_or("no response")?;
    let (status, response_body) = match response.get("code") {
        // go-vcr: exact strings.
        Some(code) => (status_of(code)?, exact_body(response)?),
        // vcrpy: status nested, body exact text or re-parsed JSON.
        None => {
            let code = response
                .get("status")
                .and_then(|s| s.get("code"))
                .ok_or("no response.code or response.status.code")?;
            (status_of(code)?, vcrpy_body(response)?)
        }
    };
    let request_body = match request.get("body") {
        Some(body) if request.get("parsed_body").is_none() => match body {
            Value::String(text) => text.clone(),
            other => other
                .get("string")
                .and_then(Value::as_str)
                .ok_or("request.body is neither a string nor {string}")?
                .to_owned(),
        },
        _ => to_json(request.get("parsed_body").ok_or("no request body")?)?,
    };
    let is_sse = header(response, "content-type")
        .is_some_and(|ct| ct.contains("text/event-stream"))
        || looks_like_sse(&response_body);
    Ok(Exchange {
        request_body,
        status,
        response_body,
        is_sse,
    })
}

fn status_of(code: &Value) -> Result<u16, String> {
    code.as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .ok_or_else(|| format!("bad status code {code:?}"))
}

fn exact_body(response: &Value) -> Result<String, String> {
    response
        .get("body")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "response.body is not a string".to_owned())
}

fn vcrpy_body(response: &Value) -> Result<String, String> {
    if let Some(text) = response
        .get("body")
        .and_then(|b| b.get("string"))
        .and_then(Value::as_str)
    {
        return Ok(text.to_owned());
    }
    to_json(response.get("parsed_body").ok_or("no response body")?)
}

/// Serialise YAML as compact JSON. serde_yaml's mappings keep their order, so this keeps the
/// recorded key order (unlike going through `serde_json::Value`).
fn to_json(value: &Value) -> Result<String, String> {
    serde_json::to_string(value).map_err(|e| format!("body is not JSON-compatible: {e}"))
}

/// First value of a response header, matching the name case-insensitively (go-vcr writes
/// `Content-Type`, vcrpy `content-type`); values are lists in both formats.
fn header<'a>(response: &'a Value, name: &str) -> Option<&'a str> {
    let headers = response.get("headers")?.as_mapping()?;
    let (_, values) = headers
        .iter()
        .find(|(key, _)| key.as_str().is_some_and(|k| k.eq_ignore_ascii_case(name)))?;
    match values {
        Value::Sequence(list) => list.first()?.as_str(),
        other => other.as_str(),
    }
}

fn looks_like_sse(body: &str) -> bool {
    body.starts_with("data:") || body.starts_with(": ")
}
