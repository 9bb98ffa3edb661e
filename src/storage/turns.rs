//! Turn operations: begin (store input, take the thread's lease), renew the lease, complete
//! or fail, read and list, and the start-up sweep of turns whose process died.
//!
//! Each is one short write transaction; none stays open across an upstream call.

use std::sync::Arc;

use rusqlite::{params, params_from_iter, OptionalExtension, ToSql};
use sqlx::sqlite::SqliteArguments;
use sqlx::Arguments;

use super::audit::{self, LastRequest};
use super::contexts::Context;
use super::lists::{finish, paginate, Page, PageQuery};
use super::messages::{insert_message_at, insert_messages};
use super::rows::{self, Named, MESSAGE_COLUMNS, TURN_REPLAY_COLUMNS, TURN_SUMMARY_COLUMNS};
use super::threads::{thread_for_turn, Lease, ThreadState};
use super::{owner, row_in_thread, thread_of_tenant, Durability, Error, Storage, Tx};
use crate::domain::context::RequestLayout;
use crate::domain::ids;
use crate::domain::message::NewMessage;
use crate::domain::records::{AuditRecord, MessageRecord, ThreadRecord, TurnRecord, UsageTotals};
use crate::telemetry::metrics as m;

pub struct BeginTurn {
    pub turn_id: String,
    pub input: Vec<NewMessage>,
    pub lease_ttl_ms: i64,
    /// `Idempotency-Key` and the SHA-256 of the request it came with.
    pub idempotency: Option<(String, String)>,
}

/// What `begin_turn` did. `O` is what the caller decided from the thread (the turn's
/// options), `E` why it refused to start the turn.
#[derive(Debug)]
pub enum Begun<O, E> {
    /// The input is stored and the turn holds the thread's lease.
    Started {
        /// The thread as it was when the turn began (its settings shape the request).
        thread: Box<ThreadRecord>,
        /// What the caller decided from it.
        options: O,
        input_message_ids: Vec<String>,
        /// The thread's messages, input included, when they could be known without a
        /// read (the cached context was current); else `context_messages` reads them.
        context: Option<Context>,
    },
    /// The key names a completed turn: answer it again, nothing stored, nothing called.
    Replay(Box<TurnRecord>),
    NotFound,
    Busy,
    /// The key was used with another request on this thread.
    KeyReused,
    /// The caller's decision refused the turn (nothing stored).
    Refused(E),
}

/// What a turn's closing write found and did.
// Returned once per turn and moved once: boxing the stored turn would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Finished {
    /// Stored: the turn as it now reads, and its reply when it completed.
    Stored(TurnRecord, Option<MessageRecord>),
    /// The turn's lease had lapsed and another request took the thread over, marking the
    /// turn `interrupted`. Its reply is not added to the thread (which may have moved on),
    /// but the upstream exchange is kept in the turn's audit record.
    Interrupted,
    /// The turn is gone: its thread was deleted after the turn's lease lapsed.
    Gone,
}

/// What a turn's closing transaction stores: how the turn ended, its upstream exchange and
/// how long it took.
pub struct Closing {
    pub outcome: TurnOutcome,
    pub audit: AuditRecord,
    pub latency_ms: i64,
    /// Where the messages lie in the request sent (`audit.request`), kept with it for the
    /// thread's next request (`Storage::previous_request`).
    pub layout: Option<RequestLayout>,
}

/// A closing transaction that did not commit.
pub struct NotFinished {
    pub error: Error,
    /// What it was to store, for another try (`None` only if the write could not hand it
    /// back, as when the writer had stopped).
    pub closing: Option<Closing>,
}

/// How a turn ended, with everything its closing transaction writes.
#[derive(Clone)]
pub enum TurnOutcome {
    Completed {
        /// The assistant message; its `seq` is assigned here.
        message: Box<MessageRecord>,
        usage: Option<String>,
        totals: Option<UsageTotals>,
        generation_id: Option<String>,
    },
    Failed {
        /// JSON error object.
        error: String,
        /// What the model reported, when it answered but the answer could not be stored.
        usage: Option<String>,
        generation_id: Option<String>,
    },
}

impl TurnOutcome {
    /// Failed with `error` (a JSON error object), nothing else to record.
    pub fn failed(error: String) -> TurnOutcome {
        TurnOutcome::Failed {
            error,
            usage: None,
            generation_id: None,
        }
    }
}

const INTERRUPTED_ERROR: &str = r#"{"type":"server_error","code":"interrupted","message":"the process running this turn stopped, or stalled past its lease, before the turn ended"}"#;

impl Storage {
    /// Stores the input and an `in_progress` turn and takes the thread's lease, all in one
    /// transaction. `decide` sees the thread as this transaction reads it, before anything
    /// is written, and returns the turn's model (its row names it) and options, or refuses
    /// the turn; a repeat of an idempotent request whose turn completed is replayed without
    /// it. A lease left by a dead process (expired) is taken over and its turn
    /// marked `interrupted`. The commit is not fsynced on its own (nobody has been answered
    /// yet): the turn's closing commit, which is, makes it durable too. A process crash
    /// loses nothing either way; a power loss can lose a turn that was still running.
    pub async fn begin_turn<O, E>(
        &self,
        tenant: &str,
        thread_id: &str,
        begin: BeginTurn,
        mut decide: impl FnMut(&ThreadRecord) -> Result<(String, O), E> + Send + 'static,
    ) -> Result<Begun<O, E>, Error>
    where
        O: Send + 'static,
        E: Send + 'static,
    {
        let now = ids::now();
        let now_ms = ids::now_millis();
        let tenant = tenant.to_owned();
        let thread_id = thread_id.to_owned();
        let owner = self.owner.clone();
        let cache_key = thread_id.clone();
        let bytes = begin.input.iter().map(NewMessage::stored_len).sum();
        let (begun, written) = self
            .write_short(Durability::Deferred, bytes, move |tx| {
                let thread_id = thread_id.as_str();
                let Some((thread, state)) = thread_for_turn(tx, &tenant, thread_id, now_ms)? else {
                    return Ok((Begun::NotFound, None));
                };
                let ThreadState {
                    lease,
                    count,
                    incarnation,
                } = state;
                // A repeat of an idempotent request: replay it, refuse it, or (when it failed)
                // run the model again on its stored input, which is not stored a second time.
                // Decided before `decide`: a repeat of a completed turn is answered from what
                // was stored, whatever the thread's settings or the service's upstream are now.
                let mut rerun: Option<(String, String, String)> = None;
                if let Some((key, hash)) = &begin.idempotency {
                    let earlier: Option<(String, String, Option<String>, String)> = tx
                        .prepare_cached(
                            "SELECT id, status, request_sha256, input_message_ids FROM turns \
                             WHERE thread_id = ? AND idempotency_key = ?",
                        )?
                        .query_row(params![thread_id, key], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                        })
                        .optional()?;
                    if let Some((earlier_id, status, earlier_hash, input_ids)) = earlier {
                        if earlier_hash.as_deref() != Some(hash) {
                            return Ok((Begun::KeyReused, None));
                        }
                        match status.as_str() {
                            "completed" => {
                                let turn = replay_turn(tx, &earlier_id)?.ok_or_else(|| {
                                    Error::Internal("the replayed turn vanished".into())
                                })?;
                                return Ok((Begun::Replay(Box::new(turn)), None));
                            }
                            // Still running (or another turn is): the client waits for it.
                            _ if matches!(lease, Lease::Held) => return Ok((Begun::Busy, None)),
                            _ => rerun = Some((earlier_id, status, input_ids)),
                        }
                    }
                }
                // Before anything is written: a refused turn leaves no trace.
                let (model, options) = match decide(&thread) {
                    Ok(decided) => decided,
                    Err(refusal) => return Ok((Begun::Refused(refusal), None)),
                };
                let rerun_input = match rerun {
                    Some((earlier_id, status, input_ids)) => {
                        // Left in progress by a process that died or stalled past its lease:
                        // it will never end, so it ends here, as the sweep at start-up would
                        // end it, and the retry runs in its place.
                        if status == "in_progress" {
                            interrupt(tx, &earlier_id, &now)?;
                        }
                        // The key moves to the new turn; the earlier one keeps its record.
                        tx.prepare_cached("UPDATE turns SET idempotency_key = NULL WHERE id = ?")?
                            .execute([&earlier_id])?;
                        Some(input_ids)
                    }
                    None => None,
                };
                match lease {
                    Lease::Missing => return Ok((Begun::NotFound, None)),
                    Lease::Held => return Ok((Begun::Busy, None)),
                    Lease::Expired(stale) => interrupt(tx, &stale, &now)?,
                    Lease::Free => {}
                }
                let (input_ids, last, stored) = match rerun_input {
                    Some(ids) => (ids, None, Vec::new()),
                    None => {
                        let stored = insert_messages(
                            tx,
                            thread_id,
                            count,
                            &begin.input,
                            Some(&begin.turn_id),
                            &now,
                        )?;
                        let ids = serde_json::to_string(
                            &stored.iter().map(|m| &m.id).collect::<Vec<_>>(),
                        )
                        .map_err(|e| Error::Internal(e.to_string()))?;
                        let last = stored.last().map(|m| (m.seq, m.id.clone()));
                        (ids, last, stored)
                    }
                };
                tx.prepare_cached(
                    "INSERT INTO turns (id, thread_id, status, input_message_ids, model, \
                 created_at, idempotency_key, request_sha256) \
                 VALUES (?, ?, 'in_progress', ?, ?, ?, ?, ?)",
                )?
                .execute(params![
                    begin.turn_id,
                    thread_id,
                    input_ids,
                    model,
                    now,
                    begin.idempotency.as_ref().map(|(key, _)| key),
                    begin.idempotency.as_ref().map(|(_, hash)| hash),
                ])?;
                // The lease, and the new messages' count and last id, in one statement.
                tx.prepare_cached(
                    "UPDATE threads SET lease_turn_id = ?, lease_expires_at = ?, lease_owner = ?, \
                 message_count = COALESCE(?, message_count), \
                 last_message_id = COALESCE(?, last_message_id), \
                 updated_at = CASE WHEN ? IS NULL THEN updated_at ELSE ? END \
                 WHERE id = ?",
                )?
                .execute(params![
                    begin.turn_id,
                    now_ms + begin.lease_ttl_ms,
                    &*owner,
                    last.as_ref().map(|(seq, _)| *seq),
                    last.as_ref().map(|(_, id)| id),
                    last.as_ref().map(|(_, id)| id),
                    now,
                    thread_id,
                ])?;
                let input_message_ids = serde_json::from_str(&input_ids)
                    .map_err(|e| Error::Internal(format!("input_message_ids: {e}")))?;
                let started = Begun::Started {
                    thread: Box::new(thread),
                    options,
                    input_message_ids,
                    context: None,
                };
                Ok((started, Some((count, incarnation, stored))))
            })
            .await?;
        match (begun, written) {
            (
                Begun::Started {
                    thread,
                    options,
                    input_message_ids,
                    ..
                },
                Some((count, incarnation, stored)),
            ) => {
                // When the cached context was the whole thread as this transaction found it,
                // the turn's context is that plus its input: no read needed.
                let context =
                    self.contexts
                        .extend_if_current(&cache_key, &incarnation, count, stored);
                if context.is_some() {
                    metrics::counter!(m::CONTEXT_READS, "source" => "cache").increment(1);
                }
                Ok(Begun::Started {
                    thread,
                    options,
                    input_message_ids,
                    context,
                })
            }
            (begun, _) => Ok(begun),
        }
    }

    /// The thread's last request as sent, with where its messages lie, when this process
    /// keeps it (the context cache): its next request may be built by appending to it
    /// (`domain::context::build_request_after`).
    pub fn previous_request(&self, thread_id: &str) -> Option<(Arc<str>, RequestLayout)> {
        let last = self.contexts.last_request(thread_id)?;
        Some((last.body, last.layout?))
    }

    /// Extends a running turn's lease; false when the lease is no longer this turn's.
    pub async fn renew_lease(
        &self,
        thread_id: &str,
        turn_id: &str,
        ttl_ms: i64,
    ) -> Result<bool, Error> {
        let thread_id = thread_id.to_owned();
        let turn_id = turn_id.to_owned();
        self.write_short(Durability::Deferred, 0, move |tx| {
            let renewed = tx
                .prepare_cached(
                    "UPDATE threads SET lease_expires_at = ? WHERE id = ? AND lease_turn_id = ?",
                )?
                .execute(params![ids::now_millis() + ttl_ms, thread_id, turn_id])?;
            Ok(renewed == 1)
        })
        .await
    }

    /// Ends a turn: stores its reply (when completed), its audit record, the thread's usage
    /// totals, and frees the lease, in one transaction. A turn no longer in progress (taken
    /// over as interrupted) gets its audit record only: the paid exchange is not lost. When
    /// the transaction fails, what it was to store comes back with the error, for another
    /// try.
    pub async fn finish_turn(
        &self,
        thread_id: &str,
        turn_id: &str,
        closing: Closing,
    ) -> Result<Finished, NotFinished> {
        let Closing {
            outcome,
            mut audit,
            latency_ms,
            layout,
        } = closing;
        let now = ids::now();
        let thread_id = thread_id.to_owned();
        let turn_id = turn_id.to_owned();
        // The request as sent, kept to store the thread's next request as a difference.
        let request: Option<Arc<str>> = audit.request.take();
        let previous = self.contexts.last_request(&thread_id);
        // Stored as a difference from `previous` if the thread is still the one `previous`
        // was stored in (a thread deleted and imported again under its id is not).
        let split = request.as_ref().map(|request| {
            let stored = audit::split(previous.as_ref(), request);
            let base = stored.base.map(|(turn, shared)| (turn.to_owned(), shared));
            (base, stored.rest.len(), stored.chain)
        });
        let expected_incarnation = previous.map(|p| p.incarnation);
        // What the closing write stores, about: the request's new bytes, the response, the reply.
        let bytes = split.as_ref().map_or(0, |(_, rest, _)| *rest)
            + audit.response.as_ref().map_or(0, String::len)
            + match &outcome {
                TurnOutcome::Completed { message, .. } => message.stored_len(),
                TurnOutcome::Failed { error, .. } => error.len(),
            };
        // The write borrows the outcome and the exchange through this `Arc`, which is
        // theirs alone again once the write has run: moved on into the answer when it
        // committed, handed back for another try when it failed. Nothing is copied.
        let ending = Arc::new((outcome, audit));
        let stored_request = request.clone();
        let cache_key = thread_id.clone();
        let turn_key = turn_id.clone();
        let written = {
            let ending = ending.clone();
            self.write_short(Durability::Synced, bytes, move |tx| {
                let (outcome, audit) = &*ending;
                let turn_id = turn_id.as_str();
                // The turn's state and what its opening write stored, its thread's message
                // count, incarnation and lease, in one read.
                let row: Option<(String, i64, String, Option<String>, OpeningRow)> = tx
                    .prepare_cached(
                        "SELECT t.status, h.message_count, h.incarnation, h.lease_turn_id, \
                         t.thread_id, t.input_message_ids, t.model, t.created_at, \
                         t.idempotency_key, t.request_sha256 FROM turns t \
                         JOIN threads h ON h.id = t.thread_id WHERE t.id = ?",
                    )?
                    .query_row([turn_id], |r| {
                        let opening = OpeningRow {
                            thread_id: r.get(4)?,
                            input_message_ids: r.get(5)?,
                            model: r.get(6)?,
                            created_at: r.get(7)?,
                            idempotency_key: r.get(8)?,
                            request_sha256: r.get(9)?,
                        };
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, opening))
                    })
                    .optional()?;
                let Some((mut status, count, incarnation, lease, opening)) = row else {
                    return Ok(Closed::Gone);
                };
                // A running turn whose thread no longer names it in its lease has lost the
                // thread (the lease was cleared or went to another turn without this one
                // being marked): its reply would land after messages its context never had.
                // It ends as taken over, like one that was marked.
                if status == "in_progress" && lease.as_deref() != Some(turn_id) {
                    interrupt(tx, turn_id, &now)?;
                    status = "interrupted".to_owned();
                }
                let (base, shared, rest, chain) = match (&stored_request, &split) {
                    (Some(request), Some((Some((base, shared)), rest_len, chain)))
                        if expected_incarnation.as_deref() == Some(incarnation.as_str()) =>
                    {
                        let rest = &request[request.len() - rest_len..];
                        (Some(base.as_str()), Some(*shared), Some(rest), *chain)
                    }
                    (Some(request), _) => (None, None, Some(&request[..]), 0),
                    (None, _) => (None, None, None, 0),
                };
                let (usage, generation_id) = match outcome {
                    TurnOutcome::Completed {
                        usage,
                        generation_id,
                        ..
                    }
                    | TurnOutcome::Failed {
                        usage,
                        generation_id,
                        ..
                    } => (usage.as_deref(), generation_id.as_deref()),
                };
                if status == "interrupted" {
                    // Taken over: the exchange is kept (with what it cost), the reply is not
                    // added (the thread has moved on). The request's base is another turn of
                    // this same thread (the last whose request this process stored), so the
                    // difference still reads back whole.
                    let exchange = Exchange::new(rest, base, shared, audit);
                    tx.prepare_cached(concat!(
                        "UPDATE turns SET latency_ms = ?, usage = ?, generation_id = ?, ",
                        exchange_columns!(),
                        " WHERE id = ? AND status = 'interrupted' AND upstream_attempts = 0"
                    ))?
                    .execute(params_from_iter(
                        [&latency_ms as &dyn ToSql, &usage, &generation_id]
                            .into_iter()
                            .chain(exchange.params())
                            .chain([&turn_id as &dyn ToSql]),
                    ))?;
                    // Normally the lease is the taker's by now; if it still names this turn,
                    // nothing is running on the thread any more.
                    release(tx, &opening.thread_id, turn_id)?;
                    return Ok(Closed::Interrupted);
                }
                if status != "in_progress" {
                    return Err(Error::Internal(format!(
                        "the turn's closing write found it already {status}"
                    )));
                }
                let (status, error, reply, totals) = match outcome {
                    TurnOutcome::Completed {
                        message, totals, ..
                    } => {
                        insert_message_at(tx, message, count + 1)?;
                        ("completed", None, Some((count + 1, &message.id)), *totals)
                    }
                    TurnOutcome::Failed { error, .. } => ("failed", Some(error), None, None),
                };
                let exchange = Exchange::new(rest, base, shared, audit);
                let output_id = reply.map(|(_, id)| id);
                tx.prepare_cached(concat!(
                    "UPDATE turns SET status = ?, error = ?, output_message_id = ?, usage = ?, \
                     generation_id = ?, completed_at = ?, latency_ms = ?, ",
                    exchange_columns!(),
                    " WHERE id = ?"
                ))?
                .execute(params_from_iter(
                    [
                        &status as &dyn ToSql,
                        &error,
                        &output_id,
                        &usage,
                        &generation_id,
                        &now,
                        &latency_ms,
                    ]
                    .into_iter()
                    .chain(exchange.params())
                    .chain([&turn_id as &dyn ToSql]),
                ))?;
                // The reply's count and id, the usage totals and the lease, in one statement.
                let t = totals.unwrap_or_default();
                tx.prepare_cached(
                    "UPDATE threads SET \
                 message_count = COALESCE(?, message_count), \
                 last_message_id = COALESCE(?, last_message_id), \
                 updated_at = CASE WHEN ? IS NULL THEN updated_at ELSE ? END, \
                 usage_reports = usage_reports + ?, prompt_tokens = prompt_tokens + ?, \
                 completion_tokens = completion_tokens + ?, \
                 reasoning_tokens = reasoning_tokens + ?, cost = cost + ?, \
                 lease_turn_id = CASE WHEN lease_turn_id = ? THEN NULL ELSE lease_turn_id END, \
                 lease_expires_at = CASE WHEN lease_turn_id = ? THEN NULL \
                                    ELSE lease_expires_at END, \
                 lease_owner = CASE WHEN lease_turn_id = ? THEN NULL ELSE lease_owner END \
                 WHERE id = ?",
                )?
                .execute(params![
                    reply.map(|(seq, _)| seq),
                    output_id,
                    output_id,
                    now,
                    i64::from(totals.is_some()),
                    t.prompt_tokens,
                    t.completion_tokens,
                    t.reasoning_tokens,
                    t.cost,
                    turn_id,
                    turn_id,
                    turn_id,
                    thread_id,
                ])?;
                Ok(Closed::Stored {
                    reply_seq: reply.map(|(seq, _)| seq),
                    opening,
                    completed_at: now.clone(),
                    incarnation,
                    chain,
                })
            })
            .await
        };
        let closed = match written {
            Ok(closed) => closed,
            Err(error) => {
                let closing = Arc::try_unwrap(ending).ok().map(|(outcome, mut audit)| {
                    audit.request = request;
                    Closing {
                        outcome,
                        audit,
                        latency_ms,
                        layout,
                    }
                });
                return Err(NotFinished { error, closing });
            }
        };
        let (reply_seq, opening, completed_at, incarnation, chain) = match closed {
            Closed::Stored {
                reply_seq,
                opening,
                completed_at,
                incarnation,
                chain,
            } => (reply_seq, opening, completed_at, incarnation, chain),
            Closed::Interrupted => return Ok(Finished::Interrupted),
            Closed::Gone => return Ok(Finished::Gone),
        };
        // The write has run, so the `Arc` is this function's alone (cloned only should that
        // ever not hold).
        let (outcome, audit) = Arc::try_unwrap(ending).unwrap_or_else(|shared| (*shared).clone());
        let (status, error, output, usage, generation_id) = match outcome {
            TurnOutcome::Completed {
                mut message,
                usage,
                generation_id,
                ..
            } => {
                message.seq = reply_seq.unwrap_or_default();
                ("completed", None, Some(*message), usage, generation_id)
            }
            TurnOutcome::Failed {
                error,
                usage,
                generation_id,
            } => ("failed", Some(error), None, usage, generation_id),
        };
        // The turn as now stored (what `TURN_SUMMARY_COLUMNS` would read back).
        let turn = TurnRecord {
            id: turn_key,
            thread_id: opening.thread_id,
            status: status.to_owned(),
            input_message_ids: opening.input_message_ids,
            output_message_id: output.as_ref().map(|m| m.id.clone()),
            model: opening.model,
            created_at: opening.created_at,
            completed_at: Some(completed_at),
            latency_ms: Some(latency_ms),
            usage,
            generation_id,
            error,
            idempotency_key: opening.idempotency_key,
            request_sha256: opening.request_sha256,
            // The bodies stay out of the summary, as in `TURN_SUMMARY_COLUMNS`.
            audit: AuditRecord {
                request: None,
                response: None,
                ..audit
            },
        };
        if let Some(reply) = &output {
            // The next turn finds the reply in its cached context.
            self.contexts.extend_if_current(
                &cache_key,
                &incarnation,
                reply.seq - 1,
                vec![reply.clone()],
            );
        }
        if let Some(body) = request {
            let last = LastRequest {
                turn_id: turn.id.clone(),
                body,
                chain,
                incarnation: incarnation.into(),
                layout,
            };
            self.contexts.put_last_request(&cache_key, last);
        }
        Ok(Finished::Stored(turn, output))
    }

    pub async fn get_turn(
        &self,
        tenant: &str,
        thread_id: &str,
        turn_id: &str,
    ) -> Result<Option<TurnRecord>, Error> {
        let mut conn = self.reader().await?;
        // The request is read once, by following its chain (audit.rs), not with the row.
        let table = ("turns", TURN_REPLAY_COLUMNS);
        let found = row_in_thread(&mut conn, table, rows::turn, tenant, thread_id, turn_id).await?;
        let Some(mut turn) = found else {
            return Ok(None);
        };
        turn.audit.request = audit::whole_request(&mut conn, turn_id)
            .await?
            .map(Into::into);
        Ok(Some(turn))
    }

    /// The assistant message a completed turn produced.
    pub async fn get_output(&self, turn: &TurnRecord) -> Result<Option<MessageRecord>, Error> {
        match &turn.output_message_id {
            None => Ok(None),
            Some(id) => {
                let sql = format!(
                    "SELECT {} FROM messages WHERE id = ? AND thread_id = ?",
                    MESSAGE_COLUMNS
                );
                let mut conn = self.reader().await?;
                sqlx::query(&sql)
                    .bind(id)
                    .bind(&turn.thread_id)
                    .fetch_optional(&mut *conn)
                    .await?
                    .as_ref()
                    .map(rows::message)
                    .transpose()
            }
        }
    }

    /// Lists a thread's turns with their outputs; `None` when the thread does not exist for
    /// this tenant.
    pub async fn list_turns(
        &self,
        tenant: &str,
        thread_id: &str,
        query: &PageQuery<String>,
    ) -> Result<Option<Page<(TurnRecord, Option<MessageRecord>)>>, Error> {
        let mut conn = self.reader().await?;
        if !thread_of_tenant(&mut conn, tenant, thread_id).await? {
            return Ok(None);
        }
        let mut sql = format!("SELECT {TURN_SUMMARY_COLUMNS} FROM turns WHERE thread_id = ?");
        let mut args = SqliteArguments::default();
        args.add(thread_id).map_err(sqlx::Error::Encode)?;
        let reversed = paginate(&mut sql, &mut args, "id", query)?;
        let rows = sqlx::query_with(&sql, args).fetch_all(&mut *conn).await?;
        let turns = rows.iter().map(rows::turn).collect::<Result<Vec<_>, _>>()?;
        let page = finish(turns, query.limit, reversed);
        // The page's replies in one query, not one per turn.
        let ids: Vec<&String> = page
            .items
            .iter()
            .filter_map(|t| t.output_message_id.as_ref())
            .collect();
        let mut outputs = std::collections::HashMap::new();
        if !ids.is_empty() {
            let marks = vec!["?"; ids.len()].join(", ");
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ? AND id IN ({marks})"
            );
            let mut select = sqlx::query(&sql).bind(thread_id);
            for id in &ids {
                select = select.bind(*id);
            }
            for row in select.fetch_all(&mut *conn).await? {
                let message = rows::message(&row)?;
                outputs.insert(message.id.clone(), message);
            }
        }
        let items = page
            .items
            .into_iter()
            .map(|turn| {
                let output = turn
                    .output_message_id
                    .as_ref()
                    .and_then(|id| outputs.remove(id));
                (turn, output)
            })
            .collect();
        Ok(Some(Page {
            items,
            has_more: page.has_more,
        }))
    }

    /// At start-up: turns whose process died (their lease expired, or its owner is gone)
    /// are marked `interrupted` and their threads freed. Returns how many.
    pub async fn interrupt_abandoned_turns(&self) -> Result<u64, Error> {
        let now = ids::now();
        let now_ms = ids::now_millis();
        self.write(move |tx| {
            let running = tx
                .prepare_cached(
                    "SELECT t.id, t.thread_id, h.lease_turn_id, h.lease_expires_at, h.lease_owner \
                     FROM turns t LEFT JOIN threads h ON h.id = t.thread_id \
                     WHERE t.status = 'in_progress'",
                )?
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<Result<Vec<RunningTurnRow>, _>>()?;
            let mut interrupted = 0;
            for (turn_id, thread_id, lease_turn, expires, owner) in running {
                let still_held = lease_turn.as_deref() == Some(turn_id.as_str())
                    && expires.is_some_and(|e| e > now_ms)
                    && owner.as_deref().is_none_or(owner::is_alive);
                if still_held {
                    continue; // another live process is running it
                }
                interrupt(tx, &turn_id, &now)?;
                release(tx, &thread_id, &turn_id)?;
                interrupted += 1;
            }
            Ok(interrupted)
        })
        .await
    }
}

/// The columns of a turn's upstream exchange, in `Exchange::params` order.
macro_rules! exchange_columns {
    () => {
        "upstream_request = ?, upstream_request_base = ?, upstream_request_shared = ?, \
         upstream_response = ?, upstream_response_json = ?, upstream_status = ?, \
         upstream_attempts = ?, upstream_started_at = ?, upstream_finished_at = ?"
    };
}
use exchange_columns;

/// The values of `exchange_columns!()`: the request as stored (its new bytes after `shared`
/// bytes of turn `base`'s request, or whole), and the rest of the audit record.
struct Exchange<'a> {
    rest: Option<&'a str>,
    base: Option<&'a str>,
    shared: Option<i64>,
    audit: &'a AuditRecord,
    response_is_json: i64,
}

impl<'a> Exchange<'a> {
    fn new(
        rest: Option<&'a str>,
        base: Option<&'a str>,
        shared: Option<i64>,
        audit: &'a AuditRecord,
    ) -> Self {
        Self {
            rest,
            base,
            shared,
            audit,
            response_is_json: i64::from(audit.response_is_json),
        }
    }

    fn params(&self) -> [&dyn ToSql; 9] {
        [
            &self.rest,
            &self.base,
            &self.shared,
            &self.audit.response,
            &self.response_is_json,
            &self.audit.status,
            &self.audit.attempts,
            &self.audit.started_at,
            &self.audit.finished_at,
        ]
    }
}

/// What the closing transaction did, with what the cache needs after it: the thread's
/// incarnation and the stored request's chain length.
#[allow(clippy::large_enum_variant)] // one, moved once, per turn
enum Closed {
    Stored {
        /// The reply's `seq`, when the turn completed.
        reply_seq: Option<i64>,
        opening: OpeningRow,
        completed_at: String,
        incarnation: String,
        chain: u32,
    },
    Interrupted,
    Gone,
}

/// What a turn's opening write stored, read back by its closing write.
struct OpeningRow {
    thread_id: String,
    input_message_ids: String,
    model: String,
    created_at: String,
    idempotency_key: Option<String>,
    request_sha256: Option<String>,
}

/// An `in_progress` turn with its thread's lease: turn id, thread id, lease turn, lease
/// expiry, lease owner.
type RunningTurnRow = (String, String, Option<String>, Option<i64>, Option<String>);

/// Marks a running turn `interrupted` (its process died or stalled past its lease).
pub(super) fn interrupt(tx: &Tx, turn_id: &str, now: &str) -> Result<(), Error> {
    tx.prepare_cached(
        "UPDATE turns SET status = 'interrupted', error = ?, completed_at = ? \
         WHERE id = ? AND status = 'in_progress'",
    )?
    .execute(params![INTERRUPTED_ERROR, now, turn_id])?;
    Ok(())
}

/// Frees the thread's lease if `turn_id` holds it.
pub(super) fn release(tx: &Tx, thread_id: &str, turn_id: &str) -> Result<(), Error> {
    tx.prepare_cached(
        "UPDATE threads SET lease_turn_id = NULL, lease_expires_at = NULL, lease_owner = NULL \
         WHERE id = ? AND lease_turn_id = ?",
    )?
    .execute(params![thread_id, turn_id])?;
    Ok(())
}

/// A completed turn as answering it again needs it (`TURN_REPLAY_COLUMNS`), read inside the
/// opening write.
fn replay_turn(tx: &Tx, turn_id: &str) -> Result<Option<TurnRecord>, Error> {
    let sql = format!("SELECT {TURN_REPLAY_COLUMNS} FROM turns WHERE id = ?");
    let mut select = tx.prepare_cached(&sql)?;
    let mut found = select.query([turn_id])?;
    found
        .next()?
        .map(|row| rows::turn(&Named::new(row)))
        .transpose()
}
