//! The HTTP surface: one module per resource, each with its own `router()`, merged here with
//! the tower layers (body limit, request ids, tracing, panic catching) and the JSON
//! fallbacks for unknown routes and methods.

mod docs;
mod export;
mod extract;
mod health;
mod messages;
mod openapi;
mod pagination;
mod schemas;
mod threads;
mod turns;
pub mod views;

use axum::extract::DefaultBodyLimit;
use axum::extract::{MatchedPath, State};
use axum::http::Method;
use axum::http::{HeaderName, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::app::AppState;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use extract::Tenant;

/// The routes that read a query string (on GET): lists and the context preview.
const QUERY_ROUTES: [&str; 4] = [
    "/v1/threads",
    "/v1/threads/{thread_id}/messages",
    "/v1/threads/{thread_id}/turns",
    "/v1/threads/{thread_id}/context",
];

/// A query string on a route that takes none is refused, like an unknown field in a body:
/// a client that thinks it is setting something should hear that it is not. On `/v1` routes
/// the key is checked first, as every other check of such a request comes after it: a client
/// without a valid key hears 401 (or 429), whatever else is wrong with its request.
async fn refuse_unexpected_query(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let has_query = request.uri().query().is_some_and(|q| !q.is_empty());
    let takes_query = request.method() == Method::GET
        && request
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|path| QUERY_ROUTES.contains(&path.as_str()));
    if has_query && !takes_query {
        if request.uri().path().starts_with("/v1/") {
            // The handlers' own key check (the `Tenant` extractor), run here first.
            let (mut parts, _) = request.into_parts();
            if let Err(refused) = Tenant::from_request_parts(&mut parts, &state).await {
                return refused.into_response();
            }
        }
        return ApiError::invalid("this route takes no query parameters").into_response();
    }
    next.run(request).await
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body;
    Router::new()
        .merge(threads::router())
        .merge(messages::router())
        .merge(turns::router())
        .merge(health::router())
        .merge(openapi::router())
        .merge(docs::router())
        .merge(export::router())
        .route(
            "/metrics",
            axum::routing::get(crate::telemetry::metrics::render),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_unexpected_query,
        ))
        .route_layer(middleware::from_fn(crate::telemetry::metrics::track_http))
        .fallback(|method: Method| async move {
            // Routed requests are counted by `track_http`; the rest under one label.
            metrics::counter!(
                crate::telemetry::metrics::HTTP_REQUESTS,
                "method" => crate::telemetry::metrics::method_label(&method),
                "route" => "unmatched",
                "status" => "404"
            )
            .increment(1);
            ApiError::NotFound("no such route".into())
        })
        .method_not_allowed_fallback(|method: Method, route: Option<MatchedPath>| async move {
            // Not seen by `track_http` (a route layer runs only for the route's own methods).
            metrics::counter!(
                crate::telemetry::metrics::HTTP_REQUESTS,
                "method" => crate::telemetry::metrics::method_label(&method),
                "route" => route.map_or_else(|| "unmatched".to_owned(), |r| r.as_str().to_owned()),
                "status" => "405"
            )
            .increment(1);
            ApiError::MethodNotAllowed("this method is not allowed on this route".into())
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("a request handler panicked".into()).into_response()
        }))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let request_id = req
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    // Never the Authorization header: it carries keys. A turn records its
                    // thread and turn ids here (`turns::drive`): one span per request, since
                    // every span is entered and left on each poll of the request's future.
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        request_id,
                        thread_id = tracing::field::Empty,
                        turn_id = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_response(
                    tower_http::trace::DefaultOnResponse::new()
                        .level(tracing::Level::INFO)
                        .latency_unit(tower_http::LatencyUnit::Micros),
                ),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}
