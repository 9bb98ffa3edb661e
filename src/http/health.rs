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

async fn healthz() -> JsonText {
    JsonText(StatusCode::OK, r#"{"status":"ok"}"#.into())
}

/// Ready when the database answers.
async fn readyz(State(state): State<AppState>) -> ApiResult<JsonText> {
    state.storage.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::Unavailable
    })?;
    Ok(JsonText(StatusCode::OK, r#"{"status":"ready"}"#.into()))
}
