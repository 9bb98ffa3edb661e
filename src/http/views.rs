//! JSON views of stored records, written with the raw-splicing writer so stored bytes
//! (content, reasoning_details, usage, audit bodies) reach the client unchanged.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::domain::json::ObjectWriter;
use crate::domain::records::{MessageRecord, ThreadRecord, TurnRecord};
use crate::storage::Page;

/// A JSON response from already-written JSON text.
pub struct JsonText(pub StatusCode, pub String);

impl IntoResponse for JsonText {
    fn into_response(self) -> Response {
        (
            self.0,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.1,
        )
            .into_response()
    }
}

pub fn thread(t: &ThreadRecord) -> String {
    let mut w = ObjectWriter::new();
    w.string("id", &t.id)
        .string("object", "thread")
        .string("created_at", &t.created_at)
        .string("updated_at", &t.updated_at);
    let metadata = serde_json::to_string(&t.metadata).unwrap_or_else(|_| "{}".into());
    w.raw("metadata", &metadata)
        .opt_string("model", t.model.as_deref())
        .opt_string("system", t.system.as_deref())
        .opt_raw("reasoning", t.reasoning.as_deref())
        .opt_string("reasoning_replay", t.reasoning_replay.as_deref())
        .opt_raw("params", t.params.as_deref())
        .int("message_count", t.message_count)
        .opt_string("last_message_id", t.last_message_id.as_deref());
    if let Some(u) = &t.usage {
        w.raw("usage", &u.to_json());
    }
    w.finish()
}

pub fn message(m: &MessageRecord) -> String {
    let mut w = ObjectWriter::with_capacity(
        256 + m.content.as_ref().map_or(0, String::len)
            + m.reasoning.as_ref().map_or(0, String::len)
            + m.reasoning_details.as_ref().map_or(0, String::len),
    );
    w.string("id", &m.id)
        .string("object", "message")
        .string("thread_id", &m.thread_id)
        .int("seq", m.seq)
        .string("role", &m.role)
        .opt_raw("content", m.content.as_deref())
        .opt_string("name", m.name.as_deref())
        .opt_raw("tool_calls", m.tool_calls.as_deref())
        .opt_string("tool_call_id", m.tool_call_id.as_deref())
        .opt_raw("reasoning", m.reasoning.as_deref())
        .opt_raw("reasoning_details", m.reasoning_details.as_deref())
        .opt_string("turn_id", m.turn_id.as_deref())
        .string("created_at", &m.created_at)
        .opt_string("model", m.model.as_deref())
        .opt_string("provider", m.provider.as_deref())
        .opt_string("generation_id", m.generation_id.as_deref())
        .opt_string("finish_reason", m.finish_reason.as_deref())
        .opt_string("native_finish_reason", m.native_finish_reason.as_deref())
        .opt_raw("usage", m.usage.as_deref());
    w.finish()
}

/// A turn; `with_audit` adds the `upstream` audit record (single-turn reads only).
pub fn turn(t: &TurnRecord, output: Option<&MessageRecord>, with_audit: bool) -> String {
    let mut w = ObjectWriter::new();
    w.string("id", &t.id)
        .string("object", "turn")
        .string("thread_id", &t.thread_id)
        .string("status", &t.status)
        .raw("input_message_ids", &t.input_message_ids)
        .opt_string("output_message_id", t.output_message_id.as_deref());
    if let Some(output) = output {
        w.raw("output", &message(output));
    }
    w.string("model", &t.model)
        .string("created_at", &t.created_at)
        .opt_string("completed_at", t.completed_at.as_deref())
        .opt_int("latency_ms", t.latency_ms)
        .opt_raw("usage", t.usage.as_deref())
        .opt_string("generation_id", t.generation_id.as_deref())
        .opt_raw("error", t.error.as_deref());
    if with_audit && (t.audit.request.is_some() || t.audit.attempts > 0) {
        let a = &t.audit;
        let mut u = ObjectWriter::new();
        u.opt_raw("request", a.request.as_deref());
        match (&a.response, a.response_is_json) {
            (Some(body), true) => u.raw("response", body),
            (Some(body), false) => u.string("response", body),
            (None, _) => &mut u,
        };
        u.opt_int("status", a.status)
            .int("attempts", a.attempts)
            .opt_string("started_at", a.started_at.as_deref())
            .opt_string("finished_at", a.finished_at.as_deref());
        w.raw("upstream", &u.finish());
    }
    w.finish()
}

/// `{object:"list", data, first_id?, last_id?, has_more}`.
pub fn list<T>(
    page: &Page<T>,
    id_of: impl Fn(&T) -> &str,
    render: impl Fn(&T) -> String,
) -> String {
    let data: Vec<String> = page.items.iter().map(&render).collect();
    let mut w = ObjectWriter::with_capacity(64 + data.iter().map(String::len).sum::<usize>());
    w.string("object", "list").array("data", &data);
    w.opt_string("first_id", page.items.first().map(&id_of))
        .opt_string("last_id", page.items.last().map(&id_of))
        .bool("has_more", page.has_more);
    w.finish()
}
