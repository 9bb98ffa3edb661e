//! `GET /v1/threads/{thread_id}/export`: the thread, its messages and its turns with their
//! audit records as NDJSON (the format of `domain::export`).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::extract::{Ids, Tenant};
use crate::app::AppState;
use crate::domain::export;
use crate::error::{ApiError, ApiResult};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/threads/{thread_id}/export", get(export_thread))
}

async fn export_thread(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Ids([thread_id]): Ids<1>,
) -> ApiResult<Response> {
    let bundle = state
        .storage
        .export_thread(Some(&tenant), &thread_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such thread".into()))?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        )],
        export::write(&bundle),
    )
        .into_response())
}
