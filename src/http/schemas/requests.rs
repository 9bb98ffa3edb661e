//! Request bodies. Unknown fields are refused with 400 (`finish` marks these objects closed);
//! `null` counts as absent (or, in a PATCH, as "clear this setting").

use utoipa::ToSchema;

use super::values::*;

/// `POST /v1/threads`.
#[derive(ToSchema)]
pub struct CreateThreadRequest {
    #[schema(required = false, schema_with = metadata_or_null)]
    metadata: String,
    /// Default model of the thread's turns.
    #[schema(required = false, schema_with = model_or_null)]
    model: String,
    /// A system prompt sent first in every context.
    #[schema(required = false, schema_with = string_or_null)]
    system: String,
    #[schema(required = false, schema_with = reasoning_config_or_null)]
    reasoning: String,
    #[schema(required = false, schema_with = replay_or_null)]
    reasoning_replay: String,
    #[schema(required = false, schema_with = params_or_null)]
    params: String,
    #[schema(required = false, schema_with = messages_or_null)]
    messages: String,
}

/// `PATCH /v1/threads/{thread_id}`: absent fields are kept, `null` clears a setting
/// (`metadata: null` empties it).
#[derive(ToSchema)]
pub struct PatchThreadRequest {
    #[schema(required = false, schema_with = metadata_or_null)]
    metadata: String,
    #[schema(required = false, schema_with = model_or_null)]
    model: String,
    #[schema(required = false, schema_with = string_or_null)]
    system: String,
    #[schema(required = false, schema_with = reasoning_config_or_null)]
    reasoning: String,
    #[schema(required = false, schema_with = replay_or_null)]
    reasoning_replay: String,
    #[schema(required = false, schema_with = params_or_null)]
    params: String,
}

/// `POST /v1/threads/{thread_id}/messages`.
#[derive(ToSchema)]
pub struct AppendMessagesRequest {
    #[schema(schema_with = messages_to_append)]
    messages: String,
}

/// `POST /v1/threads/{thread_id}/turns`. An empty body is a turn without input.
#[derive(ToSchema)]
pub struct TurnRequest {
    #[schema(required = false, schema_with = turn_input)]
    input: String,
    /// Overrides the thread's model for this turn.
    #[schema(required = false, schema_with = model_or_null)]
    model: String,
    #[schema(required = false, schema_with = reasoning_config_or_null)]
    reasoning: String,
    #[schema(required = false, schema_with = replay_or_null)]
    reasoning_replay: String,
    /// `true`: answer `text/event-stream` (turn.started, chunk..., turn.completed or
    /// turn.failed).
    #[schema(required = false, schema_with = boolean_or_null)]
    stream: String,
    /// Laid over the thread's params, key by key, for this turn.
    #[schema(required = false, schema_with = params_or_null)]
    params: String,
}

/// The overrides `GET .../context` accepts in a body (body fields win over query ones).
#[derive(ToSchema)]
pub struct ContextRequest {
    #[schema(required = false, schema_with = model_or_null)]
    model: String,
    #[schema(required = false, schema_with = reasoning_config_or_null)]
    reasoning: String,
    #[schema(required = false, schema_with = replay_or_null)]
    reasoning_replay: String,
    #[schema(required = false, schema_with = params_or_null)]
    params: String,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
enum UserRole {
    User,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
enum SystemRole {
    System,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
enum AssistantRole {
    Assistant,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
enum ToolRole {
    Tool,
}

/// A user message.
#[derive(ToSchema)]
pub struct UserMessage {
    #[schema(inline)]
    role: UserRole,
    #[schema(schema_with = request_content)]
    content: String,
    #[schema(required = false, schema_with = name_or_null)]
    name: String,
}

/// A system message, stored in the thread (the thread's `system` setting is separate).
#[derive(ToSchema)]
pub struct SystemMessage {
    #[schema(inline)]
    role: SystemRole,
    #[schema(schema_with = request_content)]
    content: String,
    #[schema(required = false, schema_with = name_or_null)]
    name: String,
}

/// A tool result answering an assistant's tool call.
#[derive(ToSchema)]
pub struct ToolMessage {
    #[schema(inline)]
    role: ToolRole,
    #[schema(schema_with = request_content)]
    content: String,
    #[schema(min_length = 1)]
    tool_call_id: String,
    #[schema(required = false, schema_with = name_or_null)]
    name: String,
}

/// The fields of an assistant message (see `finish` for the rule across them).
#[derive(ToSchema)]
pub struct AssistantMessage {
    #[schema(inline)]
    role: AssistantRole,
    #[schema(required = false, schema_with = assistant_content)]
    content: String,
    #[schema(required = false, schema_with = name_or_null)]
    name: String,
    #[schema(required = false, schema_with = tool_calls_or_null)]
    tool_calls: String,
    /// The plain-text reasoning.
    #[schema(required = false, schema_with = string_or_null)]
    reasoning: String,
    #[schema(required = false, schema_with = reasoning_details_or_null)]
    reasoning_details: String,
    /// The model that wrote it: its reasoning_details are replayed to that model only
    /// (reasoning_replay same_model).
    #[schema(required = false, schema_with = model_or_null)]
    model: String,
}
