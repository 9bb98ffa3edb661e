//! `/v1/threads`: create, list, read, patch, delete, and the context preview.

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::extract::{Ids, JsonBody, Query, Tenant};
use super::pagination::ListParams;
use super::views::{self, JsonText};
use crate::app::AppState;
use crate::domain::context::{build_request, resolve};
use crate::domain::turn::{parse_context_overrides, ContextQuery};
use crate::domain::{ids, thread};
use crate::error::{ApiError, ApiResult};
use crate::storage::{Claim, Order};
use axum::extract::State;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/threads", get(list).post(create))
        .route(
            "/v1/threads/{thread_id}",
            get(read).patch(update).delete(remove),
        )
        .route("/v1/threads/{thread_id}/context", get(context))
}

fn not_found() -> ApiError {
    ApiError::NotFound("no such thread".into())
}

#[utoipa::path(
    post,
    path = "/v1/threads",
    operation_id = "create_thread",
    tag = "threads",
    summary = "Create a thread",
    description = "Creates a thread with its defaults for turns and, optionally, an initial history (imported as given, assistant reasoning_details verbatim).",
    request_body(content = Option<super::schemas::CreateThreadRequest>, content_type = "application/json"),
    responses((status = 201, description = "The new thread", body = super::schemas::Thread)),
)]
async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    JsonBody(body): JsonBody,
) -> ApiResult<JsonText> {
    let create = thread::parse_create(&body)?;
    let created = state
        .storage
        .create_thread(&tenant, &ids::new_id(), &create)
        .await?;
    Ok(JsonText(StatusCode::CREATED, views::thread(&created)))
}

#[utoipa::path(
    get,
    path = "/v1/threads",
    operation_id = "list_threads",
    tag = "threads",
    summary = "List threads",
    description = "The caller's threads, newest first unless `order=asc`.",
    params(super::schemas::ListQuery),
    responses((status = 200, description = "A page of threads", body = super::schemas::ThreadList)),
)]
async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Query(params): Query<ListParams>,
) -> ApiResult<JsonText> {
    let query = params.into_query(Order::Desc)?;
    let page = state.storage.list_threads(&tenant, &query).await?;
    Ok(JsonText(
        StatusCode::OK,
        views::list(&page, |t| &t.id, views::thread),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/threads/{thread_id}",
    operation_id = "get_thread",
    tag = "threads",
    summary = "Get a thread",
    params(super::schemas::ThreadPath),
    responses(
        (status = 200, description = "The thread", body = super::schemas::Thread),
        (status = 404, response = super::schemas::NotFound),
    ),
)]
async fn read(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Ids([id]): Ids<1>,
) -> ApiResult<JsonText> {
    let thread = state
        .storage
        .get_thread(&tenant, &id)
        .await?
        .ok_or_else(not_found)?;
    Ok(JsonText(StatusCode::OK, views::thread(&thread)))
}

#[utoipa::path(
    patch,
    path = "/v1/threads/{thread_id}",
    operation_id = "update_thread",
    tag = "threads",
    summary = "Change a thread's metadata and defaults",
    params(super::schemas::ThreadPath),
    request_body(content = Option<super::schemas::PatchThreadRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "The changed thread", body = super::schemas::Thread),
        (status = 404, response = super::schemas::NotFound),
    ),
)]
async fn update(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Ids([id]): Ids<1>,
    JsonBody(body): JsonBody,
) -> ApiResult<JsonText> {
    let patch = thread::parse_patch(&body)?;
    let thread = state
        .storage
        .update_thread(&tenant, &id, &patch)
        .await?
        .ok_or_else(not_found)?;
    Ok(JsonText(StatusCode::OK, views::thread(&thread)))
}

#[utoipa::path(
    delete,
    path = "/v1/threads/{thread_id}",
    operation_id = "delete_thread",
    tag = "threads",
    summary = "Delete a thread with all its messages and turns",
    params(super::schemas::ThreadPath),
    responses(
        (status = 200, description = "The thread is gone", body = super::schemas::ThreadDeleted),
        (status = 404, response = super::schemas::NotFound),
        (status = 409, response = super::schemas::ThreadBusy),
    ),
)]
async fn remove(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Ids([id]): Ids<1>,
) -> ApiResult<JsonText> {
    match state.storage.delete_thread(&tenant, &id).await? {
        Claim::Done(()) => {}
        Claim::NotFound => return Err(not_found()),
        Claim::Busy => return Err(ApiError::ThreadBusy),
    }
    let mut w = crate::domain::json::ObjectWriter::new();
    w.string("id", &id)
        .string("object", "thread.deleted")
        .bool("deleted", true);
    Ok(JsonText(StatusCode::OK, w.finish()))
}

/// The exact body the next turn would send upstream, without sending it.
#[utoipa::path(
    get,
    path = "/v1/threads/{thread_id}/context",
    operation_id = "get_thread_context",
    tag = "threads",
    description = "Accepts a turn's overrides as query parameters or as a JSON body (body fields win).",
    params(super::schemas::ThreadPath, super::schemas::ContextQuery),
    request_body(content = Option<super::schemas::ContextRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "The chat-completions request body", body = super::schemas::ChatCompletionRequest),
        (status = 404, response = super::schemas::NotFound),
    ),
)]
async fn context(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Ids([id]): Ids<1>,
    Query(query): Query<ContextQuery>,
    JsonBody(body): JsonBody,
) -> ApiResult<JsonText> {
    let overrides = parse_context_overrides(query, &body)?;
    let thread = state
        .storage
        .get_thread(&tenant, &id)
        .await?
        .ok_or_else(not_found)?;
    let options = resolve(&state.defaults, &thread, &overrides, false)?;
    let messages = state.storage.context_messages(&thread.id).await?;
    Ok(JsonText(
        StatusCode::OK,
        build_request(&thread, &messages, &options),
    ))
}
