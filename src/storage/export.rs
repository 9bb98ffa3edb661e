//! Export and import of whole threads (messages, turns and audit records included).

use super::messages::insert_message;
use super::rows::{self, MESSAGE_COLUMNS, THREAD_COLUMNS, TURN_COLUMNS};
use super::Storage;
use crate::domain::export::ThreadExport;

impl Storage {
    /// A thread with its messages (by `seq`) and turns (by id). `tenant: None` reads any
    /// tenant's thread (the operator's `export` command).
    pub async fn export_thread(
        &self,
        tenant: Option<&str>,
        thread_id: &str,
    ) -> Result<Option<ThreadExport>, sqlx::Error> {
        // One read transaction: the three reads see the same moment of the thread.
        let mut conn = self.read.begin().await?;
        let result: Result<Option<ThreadExport>, sqlx::Error> = async {
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
            let sql = format!("SELECT {TURN_COLUMNS} FROM turns WHERE thread_id = ? ORDER BY id");
            let turns = sqlx::query(&sql)
                .bind(thread_id)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(rows::turn)
                .collect::<Result<Vec<_>, _>>()?;
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
    pub async fn import_thread(
        &self,
        tenant: &str,
        export: &ThreadExport,
    ) -> Result<bool, sqlx::Error> {
        let tenant = tenant.to_owned();
        let export = export.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let t = &export.thread;
                let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM threads WHERE id = ?")
                    .bind(&t.id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if exists.is_some() {
                    return Ok(false);
                }
                let metadata = serde_json::to_string(&t.metadata)
                    .map_err(|e| sqlx::Error::Protocol(format!("metadata: {e}")))?;
                let usage = t.usage.unwrap_or_default();
                sqlx::query("INSERT INTO threads (id, tenant, created_at, updated_at, metadata, model, system, \
                             reasoning, reasoning_replay, params, message_count, last_message_id, usage_reports, \
                             prompt_tokens, completion_tokens, reasoning_tokens, cost) \
                             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
                    .bind(&t.id)
                    .bind(&tenant)
                    .bind(&t.created_at)
                    .bind(&t.updated_at)
                    .bind(&metadata)
                    .bind(&t.model)
                    .bind(&t.system)
                    .bind(&t.reasoning)
                    .bind(&t.reasoning_replay)
                    .bind(&t.params)
                    .bind(t.message_count)
                    .bind(&t.last_message_id)
                    .bind(i64::from(t.usage.is_some()))
                    .bind(usage.prompt_tokens)
                    .bind(usage.completion_tokens)
                    .bind(usage.reasoning_tokens)
                    .bind(usage.cost)
                    .execute(&mut *tx)
                    .await?;
                for message in &export.messages {
                    insert_message(&mut *tx, message).await?;
                }
                for turn in &export.turns {
                    let a = &turn.audit;
                    sqlx::query("INSERT INTO turns (id, thread_id, status, input_message_ids, output_message_id, \
                                 model, created_at, completed_at, latency_ms, usage, generation_id, error, \
                                 idempotency_key, request_sha256, upstream_request, upstream_response, \
                                 upstream_response_json, upstream_status, upstream_attempts, upstream_started_at, \
                                 upstream_finished_at) \
                                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
                        .bind(&turn.id)
                        .bind(&turn.thread_id)
                        .bind(&turn.status)
                        .bind(&turn.input_message_ids)
                        .bind(&turn.output_message_id)
                        .bind(&turn.model)
                        .bind(&turn.created_at)
                        .bind(&turn.completed_at)
                        .bind(turn.latency_ms)
                        .bind(&turn.usage)
                        .bind(&turn.generation_id)
                        .bind(&turn.error)
                        .bind(&turn.idempotency_key)
                        .bind(&turn.request_sha256)
                        .bind(&a.request)
                        .bind(&a.response)
                        .bind(i64::from(a.response_is_json))
                        .bind(a.status)
                        .bind(a.attempts)
                        .bind(&a.started_at)
                        .bind(&a.finished_at)
                        .execute(&mut *tx)
                        .await?;
                }
                Ok(true)
            })
        })
        .await
    }
}
