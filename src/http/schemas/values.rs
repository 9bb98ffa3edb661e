//! Schemas of the values the service keeps as raw JSON or checks by hand (content, tool calls,
//! reasoning blocks, metadata, params, model names, the input union), built with utoipa's
//! builders and used through `schema_with` or by reference.

use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, Object, ObjectBuilder, OneOfBuilder,
    SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr, Schema};

pub(super) fn constant(value: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some([value]))
        .build()
}

pub(super) fn kind_thread() -> Object {
    constant("thread")
}

pub(super) fn kind_message() -> Object {
    constant("message")
}

pub(super) fn kind_turn() -> Object {
    constant("turn")
}

pub(super) fn kind_list() -> Object {
    constant("list")
}

pub(super) fn kind_thread_deleted() -> Object {
    constant("thread.deleted")
}

/// Any JSON value.
pub(super) fn any_value() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .build()
}

/// A JSON object with any members.
pub(super) fn free_object() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(true)))
}

pub(super) fn uuid_string() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
}

pub(super) fn uuid_array() -> ArrayBuilder {
    ArrayBuilder::new().items(uuid_string())
}

pub(super) fn metadata() -> Object {
    metadata_builder().build()
}

pub(super) fn metadata_or_null() -> Object {
    metadata_builder()
        .schema_type(SchemaType::Array(vec![Type::Object, Type::Null]))
        .build()
}

pub(super) fn metadata_builder() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "String values under string keys: at most 16 keys of 1 to 64 characters, values of \
             at most 512 characters.",
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(512)),
        ))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(64)),
        ))
        .max_properties(Some(16))
}

/// OpenRouter's reasoning object, kept as sent (e.g. `{"enabled":true}`, `{"effort":"high"}`).
pub(super) fn reasoning_config() -> Object {
    free_object()
        .description(Some(
            "OpenRouter's reasoning object, kept as sent, e.g. {\"enabled\":true} or \
             {\"effort\":\"high\"}.",
        ))
        .build()
}

pub(super) fn reasoning_config_or_null() -> Object {
    free_object()
        .schema_type(SchemaType::Array(vec![Type::Object, Type::Null]))
        .description(Some(
            "OpenRouter's reasoning object, e.g. {\"enabled\":true}; null means not set.",
        ))
        .build()
}

pub(super) const PARAMS_DESCRIPTION: &str =
    "Other chat-completion fields (temperature, max_tokens, tools, \
    tool_choice, top_p, stop, seed, response_format, provider, ...), forwarded verbatim. \
    `messages`, `model`, `stream` and `reasoning` are refused here with 400: use the request's \
    own fields.";

pub(super) fn params() -> Object {
    free_object().description(Some(PARAMS_DESCRIPTION)).build()
}

pub(super) fn params_or_null() -> Object {
    free_object()
        .schema_type(SchemaType::Array(vec![Type::Object, Type::Null]))
        .description(Some(PARAMS_DESCRIPTION))
        .build()
}

pub(super) fn usage() -> Object {
    free_object()
        .description(Some(
            "The upstream's usage report, exactly as it sent it (prompt_tokens, \
             completion_tokens, completion_tokens_details, cost, ...).",
        ))
        .build()
}

/// A stored message's content: a string, an array of content parts, or `null` (an assistant
/// message that only calls tools), exactly as sent.
pub(super) fn content() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![
            Type::String,
            Type::Array,
            Type::Null,
        ]))
        .description(Some(
            "A string, an array of content parts, or null (an assistant message that only \
             calls tools), exactly as it was sent.",
        ))
        .build()
}

pub(super) fn request_content() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(content_parts())
        .description(Some(
            "A string or a non-empty array of content parts (OpenAI/OpenRouter shapes: objects \
             with a non-empty string `type`), stored as sent.",
        ))
        .into()
}

pub(super) fn assistant_content() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(content_parts())
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "A string, a non-empty array of content parts, or null (only with `tool_calls`); \
             stored and replayed as sent.",
        ))
        .into()
}

/// Content parts as a request may carry them: the `type`, and the member a chat
/// completions type needs, are checked.
fn content_parts() -> ArrayBuilder {
    ArrayBuilder::new()
        .description(Some(
            "Content parts: `text` parts need a string `text`; `image_url`, `input_audio` and \
             `file` parts an object of that name; the Responses API's `input_text`, \
             `input_image` and `input_file` are refused (chat completions take `text`, \
             `image_url`, `file`); other types pass as given.",
        ))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(
                    "type",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1)),
                )
                .required("type")
                .additional_properties(Some(AdditionalProperties::FreeForm(true))),
        )
        .min_items(Some(1))
}

pub(super) fn reasoning_details() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Array)
        .description(Some(
            "Reasoning blocks (objects such as {\"type\":\"reasoning.text\",\"text\":..., \
             \"signature\":...} or {\"type\":\"reasoning.encrypted\",\"data\":...}, with any \
             other fields), returned byte for byte as stored.",
        ))
        .build()
}

pub(super) fn reasoning_details_or_null() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::Array, Type::Null]))
        .description(Some(
            "Reasoning blocks from an earlier reply, stored as the exact bytes of this value.",
        ))
        .build()
}

pub(super) fn tool_calls() -> RefOr<Schema> {
    ArrayBuilder::new()
        .items(free_object())
        .description(Some(
            "Tool calls in the OpenAI/OpenRouter shape ({id, type, function: {name, \
             arguments}}), exactly as stored.",
        ))
        .into()
}

pub(super) fn tool_calls_or_null() -> RefOr<Schema> {
    let function = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("name", ObjectBuilder::new().schema_type(Type::String))
        .property("arguments", ObjectBuilder::new().schema_type(Type::String))
        .required("name")
        .required("arguments")
        .additional_properties(Some(AdditionalProperties::FreeForm(true)));
    let call = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "id",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1)),
        )
        .property("function", function)
        .required("id")
        .required("function")
        .additional_properties(Some(AdditionalProperties::FreeForm(true)));
    ArrayBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::Array, Type::Null]))
        .items(call)
        .min_items(Some(1))
        .description(Some(
            "Tool calls in the OpenAI/OpenRouter shape ({id, type: \"function\", function: \
             {name, arguments}}), stored as sent.",
        ))
        .into()
}

pub(super) const MODEL_PATTERN: &str =
    r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";

pub(super) fn model_builder() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(200))
        .pattern(Some(MODEL_PATTERN))
        .description(Some(
            "An OpenRouter model name (1 to 200 bytes, not blank, no control characters), \
             e.g. deepseek/deepseek-v3.2-exp.",
        ))
}

pub(super) fn model() -> Object {
    model_builder().build()
}

pub(super) fn model_or_null() -> Object {
    model_builder()
        .schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
        .build()
}

pub(super) fn string_or_null() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
        .build()
}

pub(super) fn boolean_or_null() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::Boolean, Type::Null]))
        .build()
}

pub(super) fn name_or_null() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
        .min_length(Some(1))
        .max_length(Some(256))
        .description(Some("A participant name, 1 to 256 bytes."))
        .build()
}

pub(super) fn replay_or_null() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
        .enum_values(Some([
            serde_json::json!("same_model"),
            serde_json::json!("all"),
            serde_json::json!("none"),
            serde_json::Value::Null,
        ]))
        .description(Some(
            "Which stored reasoning_details are replayed upstream: same_model (default), all \
             or none.",
        ))
        .build()
}

pub(super) fn input_message_ref() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name("InputMessage"))
}

pub(super) fn input_messages(nullable: bool) -> ArrayBuilder {
    let builder = ArrayBuilder::new()
        .items(input_message_ref())
        .max_items(Some(crate::domain::message::MAX_MESSAGES_PER_REQUEST));
    if nullable {
        builder.schema_type(SchemaType::Array(vec![Type::Array, Type::Null]))
    } else {
        builder
    }
}

pub(super) fn messages_or_null() -> RefOr<Schema> {
    input_messages(true)
        .description(Some(
            "Initial history, imported as given (assistant reasoning_details included \
             verbatim).",
        ))
        .into()
}

pub(super) fn messages_to_append() -> RefOr<Schema> {
    input_messages(false).min_items(Some(1)).into()
}

pub(super) fn turn_input() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("One user message with this text (empty: no input).")),
        )
        .item(input_message_ref())
        .item(input_messages(false))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "A string (one user message), one message object, or an array of message objects \
             (e.g. tool results). Absent, null or empty: no new input; the model is called on \
             the context as it stands.",
        ))
        .into()
}

/// `InputMessage`: one of the role-specific message shapes.
pub(super) fn input_message() -> RefOr<Schema> {
    let one_of = |name: &str| RefOr::Ref(Ref::from_schema_name(name));
    OneOfBuilder::new()
        .item(one_of("UserMessage"))
        .item(one_of("SystemMessage"))
        .item(one_of("AssistantMessage"))
        .item(one_of("ToolMessage"))
        .description(Some(
            "A message a client sends: `role` picks the shape. Any other field is refused \
             with 400.",
        ))
        .into()
}

/// Sets a keyword utoipa's schema types have no field for. Their `extensions` are written
/// flattened into the schema object, which is all a keyword is.
pub(super) fn with_keyword(mut object: Object, key: &str, value: serde_json::Value) -> Object {
    object
        .extensions
        .get_or_insert_with(Default::default)
        .insert(key.into(), value);
    object
}

pub(super) fn schema_json(schema: impl Into<RefOr<Schema>>) -> serde_json::Value {
    serde_json::to_value(schema.into()).unwrap_or_default()
}
