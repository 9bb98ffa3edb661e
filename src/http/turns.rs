//! `/v1/threads/{thread_id}/turns`: run a turn, list turns, read one with its audit record.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::extract::{Ids, JsonBody, Query, Tenant};
use super::pagination::ListParams;
use super::views::{self, JsonText};
use crate::app::AppState;
use crate::domain::turn::parse_turn;
use crate::error::{ApiError, ApiResult};
use crate::storage::Order;
use crate::turns::run_turn;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/threads/{thread_id}/turns", get(list).post(create))
        .route("/v1/threads/{thread_id}/turns/{turn_id}", get(read))
}

async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Ids([thread_id]): Ids<1>,
    JsonBody(body): JsonBody,
) -> ApiResult<JsonText> {
    let request = parse_turn(&body)?;
    if request.stream {
        return Err(ApiError::invalid_param(
            "stream",
            "streaming turns are not available yet; send `stream: false` or omit it",
        ));
    }
    let (turn, output) = run_turn(state, tenant, thread_id, request).await?;
    Ok(JsonText(
        StatusCode::OK,
        views::turn(&turn, output.as_ref(), false),
    ))
}

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
