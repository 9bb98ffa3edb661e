//! `/v1/threads/{thread_id}/turns`: run a turn, list turns, read one with its audit record.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::extract::{Ids, JsonBody, Query, Tenant};
use super::pagination::ListParams;
use super::views::{self, JsonText};
use crate::app::AppState;
use crate::domain::json::ObjectWriter;
use crate::domain::turn::{parse_turn, Idempotency, MAX_IDEMPOTENCY_KEY_LEN};
use crate::error::{ApiError, ApiResult};
use crate::storage::Order;
use crate::turns::{run_turn, start_streaming_turn, StreamingTurn};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use std::convert::Infallible;
use std::time::Duration;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/threads/{thread_id}/turns", get(list).post(create))
        .route("/v1/threads/{thread_id}/turns/{turn_id}", get(read))
}

#[utoipa::path(
    post,
    path = "/v1/threads/{thread_id}/turns",
    operation_id = "create_turn",
    tag = "turns",
    summary = "Run a turn",
    description = "Stores the input and an in_progress turn, rebuilds the thread's context, calls the model and stores its reply. One turn at a time per thread. With `stream: true` the answer is `text/event-stream`: `turn.started` ({turn_id, input_message_ids}), one `chunk` per upstream chunk (its JSON as received), then `turn.completed` (the Turn) or `turn.failed` ({turn_id, error}).",
    params(super::schemas::ThreadPath, super::schemas::IdempotencyKey),
    request_body(content = Option<super::schemas::TurnRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "The completed turn, or its event stream", content(
            (super::schemas::Turn = "application/json"),
            (super::schemas::TurnStreamEvent = "text/event-stream"),
        )),
        (status = 404, response = super::schemas::NotFound),
        (status = 409, response = super::schemas::ThreadBusy),
        (status = 422, response = super::schemas::IdempotencyKeyReused),
        (status = 502, response = super::schemas::UpstreamError),
        (status = 504, response = super::schemas::UpstreamTimeout),
    ),
)]
async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Ids([thread_id]): Ids<1>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let mut request = parse_turn(&body)?;
    request.idempotency = idempotency(&headers, &body)?;
    if request.stream {
        let turn = start_streaming_turn(state, tenant, thread_id, request).await?;
        return Ok(stream_events(turn).into_response());
    }
    let (turn, output) = run_turn(state, tenant, thread_id, request).await?;
    Ok(JsonText(StatusCode::OK, views::turn(&turn, output.as_ref(), false)).into_response())
}

fn idempotency(headers: &HeaderMap, body: &[u8]) -> ApiResult<Option<Idempotency>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_LEN)
        .ok_or_else(|| {
            ApiError::invalid_param(
                "Idempotency-Key",
                format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
            )
        })?;
    Ok(Some(Idempotency {
        key: key.to_owned(),
        request_sha256: crate::storage::sha256_hex(body),
    }))
}

/// `turn.started`, one `chunk` per upstream chunk (its JSON exactly as received, relayed as
/// it arrives), then `turn.completed` (the Turn) or `turn.failed` (`{turn_id, error}`).
/// Our own keep-alive comments keep idle proxies from cutting a long reasoning phase.
///
/// The events are made by the response body itself, as the connection polls it: a chunk
/// goes from the upstream reader's channel straight to the socket, with no relay task in
/// between (one thread wake-up less per chunk, and before the first one). A client that goes
/// away drops this stream; the turn runs on in its own task.
fn stream_events(turn: StreamingTurn) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    enum Stage {
        Started(StreamingTurn),
        Relaying(StreamingTurn),
        Done,
    }
    let events = futures_util::stream::unfold(Stage::Started(turn), |stage| async move {
        match stage {
            Stage::Started(turn) => {
                let event = started_event(&turn.turn_id, &turn.input_message_ids);
                Some((Ok(event), Stage::Relaying(turn)))
            }
            Stage::Relaying(mut turn) => {
                if let Some(chunk) = turn.chunks.recv().await {
                    let event = Event::default().event("chunk").data(chunk);
                    return Some((Ok(event), Stage::Relaying(turn)));
                }
                let event = last_event(&turn.turn_id, turn.finished.await);
                Some((Ok(event), Stage::Done))
            }
            Stage::Done => None,
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn started_event(turn_id: &str, input_message_ids: &[String]) -> Event {
    let ids: Vec<String> = input_message_ids
        .iter()
        .map(|id| format!("\"{id}\""))
        .collect();
    let mut started = ObjectWriter::new();
    started
        .string("turn_id", turn_id)
        .array("input_message_ids", &ids);
    Event::default()
        .event("turn.started")
        .data(started.finish())
}

/// `turn.completed` or `turn.failed`, from how the turn's task ended.
fn last_event(
    turn_id: &str,
    finished: Result<ApiResult<crate::turns::FinishedTurn>, tokio::task::JoinError>,
) -> Event {
    let error = match finished {
        Ok(Ok((turn, output))) => {
            return Event::default().event("turn.completed").data(views::turn(
                &turn,
                output.as_ref(),
                false,
            ))
        }
        Ok(Err(error)) => {
            let mut body = error.body();
            body.turn_id.get_or_insert_with(|| turn_id.to_owned());
            serde_json::to_string(&body).unwrap_or_default()
        }
        Err(e) => {
            tracing::error!(error = %e, "streaming turn task failed");
            r#"{"type":"server_error","code":"internal_error","message":"internal error"}"#
                .to_owned()
        }
    };
    let mut failed = ObjectWriter::new();
    failed.string("turn_id", turn_id).raw("error", &error);
    Event::default().event("turn.failed").data(failed.finish())
}

#[utoipa::path(
    get,
    path = "/v1/threads/{thread_id}/turns",
    operation_id = "list_turns",
    tag = "turns",
    summary = "List a thread's turns",
    params(super::schemas::ThreadPath, super::schemas::ListQuery),
    responses(
        (status = 200, description = "A page of turns", body = super::schemas::TurnList),
        (status = 404, response = super::schemas::NotFound),
    ),
)]
async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Ids([thread_id]): Ids<1>,
    Query(params): Query<ListParams>,
) -> ApiResult<JsonText> {
    let query = params.into_query(Order::Asc)?;
    let page = state
        .storage
        .list_turns(&tenant, &thread_id, &query)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such thread".into()))?;
    Ok(JsonText(
        StatusCode::OK,
        views::list(
            &page,
            |(t, _)| &t.id,
            |(t, out)| views::turn(t, out.as_ref(), false),
        ),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/threads/{thread_id}/turns/{turn_id}",
    operation_id = "get_turn",
    tag = "turns",
    summary = "Get a turn with its audit record",
    description = "The turn with `upstream`: the exact request sent upstream, the exact response received, its status, the number of attempts and their times.",
    params(super::schemas::TurnPath),
    responses(
        (status = 200, description = "The turn", body = super::schemas::Turn),
        (status = 404, response = super::schemas::NotFound),
    ),
)]
async fn read(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Ids([thread_id, turn_id]): Ids<2>,
) -> ApiResult<JsonText> {
    let turn = state
        .storage
        .get_turn(&tenant, &thread_id, &turn_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such turn".into()))?;
    let output = state.storage.get_output(&turn).await?;
    Ok(JsonText(
        StatusCode::OK,
        views::turn(&turn, output.as_ref(), true),
    ))
}
