//! Export and import of whole threads (messages, turns and audit records included).

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};
use sqlx::Row;

use super::audit;
use super::messages::insert_message;
use super::rows::{self, MESSAGE_COLUMNS, THREAD_COLUMNS, TURN_COLUMNS};
use super::{Error, Storage};
use crate::domain::export::ThreadExport;

impl Storage {
    /// A thread with its messages (by `seq`) and turns (by id). `tenant: None` reads any
    /// tenant's thread (the operator's `export` command).
    pub async fn export_thread(
        &self,
        tenant: Option<&str>,
        thread_id: &str,
    ) -> Result<Option<ThreadExport>, Error> {
        // One read transaction: the three reads see the same moment of the thread.
        let mut conn = self.read.begin().await?;
        let result: Result<Option<ThreadExport>, Error> = async {
            let sql = format!(
                "SELECT {THREAD_COLUMNS} FROM threads WHERE id = ? AND (? IS NULL OR tenant = ?)"
            );
            let Some(row) = sqlx::query(&sql)
                .bind(thread_id)
                .bind(tenant)
                .bind(tenant)
                .fetch_optional(&mut *conn)
                .await?
            else {
                return Ok(None);
            };
            let thread = rows::thread(&row)?;
            let sql =
                format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ? ORDER BY seq");
            let messages = sqlx::query(&sql)
                .bind(thread_id)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(rows::message)
                .collect::<Result<Vec<_>, _>>()?;
            let sql = format!(
                "SELECT {TURN_COLUMNS}, upstream_request_base, upstream_request_shared \
                 FROM turns WHERE thread_id = ? ORDER BY id"
            );
            let rows = sqlx::query(&sql)
                .bind(thread_id)
                .fetch_all(&mut *conn)
                .await?;
            let mut turns = Vec::with_capacity(rows.len());
            let mut stored = HashMap::with_capacity(rows.len());
            for row in &rows {
                let turn = rows::turn(row)?;
                let base: Option<String> = row.try_get("upstream_request_base")?;
                let shared: Option<i64> = row.try_get("upstream_request_shared")?;
                stored.insert(
                    turn.id.clone(),
                    (
                        base,
                        shared,
                        turn.audit.request.as_deref().map(str::to_owned),
                    ),
                );
                turns.push(turn);
            }
            // Requests stored as differences (audit.rs) are exported whole.
            let whole = audit::whole_requests(&stored)?;
            for turn in &mut turns {
                if matches!(stored.get(&turn.id), Some((Some(_), _, _))) {
                    turn.audit.request = whole.get(&turn.id).map(|r| r.as_str().into());
                }
            }
            Ok(Some(ThreadExport {
                thread,
                messages,
                turns,
            }))
        }
        .await;
        conn.rollback().await?;
        result
    }

    /// Restores an exported thread into `tenant`, ids and bytes unchanged, in one
    /// transaction. False when a thread with that id already exists.
    pub async fn import_thread(&self, tenant: &str, export: &ThreadExport) -> Result<bool, Error> {
        // A context cached for a deleted thread of this id must not outlive it.
        self.contexts.remove(&export.thread.id);
        let tenant = tenant.to_owned();
        let export = export.clone();
        self.write(move |tx| {
            let t = &export.thread;
            let exists = tx
                .prepare_cached("SELECT 1 FROM threads WHERE id = ?")?
                .query_row([&t.id], |_| Ok(()))
                .optional()?;
            if exists.is_some() {
                return Ok(false);
            }
            let metadata = serde_json::to_string(&t.metadata)
                .map_err(|e| Error::Internal(format!("metadata: {e}")))?;
            let usage = t.usage.unwrap_or_default();
            tx.prepare_cached(
                "INSERT INTO threads (id, tenant, created_at, updated_at, metadata, model, \
                 system, reasoning, reasoning_replay, params, message_count, last_message_id, \
                 usage_reports, prompt_tokens, completion_tokens, reasoning_tokens, cost, \
                 incarnation) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
                 lower(hex(randomblob(16))))",
            )?
            .execute(params![
                t.id,
                tenant,
                t.created_at,
                t.updated_at,
                metadata,
                t.model,
                t.system,
                t.reasoning,
                t.reasoning_replay,
                t.params,
                t.message_count,
                t.last_message_id,
                i64::from(t.usage.is_some()),
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.reasoning_tokens,
                usage.cost,
            ])?;
            for message in &export.messages {
                insert_message(tx, message)?;
            }
            let mut insert_turn = tx.prepare_cached(
                "INSERT INTO turns (id, thread_id, status, input_message_ids, \
                 output_message_id, model, created_at, completed_at, latency_ms, usage, \
                 generation_id, error, idempotency_key, request_sha256, upstream_request, \
                 upstream_response, upstream_response_json, upstream_status, \
                 upstream_attempts, upstream_started_at, upstream_finished_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )?;
            for turn in &export.turns {
                let a = &turn.audit;
                insert_turn.execute(params![
                    turn.id,
                    turn.thread_id,
                    turn.status,
                    turn.input_message_ids,
                    turn.output_message_id,
                    turn.model,
                    turn.created_at,
                    turn.completed_at,
                    turn.latency_ms,
                    turn.usage,
                    turn.generation_id,
                    turn.error,
                    turn.idempotency_key,
                    turn.request_sha256,
                    a.request,
                    a.response,
                    i64::from(a.response_is_json),
                    a.status,
                    a.attempts,
                    a.started_at,
                    a.finished_at,
                ])?;
            }
            // A turn exported while it ran is not running here: no process holds the
            // restored thread, so it is restored as interrupted (and its reply, should its
            // process still store one elsewhere, never lands here).
            let now = crate::domain::ids::now();
            for turn in export.turns.iter().filter(|t| t.status == "in_progress") {
                super::turns::interrupt(tx, &turn.id, &now)?;
            }
            Ok(true)
        })
        .await
    }
}
