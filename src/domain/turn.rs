//! A turn request (`POST .../turns`, and the overrides `GET .../context` accepts) and the
//! options it resolves to against the thread's defaults and the service's configuration.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::message::{parse_input, NewMessage};
use super::raw::{self, present};
use super::thread::{parse_params, parse_reasoning, validate_model, Params, ReasoningReplay};
use crate::error::ApiError;

/// Parses a request body, telling malformed JSON (`invalid_json`) from JSON of the wrong
/// shape (`invalid_request`).
///
/// Request bodies are JSON objects: derived `Deserialize` would also take an array and fill
/// the fields by position, so anything else is refused before serde sees it.
pub fn from_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    check_depth(body)?;
    let raw: &RawValue = serde_json::from_slice(body).map_err(classify)?;
    if raw::kind(raw) != raw::Kind::Object {
        return Err(ApiError::invalid("the request body must be a JSON object"));
    }
    serde_json::from_str(raw.get()).map_err(classify)
}

/// Like `from_body`, for types that own their data.
pub fn from_body_owned<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    from_body(body)
}

/// Deepest nesting of arrays and objects a request body may have: serde_json's own limit,
/// which raw values (read by skipping, without that limit) would otherwise escape; a value
/// stored deeper could not be read back by most JSON clients.
pub const MAX_DEPTH: usize = 128;

/// One pass over the bytes, counting brackets outside strings.
fn check_depth(body: &[u8]) -> Result<(), ApiError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(ApiError::InvalidJson(format!(
                        "request body is nested deeper than {MAX_DEPTH} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn classify(err: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::InvalidJson(format!("request body is not valid JSON: {err}"))
        }
        Category::Data => ApiError::invalid(format!("invalid request body: {err}")),
    }
}

/// Per-turn overrides of the thread's defaults.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub model: Option<String>,
    pub reasoning: Option<String>,
    pub reasoning_replay: Option<ReasoningReplay>,
    pub params: Option<Params>,
}

/// `POST /v1/threads/{id}/turns`, validated.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    pub input: Vec<NewMessage>,
    pub overrides: Overrides,
    pub stream: bool,
    pub idempotency: Option<Idempotency>,
}

/// An `Idempotency-Key` and the fingerprint of the request it came with: a repeat must be
/// the same request (same body bytes) to be answered with the stored turn.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request_sha256: String,
}

/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireTurn<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    input: Option<&'a RawValue>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default, borrow, deserialize_with = "present")]
    reasoning: Option<&'a RawValue>,
    #[serde(default)]
    reasoning_replay: Option<ReasoningReplay>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default, borrow, deserialize_with = "present")]
    params: Option<&'a RawValue>,
}

pub fn parse_turn(body: &[u8]) -> Result<TurnRequest, ApiError> {
    let wire: WireTurn = from_body(body)?;
    let input = match wire.input {
        Some(raw) => parse_input(raw)?,
        None => Vec::new(),
    };
    let overrides = overrides(
        wire.model,
        wire.reasoning,
        wire.reasoning_replay,
        wire.params,
    )?;
    Ok(TurnRequest {
        input,
        overrides,
        stream: wire.stream.unwrap_or(false),
        idempotency: None,
    })
}

/// The overrides of `GET .../context`, from its body (all fields but `input`/`stream` are
/// optional) or from query parameters whose `reasoning` and `params` hold JSON text.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextQuery {
    pub model: Option<String>,
    pub reasoning: Option<String>,
    pub reasoning_replay: Option<ReasoningReplay>,
    pub params: Option<String>,
}

pub fn parse_context_overrides(query: ContextQuery, body: &[u8]) -> Result<Overrides, ApiError> {
    let from_query = {
        let reasoning: Option<Box<RawValue>> = query
            .reasoning
            .as_deref()
            .map(|t| {
                serde_json::from_str(t).map_err(|_| {
                    ApiError::invalid_param("reasoning", "`reasoning` must be JSON text")
                })
            })
            .transpose()?;
        let params: Option<Box<RawValue>> = query
            .params
            .as_deref()
            .map(|t| {
                serde_json::from_str(t)
                    .map_err(|_| ApiError::invalid_param("params", "`params` must be JSON text"))
            })
            .transpose()?;
        overrides(
            query.model,
            reasoning.as_deref(),
            query.reasoning_replay,
            params.as_deref(),
        )?
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(from_query);
    }
    let wire: WireTurn = from_body(body)?;
    if wire.input.is_some() || wire.stream.is_some() {
        return Err(ApiError::invalid(
            "`input` and `stream` do not apply to GET .../context",
        ));
    }
    let from_body = overrides(
        wire.model,
        wire.reasoning,
        wire.reasoning_replay,
        wire.params,
    )?;
    // Body fields win over query fields.
    Ok(Overrides {
        model: from_body.model.or(from_query.model),
        reasoning: from_body.reasoning.or(from_query.reasoning),
        reasoning_replay: from_body.reasoning_replay.or(from_query.reasoning_replay),
        params: from_body.params.or(from_query.params),
    })
}

fn overrides(
    model: Option<String>,
    reasoning: Option<&RawValue>,
    reasoning_replay: Option<ReasoningReplay>,
    params: Option<&RawValue>,
) -> Result<Overrides, ApiError> {
    if let Some(model) = &model {
        validate_model(model)
            .map_err(|m| ApiError::invalid_param("model", format!("`model` {m}")))?;
    }
    Ok(Overrides {
        model,
        reasoning: raw::non_null(reasoning)
            .map(|r| parse_reasoning(r, "reasoning"))
            .transpose()?,
        reasoning_replay,
        params: raw::non_null(params)
            .map(|p| parse_params(p, "params"))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_body_is_a_turn_without_input() {
        let turn = parse_turn(b"").unwrap_or_else(|e| panic!("{e}"));
        assert!(turn.input.is_empty());
        assert!(!turn.stream);
    }

    #[test]
    fn malformed_json_and_wrong_shapes_get_different_codes() {
        let bad_json = parse_turn(b"{\"input\":").err().map(|e| e.body().code);
        assert_eq!(bad_json.as_deref(), Some("invalid_json"));
        let wrong = parse_turn(br#"{"input":"x","stream":"yes"}"#)
            .err()
            .map(|e| e.body().code);
        assert_eq!(wrong.as_deref(), Some("invalid_request"));
        let unknown = parse_turn(br#"{"inptu":"x"}"#).err().map(|e| e.to_string());
        assert!(unknown.unwrap_or_default().contains("inptu"));
    }

    #[test]
    fn nesting_deeper_than_serde_json_allows_is_invalid_json() {
        let deep = format!(
            "{{\"params\":{{\"x\":{}{}}}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        let err = parse_turn(deep.as_bytes()).err().map(|e| e.body().code);
        assert_eq!(err.as_deref(), Some("invalid_json"));
        let brackets_in_strings = format!("{{\"input\":\"{}\"}}", "[{".repeat(500));
        assert!(parse_turn(brackets_in_strings.as_bytes()).is_ok());
    }

    #[test]
    fn params_cannot_carry_messages() {
        let err = parse_turn(br#"{"params":{"messages":[]}}"#)
            .err()
            .map(|e| e.body().code);
        assert_eq!(err.as_deref(), Some("invalid_request"));
    }
}
