//! Liveness and readiness probes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::views::JsonText;
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    summary = "Liveness",
    responses((status = 200, description = "The process serves requests", body = super::schemas::Health)),
)]
async fn healthz() -> JsonText {
    JsonText(StatusCode::OK, r#"{"status":"ok"}"#.into())
}

/// Ready when the database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The database answers", body = super::schemas::Health),
        (status = 503, response = super::schemas::Unavailable),
    ),
)]
async fn readyz(State(state): State<AppState>) -> ApiResult<JsonText> {
    state.storage.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::Unavailable
    })?;
    Ok(JsonText(StatusCode::OK, r#"{"status":"ready"}"#.into()))
}
