//! Schema-only types for the OpenAPI document: the JSON shapes the service reads and writes,
//! described for utoipa.
//!
//! Responses are written by hand with the raw-splicing writer (`views.rs`) and requests are
//! parsed into raw values (`domain/`), so none of these types is ever built or (de)serialised:
//! they exist only to describe those shapes. Keep them in step with `views.rs` and the request
//! parsers. Values the service keeps as raw JSON (content, tool_calls, reasoning_details,
//! reasoning and params objects, usage, audit bodies) are described permissively, so that
//! whatever a client or the upstream sent, and the service stored, still validates.
//!
//! Optional fields are omitted, never `null` (except a message's `content`), so optional
//! response fields are `required = false` and not nullable. Request fields that accept `null`
//! (as "not set", or "clear" in a PATCH) say so.

// Never constructed: these types only describe shapes (see above).
#![allow(dead_code)]

mod errors;
mod params;
mod requests;
mod resources;
mod values;

pub use errors::*;
pub use params::*;
pub use requests::*;
pub use resources::*;

use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, AnyOfBuilder, ObjectBuilder, Type,
};
use utoipa::openapi::{Components, RefOr, Schema};

/// What the derives cannot say, applied to the finished components:
/// - request objects refuse unknown fields (`additionalProperties: false`), as their parsers
///   do (`deny_unknown_fields`);
/// - an assistant message needs `content` (which may be `null`) or non-null `tool_calls`;
/// - `InputMessage`, the role-dispatched union, is built rather than derived.
pub fn finish(components: &mut Components) {
    const CLOSED: [&str; 9] = [
        "CreateThreadRequest",
        "PatchThreadRequest",
        "AppendMessagesRequest",
        "TurnRequest",
        "ContextRequest",
        "UserMessage",
        "SystemMessage",
        "AssistantMessage",
        "ToolMessage",
    ];
    for name in CLOSED {
        if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name) {
            object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
        }
    }
    if let Some(assistant) = components.schemas.remove("AssistantMessage") {
        let content_or_calls = AnyOfBuilder::new()
            .item(ObjectBuilder::new().required("content"))
            .item(
                ObjectBuilder::new()
                    .property("tool_calls", ObjectBuilder::new().schema_type(Type::Array))
                    .required("tool_calls"),
            );
        let rule = AllOfBuilder::new()
            .item(assistant)
            .item(content_or_calls)
            .description(Some(
                "An assistant message (history being imported or appended): it needs \
                 `content` (which may be null) or `tool_calls`.",
            ));
        components
            .schemas
            .insert("AssistantMessage".into(), rule.into());
    }
    components
        .schemas
        .insert("InputMessage".into(), values::input_message());
}
