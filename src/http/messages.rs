//! `/v1/threads/{thread_id}/messages`: append without calling the model, list, read, and
//! the stored `reasoning_details` bytes with their digest.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::extract::{Ids, JsonBody, Query, Tenant};
use super::pagination::ListParams;
use super::views::{self, JsonText};
use crate::app::AppState;
use crate::domain::message::parse_messages;
use crate::domain::turn::from_body;
use crate::error::{ApiError, ApiResult};
use crate::storage::{Claim, Order, Page};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/threads/{thread_id}/messages", get(list).post(append))
        .route("/v1/threads/{thread_id}/messages/{message_id}", get(read))
        .route(
            "/v1/threads/{thread_id}/messages/{message_id}/reasoning_details",
            get(reasoning_details),
        )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendBody<'a> {
    #[serde(borrow)]
    messages: &'a serde_json::value::RawValue,
}

#[utoipa::path(
    post,
    path = "/v1/threads/{thread_id}/messages",
    operation_id = "append_messages",
    tag = "messages",
    summary = "Append messages without calling the model",
    params(super::schemas::ThreadPath),
    request_body(content = super::schemas::AppendMessagesRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The stored messages", body = super::schemas::AppendedMessages),
        (status = 404, response = super::schemas::NotFound),
        (status = 409, response = super::schemas::ThreadBusy),
    ),
)]
async fn append(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Ids([thread_id]): Ids<1>,
    JsonBody(body): JsonBody,
) -> ApiResult<JsonText> {
    let wire: AppendBody = from_body(&body)?;
    let messages = parse_messages(wire.messages, "messages")?;
    if messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "`messages` must not be empty",
        ));
    }
    let stored = match state
        .storage
        .append_messages(&tenant, &thread_id, &messages)
        .await?
    {
        Claim::Done(stored) => stored,
        Claim::NotFound => return Err(ApiError::NotFound("no such thread".into())),
        Claim::Busy => return Err(ApiError::ThreadBusy),
    };
    let page = Page {
        items: stored,
        has_more: false,
    };
    let mut w = crate::domain::json::ObjectWriter::new();
    let data: Vec<String> = page.items.iter().map(views::message).collect();
    w.string("object", "list").array("data", &data);
    Ok(JsonText(StatusCode::CREATED, w.finish()))
}

#[utoipa::path(
    get,
    path = "/v1/threads/{thread_id}/messages",
    operation_id = "list_messages",
    tag = "messages",
    summary = "List a thread's messages",
    description = "In `seq` order unless `order=desc`.",
    params(super::schemas::ThreadPath, super::schemas::ListQuery),
    responses(
        (status = 200, description = "A page of messages", body = super::schemas::MessageList),
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
    match state
        .storage
        .list_messages(&tenant, &thread_id, &query)
        .await?
    {
        None => Err(ApiError::NotFound("no such thread".into())),
        Some(Err((param, cursor))) => Err(ApiError::invalid_param(
            param,
            format!("cursor `{cursor}` is not a message of this thread"),
        )),
        Some(Ok(page)) => Ok(JsonText(
            StatusCode::OK,
            views::list(&page, |m| &m.id, views::message),
        )),
    }
}

#[utoipa::path(
    get,
    path = "/v1/threads/{thread_id}/messages/{message_id}",
    operation_id = "get_message",
    tag = "messages",
    summary = "Get a message",
    params(super::schemas::MessagePath),
    responses(
        (status = 200, description = "The message", body = super::schemas::Message),
        (status = 404, response = super::schemas::NotFound),
    ),
)]
async fn read(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Ids([thread_id, message_id]): Ids<2>,
) -> ApiResult<JsonText> {
    let message = state
        .storage
        .get_message(&tenant, &thread_id, &message_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such message".into()))?;
    Ok(JsonText(StatusCode::OK, views::message(&message)))
}

/// The stored bytes exactly, with `Repr-Digest: sha-256=:<base64>:` (RFC 9530).
#[utoipa::path(
    get,
    path = "/v1/threads/{thread_id}/messages/{message_id}/reasoning_details",
    operation_id = "get_message_reasoning_details",
    tag = "messages",
    params(super::schemas::MessagePath),
    responses(
        (status = 200, description = "The stored reasoning_details bytes, unchanged",
            content_type = "application/json", body = Vec<serde_json::Value>,
            headers(("Repr-Digest" = String, description = "sha-256=:<base64 of the SHA-256 of the body>: (RFC 9530)"))),
        (status = 404, response = super::schemas::NotFound),
    ),
)]
async fn reasoning_details(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Ids([thread_id, message_id]): Ids<2>,
) -> ApiResult<Response> {
    let message = state
        .storage
        .get_message(&tenant, &thread_id, &message_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such message".into()))?;
    let bytes = message
        .reasoning_details
        .ok_or_else(|| ApiError::NotFound("this message has no reasoning_details".into()))?;
    let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes.as_bytes()));
    let digest = HeaderValue::from_str(&format!("sha-256=:{digest}:"))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::HeaderName::from_static("repr-digest"), digest),
        ],
        bytes,
    )
        .into_response())
}
