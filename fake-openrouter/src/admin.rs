//! The admin HTTP API under `/_fake/`, so a fake running as a separate process (the binary) can be
//! scripted and inspected. Shapes are documented in the crate docs.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use crate::chat::error_body;
use crate::state::Shared;
use crate::Reply;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_fake/replies", post(push_replies))
        .route("/_fake/requests", get(list_requests))
        .route("/_fake/reset", post(reset))
        .route("/_fake/strict", post(set_strict))
}

/// One entry of `GET /_fake/requests`.
#[derive(Serialize)]
struct RequestView<'a> {
    path: &'a str,
    body: &'a str,
    authorization_present: bool,
    reply_status: u16,
}

#[derive(Deserialize)]
struct StrictSwitch {
    strict: bool,
}

/// Parse a JSON body ourselves (instead of axum's `Json`) so mistakes come back in the same
/// `{"error":...}` shape as everything else, with serde's message saying what was wrong.
fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid admin request: {e}"))
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(CONTENT_TYPE, "application/json")],
        error_body(400, message),
    )
        .into_response()
}

async fn push_replies(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse::<Vec<Reply>>(&body) {
        Ok(replies) => {
            for reply in replies {
                shared.push(reply);
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(message) => bad_request(&message),
    }
}

async fn list_requests(State(shared): State<Arc<Shared>>) -> Response {
    let requests = shared.requests();
    let views: Vec<RequestView<'_>> = requests
        .iter()
        .map(|r| RequestView {
            path: &r.path,
            body: &r.body,
            authorization_present: r.authorization.is_some(),
            reply_status: r.reply_status,
        })
        .collect();
    match serde_json::to_string(&views) {
        Ok(json) => ([(CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => bad_request(&e.to_string()),
    }
}

async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.reset();
    StatusCode::NO_CONTENT
}

async fn set_strict(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse::<StrictSwitch>(&body) {
        Ok(switch) => {
            shared.set_strict(switch.strict);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(message) => bad_request(&message),
    }
}
