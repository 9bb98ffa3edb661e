//! Row mapping: the column lists every SELECT uses and their conversion into records.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::domain::records::{AuditRecord, MessageRecord, ThreadRecord, TurnRecord, UsageTotals};

pub(super) const THREAD_COLUMNS: &str = "id, created_at, updated_at, metadata, model, system, \
     reasoning, reasoning_replay, params, message_count, last_message_id, usage_reports, \
     prompt_tokens, completion_tokens, reasoning_tokens, cost";

pub(super) fn thread(row: &SqliteRow) -> Result<ThreadRecord, sqlx::Error> {
    let metadata: String = row.try_get("metadata")?;
    let usage_reports: i64 = row.try_get("usage_reports")?;
    Ok(ThreadRecord {
        id: row.try_get("id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        metadata: serde_json::from_str(&metadata).map_err(|e| sqlx::Error::ColumnDecode {
            index: "metadata".into(),
            source: Box::new(e),
        })?,
        model: row.try_get("model")?,
        system: row.try_get("system")?,
        reasoning: row.try_get("reasoning")?,
        reasoning_replay: row.try_get("reasoning_replay")?,
        params: row.try_get("params")?,
        message_count: row.try_get("message_count")?,
        last_message_id: row.try_get("last_message_id")?,
        usage: if usage_reports > 0 {
            Some(UsageTotals {
                prompt_tokens: row.try_get("prompt_tokens")?,
                completion_tokens: row.try_get("completion_tokens")?,
                reasoning_tokens: row.try_get("reasoning_tokens")?,
                cost: row.try_get("cost")?,
            })
        } else {
            None
        },
    })
}

pub(super) const MESSAGE_COLUMNS: &str = "id, thread_id, seq, role, content, name, tool_calls, \
     tool_call_id, reasoning, reasoning_details, reasoning_details_sha256, turn_id, created_at, \
     model, requested_model, provider, generation_id, finish_reason, native_finish_reason, usage";

pub(super) fn message(row: &SqliteRow) -> Result<MessageRecord, sqlx::Error> {
    Ok(MessageRecord {
        id: row.try_get("id")?,
        thread_id: row.try_get("thread_id")?,
        seq: row.try_get("seq")?,
        role: row.try_get("role")?,
        content: row.try_get("content")?,
        name: row.try_get("name")?,
        tool_calls: row.try_get("tool_calls")?,
        tool_call_id: row.try_get("tool_call_id")?,
        reasoning: row.try_get("reasoning")?,
        reasoning_details: row.try_get("reasoning_details")?,
        reasoning_details_sha256: row.try_get("reasoning_details_sha256")?,
        turn_id: row.try_get("turn_id")?,
        created_at: row.try_get("created_at")?,
        model: row.try_get("model")?,
        requested_model: row.try_get("requested_model")?,
        provider: row.try_get("provider")?,
        generation_id: row.try_get("generation_id")?,
        finish_reason: row.try_get("finish_reason")?,
        native_finish_reason: row.try_get("native_finish_reason")?,
        usage: row.try_get("usage")?,
    })
}

pub(super) const TURN_COLUMNS: &str = "id, thread_id, status, input_message_ids, \
     output_message_id, model, created_at, completed_at, latency_ms, usage, generation_id, \
     error, idempotency_key, request_sha256, upstream_request, upstream_response, \
     upstream_response_json, upstream_status, upstream_attempts, upstream_started_at, \
     upstream_finished_at";

/// `TURN_COLUMNS` without the audit bodies (they can be megabytes): for turns that are
/// shown without their audit record (lists, a turn just finished).
pub(super) const TURN_SUMMARY_COLUMNS: &str = "id, thread_id, status, input_message_ids, \
     output_message_id, model, created_at, completed_at, latency_ms, usage, generation_id, \
     error, idempotency_key, request_sha256, NULL AS upstream_request, \
     NULL AS upstream_response, upstream_response_json, upstream_status, upstream_attempts, \
     upstream_started_at, upstream_finished_at";

pub(super) fn turn(row: &SqliteRow) -> Result<TurnRecord, sqlx::Error> {
    Ok(TurnRecord {
        id: row.try_get("id")?,
        thread_id: row.try_get("thread_id")?,
        status: row.try_get("status")?,
        input_message_ids: row.try_get("input_message_ids")?,
        output_message_id: row.try_get("output_message_id")?,
        model: row.try_get("model")?,
        created_at: row.try_get("created_at")?,
        completed_at: row.try_get("completed_at")?,
        latency_ms: row.try_get("latency_ms")?,
        usage: row.try_get("usage")?,
        generation_id: row.try_get("generation_id")?,
        error: row.try_get("error")?,
        idempotency_key: row.try_get("idempotency_key")?,
        request_sha256: row.try_get("request_sha256")?,
        audit: AuditRecord {
            request: row.try_get("upstream_request")?,
            response: row.try_get("upstream_response")?,
            response_is_json: row.try_get::<i64, _>("upstream_response_json")? != 0,
            status: row.try_get("upstream_status")?,
            attempts: row.try_get("upstream_attempts")?,
            started_at: row.try_get("upstream_started_at")?,
            finished_at: row.try_get("upstream_finished_at")?,
        },
    })
}
