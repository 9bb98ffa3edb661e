//! Running a turn: validate, store the input and an `in_progress` turn (taking the thread's
//! lease), rebuild the context, call upstream, then store the reply and complete the turn in
//! one transaction. No transaction stays open across the upstream call.
//!
//! The work runs in its own task: a client that disconnects does not cancel it, so the
//! turn still ends `completed` or `failed` with nothing lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

use crate::app::AppState;
use crate::domain::context::{build_request_after, resolve};
use crate::domain::ids;
use crate::domain::records::{AuditRecord, MessageRecord, ThreadRecord, TurnRecord};
use crate::domain::turn::TurnRequest;
use crate::error::{ApiError, ApiResult};
use crate::storage::{BeginTurn, Begun, Closing, Finished, NotFinished, TurnOutcome};
use crate::telemetry::metrics as m;
use crate::upstream::{ChunkSink, Completion};

/// The threads this process is running a turn on, so that another turn on one of them is
/// refused without a database read. The lease in the database stays the authority: an
/// entry claims a thread only while this process's lease on it is known to last (until the
/// expiry the opening write or the last renewal set, counted from before that write), so a
/// lease that lapsed or was taken over is decided by the database again, as for turns of
/// other processes.
#[derive(Clone, Default)]
pub struct RunningThreads(Arc<Mutex<HashMap<String, Running>>>);

/// A thread's entry: its tenant (thread ids are unique across tenants, and another tenant
/// must get 404, not 409), how many of its turns this process runs (more than one only
/// while a turn whose lease was taken over is still finishing), which of them took the
/// lease last, and until when that lease holds for sure.
struct Running {
    tenant: String,
    turns: usize,
    holder: String,
    held_until: Instant,
}

impl RunningThreads {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        // Entries are whole after any panic: each change is one insert or one field.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn contains(&self, tenant: &str, thread_id: &str) -> bool {
        self.lock()
            .get(thread_id)
            .is_some_and(|running| running.tenant == tenant && running.held_until > Instant::now())
    }

    /// Marks the thread running turn `turn_id`, its lease sure until `held_until`, until
    /// the returned guard is dropped.
    fn enter(
        &self,
        tenant: &str,
        thread_id: &str,
        turn_id: &str,
        held_until: Instant,
    ) -> RunningGuard {
        let mut threads = self.lock();
        let running = threads
            .entry(thread_id.to_owned())
            .or_insert_with(|| Running {
                tenant: tenant.to_owned(),
                turns: 0,
                holder: String::new(),
                held_until,
            });
        running.turns += 1;
        running.holder = turn_id.to_owned();
        running.held_until = held_until;
        RunningGuard {
            threads: self.clone(),
            thread_id: thread_id.to_owned(),
            turn_id: turn_id.to_owned(),
        }
    }

    /// Turn `turn_id`'s lease was renewed (`Some`: until then) or lost (`None`). A turn that
    /// no longer holds the lease changes nothing: it would undo the holder's claim.
    fn lease(&self, thread_id: &str, turn_id: &str, held_until: Option<Instant>) {
        if let Some(running) = self.lock().get_mut(thread_id) {
            if running.holder == turn_id {
                running.held_until = held_until.unwrap_or_else(Instant::now);
            }
        }
    }
}

struct RunningGuard {
    threads: RunningThreads,
    thread_id: String,
    turn_id: String,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let mut threads = self.threads.lock();
        if let Some(running) = threads.get_mut(&self.thread_id) {
            running.turns -= 1;
            if running.turns == 0 {
                threads.remove(&self.thread_id);
            } else if running.holder == self.turn_id {
                // The lease holder ended (and freed the lease); the turns left lost theirs
                // earlier. Nothing here holds the thread any more: the database decides.
                running.held_until = Instant::now();
            }
        }
    }
}

/// The gauge of turns in progress, counted down however the turn ends (a panic included).
struct InProgress(metrics::Gauge);

impl InProgress {
    fn enter() -> Self {
        let gauge = metrics::gauge!(m::TURNS_IN_PROGRESS);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// A turn that ended: its record and, when completed, its assistant message.
pub type FinishedTurn = (TurnRecord, Option<MessageRecord>);

/// A streaming turn whose input is stored: its ids, the upstream chunks as they arrive
/// (the channel closes when the upstream stream ends), and how the turn ended.
pub struct StreamingTurn {
    pub turn_id: String,
    pub input_message_ids: Vec<String>,
    pub chunks: UnboundedReceiver<String>,
    pub finished: JoinHandle<ApiResult<FinishedTurn>>,
}

/// Where a turn's time went, in microseconds, logged on its last line (`turn completed` or
/// `turn failed`): how much a slow turn owes to the model and how much to this service.
#[derive(Clone, Copy, Default)]
struct Stages {
    /// The opening transaction: input stored, lease taken.
    store_input_us: u64,
    /// Reading the context (unless cached) and building the upstream request.
    context_us: u64,
    /// The upstream exchange, retries included.
    upstream_us: u64,
    /// The closing transaction, fsync included.
    store_reply_us: u64,
}

impl Stages {
    /// Logs the turn's last line for an error of this service's own (its storage): what
    /// the stages took up to it, then hands the error back.
    fn failed(self, model: &str, error: ApiError) -> ApiError {
        let Stages {
            store_input_us,
            context_us,
            upstream_us,
            store_reply_us,
        } = self;
        // The log gets what the client does not: an internal error's detail.
        let why = match &error {
            ApiError::Internal(detail) => detail.clone(),
            other => other.to_string(),
        };
        warn!(
            model,
            store_input_us, context_us, upstream_us, store_reply_us, "turn failed: {why}"
        );
        error
    }
}

/// The span a turn runs in: the request's (see `http::router`: one span per request, since
/// every span is entered and left on each poll), or, without one to record the ids on (a
/// caller outside a request, or a log filter that leaves the request's span out), a span of
/// the turn's own.
fn turn_span() -> tracing::Span {
    let current = tracing::Span::current();
    if current.has_field("turn_id") {
        current
    } else {
        tracing::info_span!(
            "turn",
            thread_id = tracing::field::Empty,
            turn_id = tracing::field::Empty
        )
    }
}

/// Names the thread and the turn on the current span (the request's, or the turn's own).
fn record_turn(thread_id: &str, turn_id: &str) {
    let span = tracing::Span::current();
    span.record("thread_id", thread_id);
    span.record("turn_id", turn_id);
}

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros().try_into().unwrap_or(u64::MAX)
}

/// Runs a turn to its end, detached from the caller's lifetime.
pub async fn run_turn(
    state: AppState,
    tenant: String,
    thread_id: String,
    request: TurnRequest,
) -> ApiResult<FinishedTurn> {
    let span = turn_span();
    let tracker = state.turns.clone();
    tracker
        .spawn(drive(state, tenant, thread_id, request, None, None).instrument(span))
        .await
        .map_err(|e| ApiError::Internal(format!("turn task failed: {e}")))?
}

/// Starts a streaming turn. Returns once its input is stored (or with the error that stopped
/// it before that, answered as a normal error response); the rest runs detached, so a
/// client that goes away does not stop the turn.
pub async fn start_streaming_turn(
    state: AppState,
    tenant: String,
    thread_id: String,
    request: TurnRequest,
) -> ApiResult<StreamingTurn> {
    let span = turn_span();
    let (begun_tx, begun_rx) = oneshot::channel();
    let (chunk_tx, chunks) = mpsc::unbounded_channel();
    // Tracked, like every turn: shutdown waits for it even when its client has left.
    let tracker = state.turns.clone();
    let finished = tracker.spawn(
        drive(
            state,
            tenant,
            thread_id,
            request,
            Some(begun_tx),
            Some(chunk_tx),
        )
        .instrument(span),
    );
    match begun_rx.await {
        Ok((turn_id, input_message_ids)) => Ok(StreamingTurn {
            turn_id,
            input_message_ids,
            chunks,
            finished,
        }),
        // The task ended before storing the input: its result is the error to answer.
        Err(_) => match finished.await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => Err(ApiError::Internal("turn ended before it began".into())),
            Err(e) => Err(ApiError::Internal(format!("turn task failed: {e}"))),
        },
    }
}

/// Runs a turn in `turn_span()` (which gets the thread's and the turn's ids once the turn has
/// begun).
async fn drive(
    state: AppState,
    tenant: String,
    thread_id: String,
    request: TurnRequest,
    on_begun: Option<oneshot::Sender<(String, Vec<String>)>>,
    sink: Option<ChunkSink>,
) -> ApiResult<FinishedTurn> {
    let started = Instant::now();
    let turn_id = ids::new_id();

    // A thread this process is running a turn on is refused at once, without the database;
    // an idempotent repeat goes on, since it may be answered from its stored turn. (Another
    // process's turn is found by the lease, in the opening write.)
    if request.idempotency.is_none() && state.running.contains(&tenant, &thread_id) {
        return Err(ApiError::ThreadBusy);
    }
    let begin = BeginTurn {
        turn_id: turn_id.clone(),
        input: request.input,
        lease_ttl_ms: state.config.lease_ttl.as_millis() as i64,
        idempotency: request.idempotency.map(|i| (i.key, i.request_sha256)),
    };
    let storing = Instant::now();
    // The turn's options, from the thread as its opening write reads it (before it stores
    // anything: settings it cannot use refuse the turn with nothing stored).
    // Without an upstream key nothing is stored, but a repeat of a completed turn is still
    // answered from what was stored.
    let decide = {
        let defaults = state.defaults.clone();
        let overrides = request.overrides;
        let stream = request.stream;
        let configured = state.upstream.is_configured();
        move |thread: &ThreadRecord| {
            if !configured {
                return Err(ApiError::UpstreamNotConfigured);
            }
            resolve(&defaults, thread, &overrides, stream)
                .map(|options| (options.model.clone(), options))
        }
    };
    let (thread, options, input_ids, context) = match state
        .storage
        .begin_turn(&tenant, &thread_id, begin, decide)
        .await?
    {
        Begun::Started {
            thread,
            options,
            input_message_ids,
            context,
        } => (thread, options, input_message_ids, context),
        Begun::Refused(error) => return Err(error),
        Begun::Replay(turn) => {
            // The stored turn's id: this request's own was never used.
            record_turn(&thread_id, &turn.id);
            return replay(&state, *turn, on_begun, sink).await;
        }
        Begun::NotFound => return Err(ApiError::NotFound("no such thread".into())),
        Begun::Busy => return Err(ApiError::ThreadBusy),
        Begun::KeyReused => return Err(ApiError::IdempotencyKeyReused),
    };
    let _running = state.running.enter(
        &tenant,
        &thread_id,
        &turn_id,
        storing + state.config.lease_ttl,
    );
    // Recorded once the turn exists: a refused request names no turn.
    record_turn(&thread_id, &turn_id);
    let stages = Stages {
        store_input_us: micros(storing),
        ..Stages::default()
    };
    debug!(model = %options.model, inputs = input_ids.len(), stream = options.stream, "turn started");
    if let Some(on_begun) = on_begun {
        let _ = on_begun.send((turn_id.clone(), input_ids));
    }

    let in_progress = InProgress::enter();
    let result = {
        let work = call_and_store(
            &state, &thread, context, &turn_id, &options, started, stages, sink,
        );
        // The lease is renewed beside the work, in this task: both are polled together and
        // the renewals end with the work. (A task of its own cost every turn a wake-up of
        // another worker thread to run it.)
        tokio::select! {
            result = work => result,
            never = keep_lease(&state, &thread_id, &turn_id) => match never {},
        }
    };
    drop(in_progress);
    let status = match &result {
        Ok(_) => "completed",
        // Taken over; `NotFound` here means its thread was deleted after the takeover.
        Err(ApiError::TurnInterrupted { .. } | ApiError::NotFound(_)) => "interrupted",
        Err(_) => "failed",
    };
    metrics::counter!(m::TURNS, "status" => status).increment(1);
    // The turn was stored: whatever ended it, the client can look it up.
    result.map_err(|error| match error {
        ApiError::Unavailable | ApiError::Internal(_) => ApiError::OfTurn {
            turn_id,
            error: Box::new(error),
        },
        other => other,
    })
}

/// Answers a repeated idempotent request with the turn it already ran: the same JSON, or
/// for a stream the stored chunks again, without storing input or calling the model.
async fn replay(
    state: &AppState,
    turn: TurnRecord,
    on_begun: Option<oneshot::Sender<(String, Vec<String>)>>,
    sink: Option<ChunkSink>,
) -> ApiResult<FinishedTurn> {
    info!("idempotent repeat: replaying the stored turn");
    if let Some(on_begun) = on_begun {
        let input_ids: Vec<String> = serde_json::from_str(&turn.input_message_ids)
            .map_err(|e| ApiError::Internal(format!("stored input ids unreadable: {e}")))?;
        let _ = on_begun.send((turn.id.clone(), input_ids));
    }
    if let (Some(sink), Some(transcript), false) =
        (&sink, &turn.audit.response, turn.audit.response_is_json)
    {
        let mut parser = crate::upstream::sse::SseParser::new();
        for item in parser.push(transcript.as_bytes()) {
            if let crate::upstream::sse::SseItem::Data(data) = item {
                if data.trim() != "[DONE]" {
                    let _ = sink.send(data);
                }
            }
        }
    }
    let output = state.storage.get_output(&turn).await?;
    Ok((turn, output))
}

#[allow(clippy::too_many_arguments)]
async fn call_and_store(
    state: &AppState,
    thread: &ThreadRecord,
    context: Option<crate::storage::Context>,
    turn_id: &str,
    options: &crate::domain::context::ResolvedOptions,
    started: Instant,
    mut stages: Stages,
    sink: Option<ChunkSink>,
) -> ApiResult<FinishedTurn> {
    let building = Instant::now();
    let messages = match context {
        Some(context) => context,
        None => match state.storage.context_messages(&thread.id).await {
            Ok(messages) => messages,
            Err(e) => {
                let latency_ms = started.elapsed().as_millis() as i64;
                let error =
                    end_as_failed(state, &thread.id, turn_id, e.into(), None, latency_ms).await;
                return Err(stages.failed(&options.model, error));
            }
        },
    };
    // Usually the thread's last request with this turn's messages added (see there).
    let previous = state.storage.previous_request(&thread.id);
    let (body, layout) = build_request_after(
        previous.as_ref().map(|(body, layout)| (&**body, layout)),
        thread,
        &messages,
        options,
    );
    stages.context_us = micros(building);
    let calling = Instant::now();
    let exchange = state.upstream.complete(body, sink.as_ref()).await;
    stages.upstream_us = micros(calling);
    // Closing the chunk channel tells a streaming client the relay is over.
    drop(sink);
    let latency_ms = started.elapsed().as_millis() as i64;

    let (outcome, failure) = match exchange.result {
        Ok(completion) => (
            completed(turn_id, &thread.id, &options.model, completion),
            None,
        ),
        Err(mut failure) => {
            failure.turn_id = Some(turn_id.to_owned());
            let error = error_json(&failure.body());
            (TurnOutcome::failed(error), Some(failure))
        }
    };
    let attempts = exchange.audit.attempts;
    let storing = Instant::now();
    let closing = Closing {
        outcome,
        audit: exchange.audit,
        latency_ms,
        layout: Some(layout),
    };
    let finished = store_closing(state, &thread.id, turn_id, closing).await;
    stages.store_reply_us = micros(storing);
    let (turn, output) = match finished {
        Ok(Finished::Stored(turn, output)) => (turn, output),
        Ok(Finished::Interrupted) => {
            return Err(stages.failed(
                &options.model,
                ApiError::TurnInterrupted {
                    turn_id: turn_id.to_owned(),
                },
            ))
        }
        Ok(Finished::Gone) => {
            return Err(stages.failed(
                &options.model,
                ApiError::NotFound(
                    "the thread was deleted while this turn ran (the turn's lease had lapsed)"
                        .into(),
                ),
            ))
        }
        Err(e) => return Err(stages.failed(&options.model, e)),
    };
    let Stages {
        store_input_us,
        context_us,
        upstream_us,
        store_reply_us,
    } = stages;
    if let Some(failure) = failure {
        warn!(
            model = %options.model,
            upstream_status = failure.upstream_status,
            attempts,
            store_input_us,
            context_us,
            upstream_us,
            store_reply_us,
            "turn failed: {}",
            failure.message
        );
        return Err(ApiError::Turn(failure));
    }
    info!(
        model = %options.model,
        latency_ms,
        attempts,
        store_input_us,
        context_us,
        upstream_us,
        store_reply_us,
        "turn completed"
    );
    Ok((turn, output))
}

/// How many times a turn's closing write is tried while the database is unavailable.
const CLOSING_ATTEMPTS: u32 = 3;

/// The turn's closing write. While the database is unavailable (another process holding its
/// write lock past the busy timeout, a full disk) it is tried again after a pause: the reply
/// was paid for, and the client is still waiting for it. If it cannot be stored, the turn
/// ends as failed with its upstream exchange in its audit record (if that at least can be
/// written), so that the exchange is not lost and the thread does not stay busy until the
/// lease expires.
async fn store_closing(
    state: &AppState,
    thread_id: &str,
    turn_id: &str,
    mut closing: Closing,
) -> ApiResult<Finished> {
    let latency_ms = closing.latency_ms;
    let mut attempt = 1;
    loop {
        let NotFinished {
            error,
            closing: back,
        } = match state.storage.finish_turn(thread_id, turn_id, closing).await {
            Ok(finished) => return Ok(finished),
            Err(not_finished) => not_finished,
        };
        let retry = error.is_unavailable()
            && !matches!(error, crate::storage::Error::Closed)
            && attempt < CLOSING_ATTEMPTS;
        match back {
            Some(back) if retry => {
                warn!(error = %error, attempt, "could not store the end of the turn; trying again");
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                attempt += 1;
                closing = back;
            }
            back => {
                let error = ApiError::from(error);
                return Err(
                    end_as_failed(state, thread_id, turn_id, error, back, latency_ms).await,
                );
            }
        }
    }
}

/// Ends as failed with `error` a turn whose own outcome (`unstored`, if it got that far)
/// could not be stored, keeping its upstream exchange and what the model reported it cost;
/// returns the error to answer. A turn taken over meanwhile (its lease lapsed while the
/// database was out of reach) answers as taken over.
async fn end_as_failed(
    state: &AppState,
    thread_id: &str,
    turn_id: &str,
    error: ApiError,
    unstored: Option<Closing>,
    latency_ms: i64,
) -> ApiError {
    let (audit, usage, generation_id) = match unstored {
        Some(Closing {
            outcome:
                TurnOutcome::Completed {
                    usage,
                    generation_id,
                    ..
                },
            audit,
            ..
        }) => (audit, usage, generation_id),
        Some(Closing { audit, .. }) => (audit, None, None),
        None => (AuditRecord::default(), None, None),
    };
    let failed = Closing {
        outcome: TurnOutcome::Failed {
            error: error_json(&error.body()),
            usage,
            generation_id,
        },
        audit,
        latency_ms,
        // The next request is built whole.
        layout: None,
    };
    match state.storage.finish_turn(thread_id, turn_id, failed).await {
        Ok(Finished::Interrupted) => ApiError::TurnInterrupted {
            turn_id: turn_id.to_owned(),
        },
        Ok(_) => error,
        Err(e) => {
            warn!(error = %e.error, "could not mark the turn failed; its lease will expire");
            error
        }
    }
}

/// A stored turn's `error` column: the error object as JSON.
fn error_json(body: &crate::error::ErrorBody) -> String {
    serde_json::to_string(body).unwrap_or_else(|_| {
        r#"{"type":"server_error","code":"internal_error","message":"the error could not be recorded"}"#
            .to_owned()
    })
}

fn completed(turn_id: &str, thread_id: &str, requested_model: &str, c: Completion) -> TurnOutcome {
    if let Some(t) = &c.totals {
        for (kind, n) in [
            ("prompt", t.prompt_tokens),
            ("completion", t.completion_tokens),
            ("reasoning", t.reasoning_tokens),
        ] {
            metrics::counter!(m::TOKENS, "kind" => kind).increment(n.max(0) as u64);
        }
        // metrics counters are integers; cost is fractional credits, so it is a gauge that
        // only ever grows (rate() and increase() work on it as on a counter).
        metrics::gauge!(m::COST).increment(t.cost.max(0.0));
    }
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
/// process's lease still expires soon. Runs until dropped; stops renewing (and just waits)
/// once the lease is no longer this turn's.
async fn keep_lease(state: &AppState, thread_id: &str, turn_id: &str) -> std::convert::Infallible {
    let ttl = state.config.lease_ttl;
    let every = (ttl / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let asked = Instant::now();
        match state
            .storage
            .renew_lease(thread_id, turn_id, ttl.as_millis() as i64)
            .await
        {
            Ok(true) => state.running.lease(thread_id, turn_id, Some(asked + ttl)),
            Ok(false) => {
                state.running.lease(thread_id, turn_id, None);
                break;
            }
            Err(e) => warn!(error = %e, "could not renew the thread lease"),
        }
    }
    std::future::pending().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use clap::Parser;
    use serde_json::{json, Value};

    use super::*;
    use crate::config::{Config, ServeArgs};

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// The service with a short lease, on loopback, in front of a fake upstream that takes
    /// `delay` to answer, and a thread on it.
    struct Leased {
        fake: fake_openrouter::FakeUpstream,
        dir: tempfile::TempDir,
        http: reqwest::Client,
        thread_id: String,
        /// The thread's turns URL.
        turns: String,
    }

    async fn leased_thread(delay: Duration, lease_ttl: Duration) -> Leased {
        let fake = fake_openrouter::FakeUpstream::start(fake_openrouter::FakeConfig {
            default_delay: delay,
            ..Default::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("lease.db").display());
        let upstream = fake.base_url();
        let args = Args::parse_from(["serve", "--database-url", &db, "--upstream-url", &upstream]);
        let mut config = Config::from_args(&args.serve).unwrap();
        config.api_key = Some("sk-or-test".to_owned().into());
        config.lease_ttl = lease_ttl;
        let state = AppState::build(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(crate::app::serve(listener, state, std::future::pending()));
        let http = reqwest::Client::new();
        let thread: Value = http
            .post(format!("{base}/v1/threads"))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let thread_id = thread["id"].as_str().unwrap().to_owned();
        let turns = format!("{base}/v1/threads/{thread_id}/turns");
        Leased {
            fake,
            dir,
            http,
            thread_id,
            turns,
        }
    }

    impl Leased {
        /// Posts a turn with this input; resolves to the answer's status (spawnable).
        fn post(&self, input: &'static str) -> impl std::future::Future<Output = u16> + 'static {
            let (http, turns) = (self.http.clone(), self.turns.clone());
            async move {
                let resp = http
                    .post(&turns)
                    .json(&json!({"input": input}))
                    .send()
                    .await
                    .unwrap();
                resp.status().as_u16()
            }
        }

        /// Waits until the fake has been called (bounded: 10 s).
        async fn model_called(&self) {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while self.fake.requests().is_empty() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the model was never called"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        /// Clears the thread's lease behind the service's back.
        fn clear_lease(&self) {
            let db = rusqlite::Connection::open(self.dir.path().join("lease.db")).unwrap();
            db.busy_timeout(Duration::from_secs(10)).unwrap();
            db.execute(
                "UPDATE threads SET lease_turn_id = NULL, lease_expires_at = NULL, \
                 lease_owner = NULL WHERE id = ?",
                [&self.thread_id],
            )
            .unwrap();
        }
    }

    // The lease outlives its time-to-live only because it is renewed while the model works:
    // past the TTL, another turn on the thread is still refused, and the slow turn completes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_turn_keeps_its_thread_past_the_lease_ttl_and_frees_it_when_done() {
        // Kept whole: its fake upstream and database live as long as it does.
        let leased = leased_thread(Duration::from_millis(2_000), Duration::from_millis(600)).await;
        let Leased { http, turns, .. } = &leased;
        let slow = tokio::spawn({
            let (http, turns) = (http.clone(), turns.clone());
            async move {
                let resp = http
                    .post(&turns)
                    .json(&json!({"input": "take your time"}))
                    .send()
                    .await
                    .unwrap();
                (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
            }
        });
        // Two TTLs in: an unrenewed lease would have expired and been taken over. (Renewed
        // every 200 ms, so a renewal may run late by 400 ms on a busy machine.) The probe
        // carries an idempotency key, which skips the in-memory busy answer: the lease in
        // the database has to decide.
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        let second = http
            .post(turns)
            .header("Idempotency-Key", "probe")
            .json(&json!({"input": "me too"}))
            .send()
            .await
            .unwrap();
        assert_eq!(second.status().as_u16(), 409, "the thread was not held");
        let (status, body) = slow.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "completed", "{body}");
        // Once the turn is done, its renewals stop with it: the thread takes a turn at once.
        let next = http
            .post(turns)
            .json(&json!({"input": "and now"}))
            .send()
            .await
            .unwrap();
        assert_eq!(next.status().as_u16(), 200);
    }

    // The in-memory busy answer follows the lease: once the database no longer gives this
    // turn the thread (here its lease is cleared behind its back), the next renewal finds it
    // lost and the thread takes another turn, though the first is still running. The first,
    // when its model answers, ends as taken over: its reply is not stored after the other
    // turn's messages.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_lease_stops_the_in_memory_busy_answer() {
        let leased = leased_thread(Duration::from_millis(4_000), Duration::from_secs(4)).await;
        let post = |input| leased.post(input);
        let first = tokio::spawn(post("first"));
        leased.model_called().await;
        assert_eq!(post("while held").await, 409);
        leased.clear_lease();
        // Renewals come every 1.33 s: by 2.2 s the first turn has found its lease gone, while
        // the lease it last renewed (for 4 s) would still be running.
        tokio::time::sleep(Duration::from_millis(2_200)).await;
        assert_eq!(post("after the lease was lost").await, 200);
        assert_eq!(first.await.unwrap(), 409);
        let messages: serde_json::Value = leased
            .http
            .get(leased.turns.replace("/turns", "/messages"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let roles: Vec<&str> = messages["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["user", "user", "assistant"], "{messages}");
    }

    // The in-memory busy answer follows the turn holding the lease: when that turn ends, the
    // thread is free at once, though a turn that lost its lease earlier is still running.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_busy_answer_ends_with_the_lease_holder_not_a_turn_that_lost_it() {
        let leased = leased_thread(Duration::ZERO, Duration::from_secs(4)).await;
        leased
            .fake
            .push(fake_openrouter::Reply::generated().with_delay(Duration::from_secs(6)));
        let post = |input| leased.post(input);
        let lost = tokio::spawn(post("slow, and its lease is lost"));
        leased.model_called().await;
        leased.clear_lease();
        // Renewals every 1.33 s: by 2.2 s the slow turn has found its lease gone.
        tokio::time::sleep(Duration::from_millis(2_200)).await;
        assert_eq!(post("takes the lease and ends").await, 200);
        assert_eq!(post("the thread is free").await, 200);
        assert_eq!(lost.await.unwrap(), 409);
    }
}
