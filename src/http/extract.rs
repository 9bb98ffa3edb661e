//! Our own extractors, so that every malformed request gets the contract's error JSON:
//! a JSON body (content type, size limit), path ids, query strings, and the tenant.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::domain::ids::parse_id;
use crate::error::ApiError;

/// A request body that is JSON (or empty). Parsing into domain types is left to the
/// handler, which borrows raw values from these bytes.
pub struct JsonBody(pub Bytes);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let mut content_types = req.headers().get_all(CONTENT_TYPE).iter();
        let content_type = content_types.next().map(|v| v.to_str().map(str::to_owned));
        if content_types.next().is_some() {
            return Err(ApiError::UnsupportedMediaType(
                "send one Content-Type header, application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| match rejection {
                BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                    ApiError::PayloadTooLarge {
                        limit: state.config.max_body,
                    }
                }
                // A body that broke off or is badly framed (a chunk size that is not hex).
                BytesRejection::FailedToBufferBody(other) => {
                    ApiError::invalid(format!("the request body could not be read: {other}"))
                }
                other => ApiError::invalid(other.body_text()),
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            // An empty body means "no fields", whatever its declared type.
            return Ok(Self(bytes));
        }
        match content_type {
            Some(Ok(ct)) if is_json(&ct) => Ok(Self(bytes)),
            Some(Ok(ct)) => Err(ApiError::UnsupportedMediaType(format!(
                "request bodies must be application/json, not `{ct}`"
            ))),
            _ => Err(ApiError::UnsupportedMediaType(
                "request bodies must be sent with Content-Type: application/json".into(),
            )),
        }
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Ids from the path, each parsed and canonicalised.
pub struct Ids<const N: usize>(pub [String; N]);

impl<const N: usize> FromRequestParts<AppState> for Ids<N> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let params = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(e.body_text()))?;
        let mut ids: Vec<String> = Vec::with_capacity(N);
        for (name, value) in params.iter() {
            ids.push(parse_id(value, name)?);
        }
        let ids: [String; N] = ids
            .try_into()
            .map_err(|_| ApiError::Internal("route has an unexpected number of ids".into()))?;
        Ok(Self(ids))
    }
}

/// A query string; unknown or malformed parameters are a 400.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded_from_str(query).map(Self)
    }
}

fn serde_urlencoded_from_str<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|_| ApiError::invalid("the query string is malformed"))?,
    )
    .map(|q| q.0)
    .map_err(|e| ApiError::invalid(format!("invalid query string: {}", e.body_text())))
}

/// The tenant a request acts for: the tenant of its service key, or the open-mode tenant
/// while no key has ever been created. Every `/v1` handler takes one, so none runs
/// unauthenticated once keys exist.
pub struct Tenant(pub String);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = state
            .auth
            .authenticate(
                &state.storage,
                parts.headers.get(axum::http::header::AUTHORIZATION),
            )
            .await?;
        Ok(Self(principal.tenant))
    }
}
