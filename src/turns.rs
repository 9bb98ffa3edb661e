//! Running a turn: validate, store the input and an `in_progress` turn (taking the thread's
//! lease), rebuild the context, call upstream, then store the reply and complete the turn in
//! one transaction. No transaction stays open across the upstream call.
//!
//! The work runs in its own task: a client that disconnects does not cancel it, so the
//! turn still ends `completed` or `failed` with nothing lost.

use std::time::{Duration, Instant};

use tracing::{info, instrument, warn, Instrument};

use crate::app::AppState;
use crate::domain::context::{build_request, resolve};
use crate::domain::ids;
use crate::domain::records::{MessageRecord, TurnRecord};
use crate::domain::turn::TurnRequest;
use crate::error::{ApiError, ApiResult};
use crate::storage::{BeginTurn, Claim, TurnOutcome};
use crate::upstream::Completion;

/// A turn that ended: its record and, when completed, its assistant message.
pub type FinishedTurn = (TurnRecord, Option<MessageRecord>);

/// Runs a turn to its end, detached from the caller's lifetime.
pub async fn run_turn(
    state: AppState,
    tenant: String,
    thread_id: String,
    request: TurnRequest,
) -> ApiResult<FinishedTurn> {
    let span = tracing::Span::current();
    tokio::spawn(run(state, tenant, thread_id, request).instrument(span))
        .await
        .map_err(|e| ApiError::Internal(format!("turn task failed: {e}")))?
}

#[instrument(skip_all, fields(thread_id = %thread_id, turn_id))]
async fn run(
    state: AppState,
    tenant: String,
    thread_id: String,
    request: TurnRequest,
) -> ApiResult<FinishedTurn> {
    if !state.upstream.is_configured() {
        return Err(ApiError::UpstreamNotConfigured);
    }
    let started = Instant::now();
    let turn_id = ids::new_id();
    tracing::Span::current().record("turn_id", turn_id.as_str());

    // The model is resolved before the input is stored so the turn row names it; the
    // thread's defaults are re-read inside the transaction for the context itself.
    let thread = state
        .storage
        .get_thread(&tenant, &thread_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such thread".into()))?;
    let options = resolve(&state.defaults, &thread, &request.overrides, request.stream)?;

    let lease_ttl_ms = state.config.lease_ttl.as_millis() as i64;
    let begin = BeginTurn {
        turn_id: &turn_id,
        model: &options.model,
        input: &request.input,
        lease_ttl_ms,
    };
    let (thread, _input) = match state.storage.begin_turn(&tenant, &thread_id, begin).await? {
        Claim::Done(done) => done,
        Claim::NotFound => return Err(ApiError::NotFound("no such thread".into())),
        Claim::Busy => return Err(ApiError::ThreadBusy),
    };
    info!(model = %options.model, inputs = request.input.len(), "turn started");

    let heartbeat = spawn_heartbeat(&state, &thread_id, &turn_id);
    let result = call_and_store(&state, &thread, &turn_id, &options, started).await;
    heartbeat.abort();
    if let Err(err @ (ApiError::Internal(_) | ApiError::Unavailable)) = &result {
        // The turn could not be completed or failed normally (the database refused a
        // write): end it as failed so its thread does not stay busy until the lease expires.
        let error = serde_json::to_string(&err.body()).unwrap_or_default();
        let audit = crate::domain::records::AuditRecord::default();
        let latency_ms = started.elapsed().as_millis() as i64;
        if let Err(e) = state
            .storage
            .finish_turn(
                &thread_id,
                &turn_id,
                TurnOutcome::Failed { error },
                &audit,
                latency_ms,
            )
            .await
        {
            warn!(error = %e, "could not mark the turn failed; its lease will expire");
        }
    }
    result
}

async fn call_and_store(
    state: &AppState,
    thread: &crate::domain::records::ThreadRecord,
    turn_id: &str,
    options: &crate::domain::context::ResolvedOptions,
    started: Instant,
) -> ApiResult<FinishedTurn> {
    let messages = state.storage.context_messages(&thread.id).await?;
    let body = build_request(thread, &messages, options);
    let exchange = state.upstream.complete(body).await;
    let latency_ms = started.elapsed().as_millis() as i64;

    let (outcome, failure) = match exchange.result {
        Ok(completion) => (
            completed(turn_id, &thread.id, &options.model, completion),
            None,
        ),
        Err(mut failure) => {
            failure.turn_id = Some(turn_id.to_owned());
            let error = serde_json::to_string(&failure.body())
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            (TurnOutcome::Failed { error }, Some(failure))
        }
    };
    let turn = state
        .storage
        .finish_turn(&thread.id, turn_id, outcome, &exchange.audit, latency_ms)
        .await?
        .ok_or_else(|| {
            ApiError::Internal("the turn lost its lease to another process before it ended".into())
        })?;
    if let Some(failure) = failure {
        warn!(
            upstream_status = failure.upstream_status,
            attempts = exchange.audit.attempts,
            "turn failed: {}",
            failure.message
        );
        return Err(ApiError::Turn(failure));
    }
    info!(
        latency_ms,
        attempts = exchange.audit.attempts,
        "turn completed"
    );
    let output = state.storage.get_output(&turn).await?;
    Ok((turn, output))
}

fn completed(turn_id: &str, thread_id: &str, requested_model: &str, c: Completion) -> TurnOutcome {
    let message = MessageRecord {
        id: ids::new_id(),
        thread_id: thread_id.to_owned(),
        seq: 0,
        role: "assistant".into(),
        content: c.content,
        tool_calls: c.tool_calls,
        reasoning: c.reasoning,
        reasoning_details_sha256: c
            .reasoning_details
            .as_deref()
            .map(|r| crate::storage::sha256_hex(r.as_bytes())),
        reasoning_details: c.reasoning_details,
        turn_id: Some(turn_id.to_owned()),
        created_at: ids::now(),
        model: c.model.clone().or_else(|| Some(requested_model.to_owned())),
        requested_model: Some(requested_model.to_owned()),
        provider: c.provider,
        generation_id: c.generation_id.clone(),
        finish_reason: c.finish_reason,
        native_finish_reason: c.native_finish_reason,
        usage: c.usage.clone(),
        ..Default::default()
    };
    TurnOutcome::Completed {
        message: Box::new(message),
        usage: c.usage,
        totals: c.totals,
        generation_id: c.generation_id,
    }
}

/// Renews the thread lease while the turn runs, so a slow model does not lose it and a dead
/// process's lease still expires soon.
fn spawn_heartbeat(
    state: &AppState,
    thread_id: &str,
    turn_id: &str,
) -> tokio::task::JoinHandle<()> {
    let storage = state.storage.clone();
    let ttl = state.config.lease_ttl;
    let (thread_id, turn_id) = (thread_id.to_owned(), turn_id.to_owned());
    tokio::spawn(async move {
        let every = (ttl / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            match storage
                .renew_lease(&thread_id, &turn_id, ttl.as_millis() as i64)
                .await
            {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => warn!(error = %e, "could not renew the thread lease"),
            }
        }
    })
}
