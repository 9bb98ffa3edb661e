//! The one error type of the HTTP surface and its mapping to the contract's error JSON:
//! `{"error": {"type", "code", "message", "param"?, "turn_id"?, "upstream_status"?}}`.
//!
//! Server-side failures (database, bugs) are logged in full and answered with a generic
//! message: their details are for operators, not clients.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// What a client gets told about a failure; also stored as a failed turn's `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
}

/// `{"error": {...}}`, the shape of every error response.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidJson(String),
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    #[error("missing or invalid service key")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("a turn is already in progress on this thread")]
    ThreadBusy,
    /// The turn's lease lapsed while the model worked, and the thread was taken over (by
    /// another turn, appended messages, or another process's start-up sweep), marking this
    /// turn `interrupted` before its reply could be stored.
    #[error(
        "this turn's lease lapsed while the model worked and the thread was taken over, \
         marking the turn interrupted: nothing from its upstream call was added to the \
         thread (the exchange is kept in the turn's audit record)"
    )]
    TurnInterrupted { turn_id: String },
    #[error("request body is larger than the {limit} bytes allowed")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("{0}")]
    MethodNotAllowed(String),
    /// This key's request budget is spent (`--rate-limit-per-minute`).
    #[error("too many requests for this key; retry later")]
    TooManyRequests(Duration),
    /// A turn that failed upstream; carries what the client should see.
    #[error("{}", .0.message)]
    Turn(TurnFailure),
    #[error("OPENROUTER_API_KEY is not set: this service cannot call the model")]
    UpstreamNotConfigured,
    #[error("the database is unavailable")]
    Unavailable,
    #[error("internal error")]
    Internal(String),
    /// `error`, met by a turn after it was stored: answered with the turn's id.
    #[error("{error}")]
    OfTurn {
        turn_id: String,
        error: Box<ApiError>,
    },
}

/// A failed upstream call, already classified; becomes the turn's stored error.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnFailure {
    pub kind: TurnFailureKind,
    pub message: String,
    pub upstream_status: Option<u16>,
    pub turn_id: Option<String>,
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnFailureKind {
    /// 429 from upstream after every retry.
    RateLimited,
    /// Anything else the upstream did wrong: an error status, an error object, bad body.
    Upstream,
    /// No answer in time.
    Timeout,
}

impl TurnFailure {
    pub fn status(&self) -> StatusCode {
        match self.kind {
            TurnFailureKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            TurnFailureKind::Upstream => StatusCode::BAD_GATEWAY,
            TurnFailureKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (kind, code) = match self.kind {
            TurnFailureKind::RateLimited => ("rate_limit_error", "rate_limited"),
            TurnFailureKind::Upstream => ("upstream_error", "upstream_error"),
            TurnFailureKind::Timeout => ("upstream_error", "upstream_timeout"),
        };
        ErrorBody {
            kind: kind.into(),
            code: code.into(),
            message: self.message.clone(),
            param: None,
            turn_id: self.turn_id.clone(),
            upstream_status: self.upstream_status,
        }
    }
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: None,
        }
    }

    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_) | Self::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::ThreadBusy | Self::TurnInterrupted { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Turn(failure) => failure.status(),
            Self::UpstreamNotConfigured | Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::OfTurn { error, .. } => error.status(),
        }
    }

    pub fn body(&self) -> ErrorBody {
        match self {
            Self::Turn(failure) => return failure.body(),
            Self::OfTurn { turn_id, error } => {
                let mut body = error.body();
                body.turn_id.get_or_insert_with(|| turn_id.clone());
                return body;
            }
            _ => {}
        }
        let (kind, code) = match self {
            Self::InvalidJson(_) => ("invalid_request_error", "invalid_json"),
            Self::InvalidRequest { .. } => ("invalid_request_error", "invalid_request"),
            Self::Unauthorized => ("authentication_error", "unauthorized"),
            Self::NotFound(_) => ("not_found_error", "not_found"),
            Self::MethodNotAllowed(_) => ("invalid_request_error", "method_not_allowed"),
            Self::TooManyRequests(_) => ("rate_limit_error", "rate_limited"),
            Self::ThreadBusy => ("conflict_error", "thread_busy"),
            Self::TurnInterrupted { .. } => ("conflict_error", "turn_interrupted"),
            Self::PayloadTooLarge { .. } => ("invalid_request_error", "payload_too_large"),
            Self::UnsupportedMediaType(_) => ("invalid_request_error", "unsupported_media_type"),
            Self::IdempotencyKeyReused => ("invalid_request_error", "idempotency_key_reused"),
            Self::UpstreamNotConfigured => ("server_error", "upstream_not_configured"),
            Self::Unavailable => ("server_error", "unavailable"),
            Self::Internal(_) | Self::Turn(_) | Self::OfTurn { .. } => {
                ("server_error", "internal_error")
            }
        };
        let param = match self {
            Self::InvalidRequest { param, .. } => param.clone(),
            _ => None,
        };
        ErrorBody {
            kind: kind.into(),
            code: code.into(),
            // Internal details stay in the logs.
            message: match self {
                Self::Internal(_) => "internal error".into(),
                other => other.to_string(),
            },
            param,
            turn_id: match self {
                Self::TurnInterrupted { turn_id } => Some(turn_id.clone()),
                _ => None,
            },
            upstream_status: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let internal = match &self {
            Self::OfTurn { error, .. } => error.as_ref(),
            other => other,
        };
        if let Self::Internal(detail) = internal {
            tracing::error!(error = %detail, "internal error");
        }
        let status = self.status();
        let retry_after = match &self {
            Self::Turn(f) => f.retry_after,
            Self::TooManyRequests(wait) => Some(*wait + Duration::from_millis(999)),
            _ => None,
        };
        let mut response =
            (status, axum::Json(ErrorEnvelope { error: self.body() })).into_response();
        if matches!(self, Self::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"threadkeeper\""),
            );
        }
        if matches!(self, Self::PayloadTooLarge { .. }) {
            // The rest of the body was never read, so this connection cannot carry another
            // request: saying so keeps clients from reusing it and losing their next request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(after) = retry_after {
            let secs = after.as_secs().max(1).to_string();
            if let Ok(value) = HeaderValue::from_str(&secs) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<crate::storage::Error> for ApiError {
    fn from(err: crate::storage::Error) -> Self {
        if err.is_unavailable() {
            tracing::error!(error = %err, "database unavailable");
            Self::Unavailable
        } else {
            Self::Internal(format!("database: {err}"))
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
