//! Threads, messages, turns, lists and probe answers, as `views.rs` and the handlers write
//! them; and the events of a streamed turn.

use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, OneOfBuilder, Type};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use super::errors::ErrorBody;
use super::values::*;

/// One event of a streamed turn (`text/event-stream`); keep-alive comments come between.
pub struct TurnStreamEvent;

impl PartialSchema for TurnStreamEvent {
    fn schema() -> RefOr<Schema> {
        let event = |name: &str, description: &str, data: Option<serde_json::Value>| {
            let mut data_schema = ObjectBuilder::new()
                .schema_type(Type::String)
                .content_media_type("application/json")
                .build();
            if let Some(schema) = data {
                data_schema = with_keyword(data_schema, "contentSchema", schema);
            }
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some(description))
                .property("event", constant(name))
                .property("data", data_schema)
                .required("event")
                .required("data")
        };
        let started = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("turn_id", uuid_string())
            .property("input_message_ids", uuid_array())
            .required("turn_id")
            .required("input_message_ids");
        let failed = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("turn_id", uuid_string())
            .property("error", Ref::from_schema_name("ErrorBody"))
            .required("turn_id")
            .required("error");
        OneOfBuilder::new()
            .item(event(
                "turn.started",
                "First: the turn is stored and its input with it.",
                Some(schema_json(started)),
            ))
            .item(event(
                "chunk",
                "One upstream chunk, its JSON exactly as received, relayed as it arrives.",
                None,
            ))
            .item(event(
                "turn.completed",
                "Last, on success: the Turn, as the non-streaming answer.",
                Some(schema_json(Ref::from_schema_name("Turn"))),
            ))
            .item(event(
                "turn.failed",
                "Last, on failure: the turn id and the error the turn was stored with.",
                Some(schema_json(failed)),
            ))
            .description(Some(
                "One server-sent event of a streamed turn: turn.started, then chunk events, \
                 then turn.completed or turn.failed.",
            ))
            .into()
    }
}

impl ToSchema for TurnStreamEvent {}

/// Token and cost totals over the thread's completed turns.
#[derive(ToSchema)]
pub struct ThreadUsage {
    #[schema(minimum = 0)]
    prompt_tokens: i64,
    #[schema(minimum = 0)]
    completion_tokens: i64,
    #[schema(minimum = 0)]
    reasoning_tokens: i64,
    cost: f64,
}

/// A conversation and its defaults for turns.
#[derive(ToSchema)]
pub struct Thread {
    #[schema(format = Uuid)]
    id: String,
    #[schema(schema_with = kind_thread)]
    object: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    #[schema(schema_with = metadata)]
    metadata: String,
    #[schema(required = false)]
    model: String,
    /// System prompt sent first in every context.
    #[schema(required = false)]
    system: String,
    #[schema(required = false, schema_with = reasoning_config)]
    reasoning: String,
    #[schema(required = false, inline)]
    reasoning_replay: ReasoningReplay,
    #[schema(required = false, schema_with = params)]
    params: String,
    #[schema(minimum = 0)]
    message_count: i64,
    #[schema(required = false, format = Uuid)]
    last_message_id: String,
    #[schema(required = false)]
    usage: ThreadUsage,
}

/// Which stored `reasoning_details` are replayed upstream.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ReasoningReplay {
    SameModel,
    All,
    None,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
    Tool,
    System,
}

/// A stored message. Messages are immutable.
#[derive(ToSchema)]
pub struct Message {
    #[schema(format = Uuid)]
    id: String,
    #[schema(schema_with = kind_message)]
    object: String,
    #[schema(format = Uuid)]
    thread_id: String,
    /// 1, 2, 3, ... within the thread, in the order messages were stored.
    #[schema(minimum = 1)]
    seq: i64,
    #[schema(inline)]
    role: Role,
    #[schema(required = false, schema_with = content)]
    content: String,
    #[schema(required = false)]
    name: String,
    #[schema(required = false, schema_with = tool_calls)]
    tool_calls: String,
    #[schema(required = false)]
    tool_call_id: String,
    /// The plain-text reasoning, as sent.
    #[schema(required = false)]
    reasoning: String,
    #[schema(required = false, schema_with = reasoning_details)]
    reasoning_details: String,
    /// The turn that produced this message (its reply or its input).
    #[schema(required = false, format = Uuid)]
    turn_id: String,
    #[schema(format = DateTime)]
    created_at: String,
    /// The model that wrote it (the upstream's slug for replies, as given for imports).
    #[schema(required = false)]
    model: String,
    #[schema(required = false)]
    provider: String,
    #[schema(required = false)]
    generation_id: String,
    #[schema(required = false)]
    finish_reason: String,
    #[schema(required = false)]
    native_finish_reason: String,
    #[schema(required = false, schema_with = usage)]
    usage: String,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum TurnStatus {
    InProgress,
    Completed,
    Failed,
    Interrupted,
}

/// The upstream exchange of a turn (its audit record).
#[derive(ToSchema)]
pub struct TurnUpstream {
    /// The exact JSON body sent upstream.
    #[schema(required = false, schema_with = free_object_schema)]
    request: String,
    /// The exact body received: its JSON when it was JSON; for a stream (or a body that was
    /// not JSON), the transcript as one string.
    #[schema(required = false, schema_with = any_value)]
    response: String,
    /// The upstream's HTTP status.
    #[schema(required = false)]
    status: i64,
    /// Upstream calls made, retries included.
    #[schema(minimum = 0)]
    attempts: i64,
    #[schema(required = false, format = DateTime)]
    started_at: String,
    #[schema(required = false, format = DateTime)]
    finished_at: String,
}

fn free_object_schema() -> Object {
    free_object().build()
}

/// One call of the model on a thread.
#[derive(ToSchema)]
pub struct Turn {
    #[schema(format = Uuid)]
    id: String,
    #[schema(schema_with = kind_turn)]
    object: String,
    #[schema(format = Uuid)]
    thread_id: String,
    #[schema(inline)]
    status: TurnStatus,
    #[schema(schema_with = uuid_array)]
    input_message_ids: String,
    #[schema(required = false, format = Uuid)]
    output_message_id: String,
    /// The assistant message, when the turn completed.
    #[schema(required = false)]
    output: Message,
    /// The model requested for the turn.
    model: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(required = false, format = DateTime)]
    completed_at: String,
    #[schema(required = false, minimum = 0)]
    latency_ms: i64,
    #[schema(required = false, schema_with = usage)]
    usage: String,
    #[schema(required = false)]
    generation_id: String,
    /// Why the turn failed.
    #[schema(required = false)]
    error: ErrorBody,
    /// The audit record: only on `GET .../turns/{turn_id}`, once the turn reached upstream.
    #[schema(required = false)]
    upstream: TurnUpstream,
}

/// A page of threads.
#[derive(ToSchema)]
pub struct ThreadList {
    #[schema(schema_with = kind_list)]
    object: String,
    data: Vec<Thread>,
    #[schema(required = false, format = Uuid)]
    first_id: String,
    #[schema(required = false, format = Uuid)]
    last_id: String,
    has_more: bool,
}

/// A page of messages.
#[derive(ToSchema)]
pub struct MessageList {
    #[schema(schema_with = kind_list)]
    object: String,
    data: Vec<Message>,
    #[schema(required = false, format = Uuid)]
    first_id: String,
    #[schema(required = false, format = Uuid)]
    last_id: String,
    has_more: bool,
}

/// A page of turns (without their audit records).
#[derive(ToSchema)]
pub struct TurnList {
    #[schema(schema_with = kind_list)]
    object: String,
    data: Vec<Turn>,
    #[schema(required = false, format = Uuid)]
    first_id: String,
    #[schema(required = false, format = Uuid)]
    last_id: String,
    has_more: bool,
}

/// The messages just appended, in `seq` order.
#[derive(ToSchema)]
pub struct AppendedMessages {
    #[schema(schema_with = kind_list)]
    object: String,
    data: Vec<Message>,
}

#[derive(ToSchema)]
pub struct ThreadDeleted {
    #[schema(format = Uuid)]
    id: String,
    #[schema(schema_with = kind_thread_deleted)]
    object: String,
    deleted: bool,
}

/// The chat-completions request body the next turn would send upstream: `model`, `messages`,
/// `reasoning`, then the resolved params and `session_id` (the thread id, unless the params
/// set their own).
#[derive(ToSchema)]
pub struct ChatCompletionRequest {
    model: String,
    /// The thread's system prompt (if any), then every stored message in `seq` order.
    #[schema(schema_with = context_messages)]
    messages: String,
    #[schema(schema_with = reasoning_config)]
    reasoning: String,
}

fn context_messages() -> RefOr<Schema> {
    ArrayBuilder::new().items(free_object()).into()
}

/// A probe's answer.
#[derive(ToSchema)]
pub struct Health {
    /// `ok` (liveness) or `ready` (readiness).
    status: String,
}
