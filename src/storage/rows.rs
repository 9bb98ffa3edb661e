//! Row mapping: the column lists every SELECT uses and their conversion into records, for
//! rows read through sqlx (the read pool) and through rusqlite (the writer) alike.

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite};

use super::Error;
use crate::domain::records::{AuditRecord, MessageRecord, ThreadRecord, TurnRecord, UsageTotals};

/// A column value both drivers decode.
pub(super) trait Column:
    for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite> + rusqlite::types::FromSql
{
}

impl<T> Column for T where
    T: for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite> + rusqlite::types::FromSql
{
}

/// A result row, by column name.
pub(super) trait Columns {
    fn get<T: Column>(&self, name: &str) -> Result<T, Error>;
}

impl Columns for SqliteRow {
    fn get<T: Column>(&self, name: &str) -> Result<T, Error> {
        Ok(self.try_get(name)?)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn get<T: Column>(&self, name: &str) -> Result<T, Error> {
        Ok(rusqlite::Row::get(self, name)?)
    }
}

/// A rusqlite row with its column names read once. rusqlite finds a column by name by
/// reading every column's name from SQLite again (a C string checked as UTF-8 each time), so
/// mapping a 20-column row by name cost a few percent of a turn's instructions; here the
/// names are read once per row and looked up from where the last one was found (columns
/// are mostly read in the order they are selected).
pub(super) struct Named<'s, 'r> {
    row: &'s rusqlite::Row<'r>,
    names: Vec<&'s str>,
    next: std::cell::Cell<usize>,
}

impl<'s, 'r> Named<'s, 'r> {
    pub(super) fn new(row: &'s rusqlite::Row<'r>) -> Self {
        Self {
            row,
            names: row.as_ref().column_names(),
            next: std::cell::Cell::new(0),
        }
    }

    fn index(&self, name: &str) -> Option<usize> {
        let start = self.next.get().min(self.names.len());
        let (earlier, from_next) = self.names.split_at(start);
        let found = from_next
            .iter()
            .position(|n| *n == name)
            .map(|i| start + i)
            .or_else(|| earlier.iter().position(|n| *n == name))?;
        self.next.set(found + 1);
        Some(found)
    }
}

impl Columns for Named<'_, '_> {
    fn get<T: Column>(&self, name: &str) -> Result<T, Error> {
        match self.index(name) {
            Some(i) => Ok(self.row.get(i)?),
            // Not among the names as selected (say, in another case): rusqlite's own lookup.
            None => Ok(self.row.get(name)?),
        }
    }
}

pub(super) const THREAD_COLUMNS: &str = "id, created_at, updated_at, metadata, model, system, \
     reasoning, reasoning_replay, params, message_count, last_message_id, usage_reports, \
     prompt_tokens, completion_tokens, reasoning_tokens, cost";

pub(super) fn thread(row: &impl Columns) -> Result<ThreadRecord, Error> {
    let metadata: String = row.get("metadata")?;
    let usage_reports: i64 = row.get("usage_reports")?;
    Ok(ThreadRecord {
        id: row.get("id")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| Error::Internal(format!("stored metadata: {e}")))?,
        model: row.get("model")?,
        system: row.get("system")?,
        reasoning: row.get("reasoning")?,
        reasoning_replay: row.get("reasoning_replay")?,
        params: row.get("params")?,
        message_count: row.get("message_count")?,
        last_message_id: row.get("last_message_id")?,
        usage: if usage_reports > 0 {
            Some(UsageTotals {
                prompt_tokens: row.get("prompt_tokens")?,
                completion_tokens: row.get("completion_tokens")?,
                reasoning_tokens: row.get("reasoning_tokens")?,
                cost: row.get("cost")?,
            })
        } else {
            None
        },
    })
}

pub(super) const MESSAGE_COLUMNS: &str = "id, thread_id, seq, role, content, name, tool_calls, \
     tool_call_id, reasoning, reasoning_details, reasoning_details_sha256, turn_id, created_at, \
     model, requested_model, provider, generation_id, finish_reason, native_finish_reason, usage";

/// How many columns `MESSAGE_COLUMNS` names: the index of a column selected after them.
pub(super) const MESSAGE_FIELDS: usize = 20;

pub(super) fn message(row: &impl Columns) -> Result<MessageRecord, Error> {
    Ok(MessageRecord {
        id: row.get("id")?,
        thread_id: row.get("thread_id")?,
        seq: row.get("seq")?,
        role: row.get("role")?,
        content: row.get("content")?,
        name: row.get("name")?,
        tool_calls: row.get("tool_calls")?,
        tool_call_id: row.get("tool_call_id")?,
        reasoning: row.get("reasoning")?,
        reasoning_details: row.get("reasoning_details")?,
        reasoning_details_sha256: row.get("reasoning_details_sha256")?,
        turn_id: row.get("turn_id")?,
        created_at: row.get("created_at")?,
        model: row.get("model")?,
        requested_model: row.get("requested_model")?,
        provider: row.get("provider")?,
        generation_id: row.get("generation_id")?,
        finish_reason: row.get("finish_reason")?,
        native_finish_reason: row.get("native_finish_reason")?,
        usage: row.get("usage")?,
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

/// `TURN_COLUMNS` with the response but not the request: what answering a turn again needs,
/// and a single turn's read, whose request is rebuilt from its stored pieces (`audit.rs`).
pub(super) const TURN_REPLAY_COLUMNS: &str = "id, thread_id, status, input_message_ids, \
     output_message_id, model, created_at, completed_at, latency_ms, usage, generation_id, \
     error, idempotency_key, request_sha256, NULL AS upstream_request, upstream_response, \
     upstream_response_json, upstream_status, upstream_attempts, upstream_started_at, \
     upstream_finished_at";

pub(super) fn turn(row: &impl Columns) -> Result<TurnRecord, Error> {
    Ok(TurnRecord {
        id: row.get("id")?,
        thread_id: row.get("thread_id")?,
        status: row.get("status")?,
        input_message_ids: row.get("input_message_ids")?,
        output_message_id: row.get("output_message_id")?,
        model: row.get("model")?,
        created_at: row.get("created_at")?,
        completed_at: row.get("completed_at")?,
        latency_ms: row.get("latency_ms")?,
        usage: row.get("usage")?,
        generation_id: row.get("generation_id")?,
        error: row.get("error")?,
        idempotency_key: row.get("idempotency_key")?,
        request_sha256: row.get("request_sha256")?,
        audit: AuditRecord {
            request: row
                .get::<Option<String>>("upstream_request")?
                .map(Into::into),
            response: row.get("upstream_response")?,
            response_is_json: row.get::<i64>("upstream_response_json")? != 0,
            status: row.get("upstream_status")?,
            attempts: row.get("upstream_attempts")?,
            started_at: row.get("upstream_started_at")?,
            finished_at: row.get("upstream_finished_at")?,
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn named_columns_are_found_in_any_order() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        let mut select = db
            .prepare("SELECT 1 AS id, 'two' AS name, NULL AS model, 4 AS seq")
            .unwrap();
        let mut rows = select.query([]).unwrap();
        let row = rows.next().unwrap().unwrap();
        let row = Named::new(row);
        // In order, out of order, twice, and back to the start.
        assert_eq!(row.get::<i64>("id").unwrap(), 1);
        assert_eq!(row.get::<String>("name").unwrap(), "two");
        assert_eq!(row.get::<i64>("seq").unwrap(), 4);
        assert_eq!(row.get::<Option<String>>("model").unwrap(), None);
        assert_eq!(row.get::<Option<String>>("model").unwrap(), None);
        assert_eq!(row.get::<i64>("id").unwrap(), 1);
        assert_eq!(row.get::<i64>("seq").unwrap(), 4);
        // rusqlite's own lookup for what is not among the names as written.
        assert_eq!(row.get::<i64>("ID").unwrap(), 1);
        assert!(row.get::<i64>("missing").is_err());
    }
}
