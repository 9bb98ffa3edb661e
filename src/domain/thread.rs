//! Thread settings (model, system prompt, reasoning, replay policy, params, metadata) and the
//! create/patch requests that set them.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::message::{parse_messages, NewMessage};
use super::raw::{self, present, Kind};
use crate::error::ApiError;

pub const MAX_METADATA_KEYS: usize = 16;
pub const MAX_METADATA_KEY_CHARS: usize = 64;
pub const MAX_METADATA_VALUE_CHARS: usize = 512;
const MAX_MODEL_CHARS: usize = 200;

/// Which stored `reasoning_details` go back upstream (SPEC section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningReplay {
    /// Only to the model that produced them; other models get the `reasoning` text.
    #[default]
    SameModel,
    /// Always, whatever the model.
    All,
    /// Never: neither `reasoning_details` nor `reasoning` text are replayed.
    None,
}

impl ReasoningReplay {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SameModel => "same_model",
            Self::All => "all",
            Self::None => "none",
        }
    }

    pub fn parse(text: &str) -> Result<Self, ApiError> {
        match text {
            "same_model" => Ok(Self::SameModel),
            "all" => Ok(Self::All),
            "none" => Ok(Self::None),
            _ => Err(ApiError::invalid_param(
                "reasoning_replay",
                "`reasoning_replay` must be one of same_model, all, none",
            )),
        }
    }
}

/// Chat-completion fields that threadkeeper sets itself and so refuses inside `params`.
const RESERVED_PARAMS: [&str; 4] = ["messages", "model", "stream", "reasoning"];

/// `params`, validated: a JSON object whose values are kept as raw bytes.
pub type Params = BTreeMap<String, Box<RawValue>>;

pub fn parse_params(raw: &RawValue, param: &str) -> Result<Params, ApiError> {
    if raw::kind(raw) != Kind::Object {
        return Err(ApiError::invalid_param(
            param,
            format!("`{param}` must be a JSON object"),
        ));
    }
    let params: Params = serde_json::from_str(raw.get())
        .map_err(|e| ApiError::invalid_param(param, format!("`{param}`: {e}")))?;
    if let Some(key) = RESERVED_PARAMS.iter().find(|k| params.contains_key(**k)) {
        return Err(ApiError::invalid_param(
            format!("{param}.{key}"),
            format!("`{key}` cannot be set inside `{param}`; use the request's own field"),
        ));
    }
    Ok(params)
}

/// Writes params back as a compact object with raw values (keys in sorted order).
pub fn params_to_json(params: &Params) -> String {
    let mut w = super::json::ObjectWriter::new();
    for (key, value) in params {
        w.raw(key, value.get());
    }
    w.finish()
}

pub fn parse_reasoning(raw: &RawValue, param: &str) -> Result<String, ApiError> {
    if raw::kind(raw) != Kind::Object {
        return Err(ApiError::invalid_param(
            param,
            format!("`{param}` must be an OpenRouter reasoning object, e.g. {{\"enabled\":true}}"),
        ));
    }
    Ok(raw.get().to_owned())
}

pub fn validate_model(model: &str) -> Result<(), String> {
    if model.trim().is_empty() || model.len() > MAX_MODEL_CHARS {
        return Err(format!(
            "must be a model name of 1 to {MAX_MODEL_CHARS} characters"
        ));
    }
    if model.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

fn parse_model(raw: &RawValue) -> Result<String, ApiError> {
    let model: String = serde_json::from_str(raw.get())
        .map_err(|_| ApiError::invalid_param("model", "`model` must be a string"))?;
    validate_model(&model).map_err(|m| ApiError::invalid_param("model", format!("`model` {m}")))?;
    Ok(model)
}

fn parse_system(raw: &RawValue) -> Result<String, ApiError> {
    serde_json::from_str(raw.get())
        .map_err(|_| ApiError::invalid_param("system", "`system` must be a string"))
}

fn parse_replay(raw: &RawValue) -> Result<ReasoningReplay, ApiError> {
    let text: String = serde_json::from_str(raw.get()).map_err(|_| {
        ApiError::invalid_param("reasoning_replay", "`reasoning_replay` must be a string")
    })?;
    ReasoningReplay::parse(&text)
}

pub type Metadata = BTreeMap<String, String>;

pub fn parse_metadata(raw: &RawValue) -> Result<Metadata, ApiError> {
    let metadata: Metadata = serde_json::from_str(raw.get()).map_err(|e| {
        ApiError::invalid_param(
            "metadata",
            format!("`metadata` must be an object of string values: {e}"),
        )
    })?;
    if metadata.len() > MAX_METADATA_KEYS {
        return Err(ApiError::invalid_param(
            "metadata",
            format!("`metadata` may hold at most {MAX_METADATA_KEYS} keys"),
        ));
    }
    for (key, value) in &metadata {
        if key.is_empty() || key.chars().count() > MAX_METADATA_KEY_CHARS {
            return Err(ApiError::invalid_param(
                "metadata",
                format!("`metadata` keys must be 1 to {MAX_METADATA_KEY_CHARS} characters"),
            ));
        }
        if value.chars().count() > MAX_METADATA_VALUE_CHARS {
            return Err(ApiError::invalid_param(
                format!("metadata.{key}"),
                format!("`metadata` values must be at most {MAX_METADATA_VALUE_CHARS} characters"),
            ));
        }
    }
    Ok(metadata)
}

/// The thread's defaults for its turns. `None` means "not set": the turn or the service
/// configuration decides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThreadSettings {
    pub model: Option<String>,
    pub system: Option<String>,
    pub reasoning: Option<String>,
    pub reasoning_replay: Option<ReasoningReplay>,
    pub params: Option<String>,
}

/// `POST /v1/threads`, validated.
#[derive(Debug, Clone)]
pub struct CreateThread {
    pub metadata: Metadata,
    pub settings: ThreadSettings,
    pub messages: Vec<NewMessage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireThread<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    metadata: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    model: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    system: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    reasoning: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    reasoning_replay: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    messages: Option<&'a RawValue>,
}

/// A field of a PATCH: left alone, cleared (`null`), or set.
#[derive(Debug, Clone, PartialEq)]
pub enum Change<T> {
    Keep,
    Clear,
    Set(T),
}

impl<T> Change<T> {
    fn from_raw(
        raw: Option<&RawValue>,
        parse: impl FnOnce(&RawValue) -> Result<T, ApiError>,
    ) -> Result<Self, ApiError> {
        match raw {
            None => Ok(Change::Keep),
            Some(r) if raw::kind(r) == Kind::Null => Ok(Change::Clear),
            Some(r) => parse(r).map(Change::Set),
        }
    }
}

/// `PATCH /v1/threads/{id}`, validated.
#[derive(Debug, Clone)]
pub struct ThreadPatch {
    pub metadata: Change<Metadata>,
    pub model: Change<String>,
    pub system: Change<String>,
    pub reasoning: Change<String>,
    pub reasoning_replay: Change<ReasoningReplay>,
    pub params: Change<String>,
}

fn parse_wire(body: &[u8]) -> Result<WireThread<'_>, ApiError> {
    super::turn::from_body(body)
}

fn params_string(r: &RawValue) -> Result<String, ApiError> {
    parse_params(r, "params").map(|_| r.get().to_owned())
}

pub fn parse_create(body: &[u8]) -> Result<CreateThread, ApiError> {
    let wire = parse_wire(body)?;
    let settings = ThreadSettings {
        model: raw::non_null(wire.model).map(parse_model).transpose()?,
        system: raw::non_null(wire.system).map(parse_system).transpose()?,
        reasoning: raw::non_null(wire.reasoning)
            .map(|r| parse_reasoning(r, "reasoning"))
            .transpose()?,
        reasoning_replay: raw::non_null(wire.reasoning_replay)
            .map(parse_replay)
            .transpose()?,
        params: raw::non_null(wire.params).map(params_string).transpose()?,
    };
    Ok(CreateThread {
        metadata: raw::non_null(wire.metadata)
            .map(parse_metadata)
            .transpose()?
            .unwrap_or_default(),
        settings,
        messages: raw::non_null(wire.messages)
            .map(|m| parse_messages(m, "messages"))
            .transpose()?
            .unwrap_or_default(),
    })
}

pub fn parse_patch(body: &[u8]) -> Result<ThreadPatch, ApiError> {
    let wire = parse_wire(body)?;
    if wire.messages.is_some() {
        return Err(ApiError::invalid_param(
            "messages",
            "messages cannot be changed; append them with POST /v1/threads/{thread_id}/messages",
        ));
    }
    Ok(ThreadPatch {
        metadata: Change::from_raw(wire.metadata, parse_metadata)?,
        model: Change::from_raw(wire.model, parse_model)?,
        system: Change::from_raw(wire.system, parse_system)?,
        reasoning: Change::from_raw(wire.reasoning, |r| parse_reasoning(r, "reasoning"))?,
        reasoning_replay: Change::from_raw(wire.reasoning_replay, parse_replay)?,
        params: Change::from_raw(wire.params, params_string)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_refuse_reserved_fields() {
        let raw: Box<RawValue> = serde_json::from_str(r#"{"temperature":0.2,"stream":true}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        let err = parse_params(&raw, "params").err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("stream"));
    }

    #[test]
    fn metadata_limits_are_enforced() {
        let many: String = (0..17)
            .map(|i| format!("\"k{i}\":\"v\""))
            .collect::<Vec<_>>()
            .join(",");
        let raw: Box<RawValue> =
            serde_json::from_str(&format!("{{{many}}}")).unwrap_or_else(|e| panic!("{e}"));
        assert!(parse_metadata(&raw).is_err());
        let raw: Box<RawValue> =
            serde_json::from_str(r#"{"a":1}"#).unwrap_or_else(|e| panic!("{e}"));
        assert!(parse_metadata(&raw).is_err());
    }

    #[test]
    fn patch_tells_clear_from_keep() {
        let patch =
            parse_patch(br#"{"model":null,"system":"be brief"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(patch.model, Change::Clear);
        assert_eq!(patch.system, Change::Set("be brief".into()));
        assert_eq!(patch.params, Change::Keep);
    }
}
