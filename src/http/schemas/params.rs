//! Path, query and header parameters.

use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::{IntoParams, ToSchema};

use super::resources::ReasoningReplay;
use super::values::*;

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ThreadPath {
    /// The thread's id (a UUID).
    #[param(format = Uuid)]
    thread_id: String,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MessagePath {
    /// The thread's id (a UUID).
    #[param(format = Uuid)]
    thread_id: String,
    /// The message's id (a UUID).
    #[param(format = Uuid)]
    message_id: String,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TurnPath {
    /// The thread's id (a UUID).
    #[param(format = Uuid)]
    thread_id: String,
    /// The turn's id (a UUID).
    #[param(format = Uuid)]
    turn_id: String,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ListOrder {
    Asc,
    Desc,
}

/// The list query: no other parameters are accepted.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<u32>,
    /// Only items after this id (in list order).
    #[param(format = Uuid)]
    after: Option<String>,
    /// Only items before this id (in list order).
    #[param(format = Uuid)]
    before: Option<String>,
    /// Threads default to `desc` (newest first), messages and turns to `asc`.
    #[param(inline)]
    order: Option<ListOrder>,
}

/// The overrides of `GET .../context` as query parameters (the body may carry them too).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContextQuery {
    /// Overrides the thread's model.
    #[param(schema_with = model)]
    model: Option<String>,
    /// An OpenRouter reasoning object as JSON text, e.g. `{"effort":"high"}`.
    reasoning: Option<String>,
    #[param(inline)]
    reasoning_replay: Option<ReasoningReplay>,
    /// Chat-completion params as JSON text (a JSON object), e.g. `{"temperature":0.2}`.
    params: Option<String>,
}

/// `reasoning` and `params` in the query of `GET .../context` are JSON text: described as
/// JSON-serialised parameters (`content` instead of `schema`), which utoipa's `Parameter` has
/// no field for, so the keyword goes in through its flattened `extensions`.
pub fn json_text_parameters(parameters: &mut [Parameter]) {
    for parameter in parameters
        .iter_mut()
        .filter(|p| p.parameter_in == ParameterIn::Query)
    {
        let (schema, example) = match parameter.name.as_str() {
            "reasoning" => (
                reasoning_config_or_null(),
                serde_json::json!({"enabled": true}),
            ),
            "params" => (params_or_null(), serde_json::json!({"temperature": 0.2})),
            _ => continue,
        };
        parameter.schema = None;
        let content = serde_json::json!({
            "application/json": { "schema": schema_json(schema), "example": example }
        });
        parameter
            .extensions
            .get_or_insert_with(Default::default)
            .insert("content".into(), content);
    }
}

#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// Makes the turn request safe to repeat: a repeat with the same key on the same thread
    /// returns the stored turn (or, if that turn failed, runs the model again on its stored
    /// input) instead of storing the input again; the same key with a different body gets
    /// 422. 1 to 255 visible ASCII characters.
    #[param(
        rename = "Idempotency-Key",
        nullable = false,
        min_length = 1,
        max_length = 255
    )]
    idempotency_key: Option<String>,
}
