//! The error envelope and the reusable error responses, one per status the service answers
//! with (`error.rs` maps errors to them).

use utoipa::{ToResponse, ToSchema};

/// What went wrong; also a failed turn's `error`.
#[derive(ToSchema)]
pub struct ErrorBody {
    /// invalid_request_error, authentication_error, not_found_error, conflict_error,
    /// rate_limit_error, upstream_error or server_error.
    #[schema(rename = "type")]
    kind: String,
    /// invalid_json, invalid_request, unauthorized, not_found, method_not_allowed,
    /// thread_busy, turn_interrupted, payload_too_large, unsupported_media_type,
    /// idempotency_key_reused,
    /// rate_limited, upstream_error, upstream_timeout, upstream_not_configured, unavailable
    /// or internal_error.
    code: String,
    message: String,
    /// The request field (or header) at fault.
    #[schema(required = false)]
    param: String,
    /// The turn that failed.
    #[schema(required = false, format = Uuid)]
    turn_id: String,
    /// The upstream's HTTP status, when it answered.
    #[schema(required = false, minimum = 100)]
    upstream_status: u16,
}

/// Every error response: `{"error": {...}}`.
#[derive(ToSchema)]
pub struct ErrorEnvelope {
    error: ErrorBody,
}

/// Malformed JSON (`invalid_json`), or a request of the wrong shape (`invalid_request`):
/// wrong types, unknown fields, bad limits or ids, a query string on a route that takes none.
#[derive(ToResponse)]
pub struct BadRequest(ErrorEnvelope);

/// A missing or wrong service key (`unauthorized`), once service keys exist.
#[derive(ToResponse)]
#[response(headers(("WWW-Authenticate" = String, description = "Bearer realm=\"threadkeeper\"")))]
pub struct Unauthorized(ErrorEnvelope);

/// No such thread, message or turn (`not_found`), also one that belongs to another tenant.
#[derive(ToResponse)]
pub struct NotFound(ErrorEnvelope);

/// The method is not served on this path (`method_not_allowed`).
#[derive(ToResponse)]
pub struct MethodNotAllowed(ErrorEnvelope);

/// A turn is in progress on the thread (`thread_busy`); on a turn, also: this turn's lease
/// lapsed while the model worked and another request took the thread over
/// (`turn_interrupted`, with the `turn_id`; the reply was not added, the exchange is in the
/// turn's audit record).
#[derive(ToResponse)]
pub struct ThreadBusy(ErrorEnvelope);

/// The body is larger than the service's `--max-body` (`payload_too_large`).
#[derive(ToResponse)]
pub struct PayloadTooLarge(ErrorEnvelope);

/// A non-empty body that is not `application/json` (`unsupported_media_type`).
#[derive(ToResponse)]
pub struct UnsupportedMediaType(ErrorEnvelope);

/// This `Idempotency-Key` was used on this thread with a different body
/// (`idempotency_key_reused`).
#[derive(ToResponse)]
pub struct IdempotencyKeyReused(ErrorEnvelope);

/// `rate_limited`: this key's request budget is spent (`--rate-limit-per-minute`), or, on a
/// turn, the upstream kept answering 429 after retries.
#[derive(ToResponse)]
#[response(headers(("Retry-After" = String, description = "Seconds to wait before retrying")))]
pub struct RateLimited(ErrorEnvelope);

/// An unexpected failure (`internal_error`); details are in the service's logs.
#[derive(ToResponse)]
pub struct InternalError(ErrorEnvelope);

/// The upstream failed, answered an error, or sent something unreadable (`upstream_error`;
/// `upstream_status` set when it answered). The turn is stored as failed, its input kept.
#[derive(ToResponse)]
pub struct UpstreamError(ErrorEnvelope);

/// `unavailable`: the database is unavailable; on a turn also `upstream_not_configured`
/// (the service has no `OPENROUTER_API_KEY`).
#[derive(ToResponse)]
pub struct Unavailable(ErrorEnvelope);

/// The upstream did not answer in time (`upstream_timeout`).
#[derive(ToResponse)]
pub struct UpstreamTimeout(ErrorEnvelope);
