//! `GET /openapi.json`: the OpenAPI 3.1 document of every route, generated with utoipa from
//! the handlers' `#[utoipa::path]` attributes and the shapes in `schemas/`.
//!
//! The error responses every route shares (400 and 500 everywhere; 401, 429 and 503 on `/v1`;
//! 413 and 415 wherever a body is read) are added here by one rule rather than repeated on
//! each handler, so a new route gets them without anyone remembering to.

use std::sync::LazyLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::schema::{SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{Modify, OpenApi};

use super::schemas;
use crate::error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "threadkeeper",
        description = "Conversation-state service for reasoning models: threads, turns and \
            byte-exact reasoning over OpenRouter.\n\nOnce a service key exists, every `/v1` \
            request needs `Authorization: Bearer <key>`; until then the service runs open \
            (loopback only). Optional fields are omitted, never null, except a message's \
            `content`. Every error is `{\"error\": {type, code, message, param?, turn_id?, \
            upstream_status?}}`."
    ),
    paths(
        super::threads::create,
        super::threads::list,
        super::threads::read,
        super::threads::update,
        super::threads::remove,
        super::threads::context,
        export_thread,
        super::messages::append,
        super::messages::list,
        super::messages::read,
        super::messages::reasoning_details,
        super::turns::create,
        super::turns::list,
        super::turns::read,
        super::health::healthz,
        super::health::readyz,
        metrics,
        openapi_json,
        super::docs::page,
        super::docs::initializer,
        super::docs::bundle,
        super::docs::stylesheet,
    ),
    components(
        schemas(
            schemas::ErrorEnvelope,
            schemas::UserMessage,
            schemas::SystemMessage,
            schemas::AssistantMessage,
            schemas::ToolMessage,
        ),
        responses(
            schemas::BadRequest,
            schemas::Unauthorized,
            schemas::NotFound,
            schemas::MethodNotAllowed,
            schemas::ThreadBusy,
            schemas::PayloadTooLarge,
            schemas::UnsupportedMediaType,
            schemas::IdempotencyKeyReused,
            schemas::RateLimited,
            schemas::InternalError,
            schemas::UpstreamError,
            schemas::Unavailable,
            schemas::UpstreamTimeout,
        ),
    ),
    modifiers(&CommonResponses),
    tags(
        (name = "threads", description = "Conversations and their defaults"),
        (name = "messages", description = "A thread's stored messages"),
        (name = "turns", description = "Calling the model on a thread, and the audit record"),
        (name = "operations", description = "Probes, metrics and this documentation"),
    )
)]
struct ApiDoc;

/// The document, as the derive builds it.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as served: rendered once, on first request.
static DOCUMENT_JSON: LazyLock<Result<String, String>> =
    LazyLock::new(|| document().to_json().map_err(|e| e.to_string()));

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this service",
        content_type = "application/json", body = Object)),
)]
async fn openapi_json() -> Response {
    match DOCUMENT_JSON.as_ref() {
        Ok(json) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json.as_str(),
        )
            .into_response(),
        Err(e) => ApiError::Internal(format!("OpenAPI document: {e}")).into_response(),
    }
}

// Routes whose handlers carry no `#[utoipa::path]` (`export.rs`, and `/metrics` from
// `telemetry`): described on these stand-ins, which are never routed. The route test below
// fails if either route goes away, or a new one comes without documentation.

/// Export a thread as NDJSON.
///
/// The thread, then its messages, then its turns with their audit records, one JSON object
/// a line. Raw stored values (reasoning bytes, upstream request and response) are carried as
/// JSON strings holding their exact bytes, in fields named after them with `_raw` appended
/// (`reasoning_details_raw`, ...). `threadkeeper import` restores such a file.
#[utoipa::path(
    get,
    path = "/v1/threads/{thread_id}/export",
    operation_id = "export_thread",
    tag = "threads",
    params(schemas::ThreadPath),
    responses(
        (status = 200, description = "One JSON object a line, the thread first",
            content_type = "application/x-ndjson", body = String),
        (status = 404, response = schemas::NotFound),
    ),
)]
#[allow(dead_code)] // a stand-in for documentation only
fn export_thread() {}

/// Prometheus metrics.
///
/// Requests and durations by route template, turns by status, turns in progress, upstream
/// call durations and attempts, tokens by kind and cost.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition format",
            content_type = "text/plain; version=0.0.4", body = String),
    ),
)]
#[allow(dead_code)] // a stand-in for documentation only
fn metrics() {}

/// The error responses every route shares, the bearer scheme, and the schemas that are
/// built rather than derived.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A service key (`tk_...`) from `threadkeeper keys create`. Needed on \
                         every /v1 route once any key has been created; until then the \
                         service runs open.",
                    ))
                    .build(),
            ),
        );
        schemas::finish(components);

        for (path, item) in openapi.paths.paths.iter_mut() {
            let v1 = path.starts_with("/v1/");
            for operation in operations(item) {
                let reads_body = operation.request_body.is_some();
                if let Some(body) = &mut operation.request_body {
                    drop_null_body(body);
                }
                if let Some(parameters) = &mut operation.parameters {
                    schemas::json_text_parameters(parameters);
                }
                let responses = &mut operation.responses.responses;
                let mut shared = |status: u16, name: &str| {
                    responses
                        .entry(status.to_string())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
                };
                // Any route: a stray query string is refused; a panic or bug is a 500.
                shared(400, "BadRequest");
                shared(500, "InternalError");
                if v1 {
                    shared(401, "Unauthorized");
                    shared(429, "RateLimited");
                    shared(503, "Unavailable");
                }
                if reads_body {
                    shared(413, "PayloadTooLarge");
                    shared(415, "UnsupportedMediaType");
                }
                if v1 {
                    // Open mode needs no key: the empty requirement says so.
                    operation.security = Some(vec![
                        SecurityRequirement::new("bearer", Vec::<String>::new()),
                        SecurityRequirement::default(),
                    ]);
                }
            }
        }
    }
}

/// An optional body is written `Option<T>` on the handler, which utoipa renders as "T or
/// null"; but an optional body here means an empty one (taken as `{}`), while a JSON `null`
/// body is refused. So the `null` branch goes and `required: false` stays.
fn drop_null_body(body: &mut RequestBody) {
    for content in body.content.values_mut() {
        let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else {
            continue;
        };
        let mut rest = one_of.items.iter().filter(|item| !is_null_type(item));
        if let (Some(only), None) = (rest.next(), rest.next()) {
            content.schema = Some(only.clone());
        }
    }
}

fn is_null_type(schema: &RefOr<Schema>) -> bool {
    matches!(schema, RefOr::T(Schema::Object(object))
        if object.schema_type == SchemaType::Type(Type::Null))
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    /// `(path, method)` of every route registered with `Router::route` anywhere under `src/`,
    /// read from the source so that a route added later without documentation fails here.
    fn served_routes() -> BTreeSet<(String, String)> {
        let mut files = Vec::new();
        collect_rust_files(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        // Spelled in two pieces so this file's own text is not taken for a route.
        let needle = concat!(".rou", "te(");
        let mut routes = BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}"));
            let mut rest = text.as_str();
            while let Some(at) = rest.find(needle) {
                rest = &rest[at + needle.len()..];
                let args = rest.trim_start();
                let Some(args) = args.strip_prefix('"') else {
                    panic!(
                        "{}: a route path that is not a string literal; this test cannot \
                         check that it is documented",
                        file.display()
                    );
                };
                let end = args
                    .find('"')
                    .unwrap_or_else(|| panic!("unterminated path"));
                let path = &args[..end];
                for method in route_methods(&args[end + 1..]) {
                    routes.insert((path.to_owned(), method));
                }
            }
        }
        routes
    }

    /// The method routers of one route call, `(path, get(a).post(b))`: the method names
    /// called at the call's own nesting level.
    fn route_methods(args: &str) -> Vec<String> {
        let mut depth = 0usize;
        let mut methods = Vec::new();
        let mut word = String::new();
        for c in args.chars() {
            match c {
                '(' => {
                    if depth == 0 && METHODS.contains(&word.as_str()) {
                        methods.push(word.clone());
                    }
                    depth += 1;
                    word.clear();
                }
                ')' if depth == 0 => break,
                ')' => depth -= 1,
                c if c.is_alphanumeric() || c == '_' => word.push(c),
                _ => word.clear(),
            }
        }
        methods
    }

    fn collect_rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{e}"));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_dir() {
                collect_rust_files(&path, out);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                out.push(path);
            }
        }
    }

    fn documented_routes() -> BTreeSet<(String, String)> {
        let doc = serde_json::to_value(document()).unwrap_or_else(|e| panic!("{e}"));
        let paths = doc["paths"]
            .as_object()
            .unwrap_or_else(|| panic!("no paths"));
        let mut routes = BTreeSet::new();
        for (path, item) in paths {
            for method in METHODS {
                if item.get(method).is_some() {
                    routes.insert((path.clone(), method.to_owned()));
                }
            }
        }
        routes
    }

    #[test]
    fn document_is_openapi_3_1() {
        let doc = serde_json::to_value(document()).unwrap_or_else(|e| panic!("{e}"));
        let version = doc["openapi"].as_str().unwrap_or_default();
        assert!(version.starts_with("3.1."), "openapi is {version:?}");
        let served = DOCUMENT_JSON.as_ref().unwrap_or_else(|e| panic!("{e}"));
        assert!(served.contains("\"openapi\":\"3.1."));
    }

    #[test]
    fn document_lists_every_route_the_router_serves() {
        let served = served_routes();
        assert!(
            served.contains(&("/v1/threads/{thread_id}/turns".into(), "post".into())),
            "the source scan found no routes: {served:?}"
        );
        let documented = documented_routes();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from the OpenAPI document: {undocumented:?}"
        );
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            unserved.is_empty(),
            "documented routes nobody serves: {unserved:?}"
        );
    }

    #[test]
    fn every_operation_documents_its_errors_with_the_error_envelope() {
        let doc = serde_json::to_value(document()).unwrap_or_else(|e| panic!("{e}"));
        let paths = doc["paths"]
            .as_object()
            .unwrap_or_else(|| panic!("no paths"));
        for (path, item) in paths {
            for method in METHODS {
                let Some(operation) = item.get(method) else {
                    continue;
                };
                let responses = &operation["responses"];
                for status in ["400", "500"] {
                    assert!(
                        responses.get(status).is_some(),
                        "{method} {path}: no {status}"
                    );
                }
                if path.starts_with("/v1/") {
                    for status in ["401", "429", "503"] {
                        assert!(
                            responses.get(status).is_some(),
                            "{method} {path}: no {status}"
                        );
                    }
                    assert!(operation.get("security").is_some(), "{method} {path}");
                }
            }
        }
        let turn = &paths["/v1/threads/{thread_id}/turns"]["post"]["responses"];
        for status in ["200", "404", "409", "413", "415", "422", "502", "504"] {
            assert!(turn.get(status).is_some(), "POST turns: no {status}");
        }
        assert!(turn["200"]["content"].get("text/event-stream").is_some());
        // An empty body is a turn without input; a JSON `null` body is refused.
        let body = &paths["/v1/threads/{thread_id}/turns"]["post"]["requestBody"];
        assert_ne!(body["required"], true);
        assert_eq!(
            body["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/TurnRequest"
        );
        let components = &doc["components"];
        for name in ["BadRequest", "NotFound", "ThreadBusy", "UpstreamError"] {
            assert_eq!(
                components["responses"][name]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorEnvelope",
                "{name}"
            );
        }
        assert!(components["schemas"].get("InputMessage").is_some());
    }
}
