//! `GET /docs`: an interactive page over `/openapi.json` (Swagger UI), served from the binary.
//!
//! Swagger UI is vendored in `assets/swagger-ui/` (swagger-ui-dist from the npm registry; its
//! version and licence are there) and compiled in, so the page works with no network access.
//! Asset paths and the document URL are relative to `/docs`, so the page also works behind a
//! proxy that mounts the service under a path prefix.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>threadkeeper API</title>
    <link rel="stylesheet" href="docs/swagger-ui.css">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="docs/swagger-ui-bundle.js"></script>
    <script src="docs/swagger-initializer.js"></script>
  </body>
</html>
"#;

/// Kept out of the page so the page needs no inline script (see `CSP`). `validatorUrl: null`
/// stops Swagger UI from sending the document to its public validator.
const INITIALIZER: &str = r##"window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "BaseLayout",
  });
};
"##;

const BUNDLE: &str = include_str!("../../assets/swagger-ui/swagger-ui-bundle.js");
const STYLESHEET: &str = include_str!("../../assets/swagger-ui/swagger-ui.css");

/// Only this service's own scripts, styles and API; Swagger UI sets inline styles and uses
/// `data:` images for its icons.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'none'";

/// The assets change only with the binary; an hour of caching spares reloads of ~2 MB.
const ASSET_CACHE: &str = "public, max-age=3600";

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/docs", get(page))
        .route("/docs/swagger-initializer.js", get(initializer))
        .route("/docs/swagger-ui-bundle.js", get(bundle))
        .route("/docs/swagger-ui.css", get(stylesheet))
}

/// The interactive API documentation (Swagger UI).
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "docs",
    tag = "operations",
    responses((status = 200, description = "An HTML page over /openapi.json",
        content_type = "text/html; charset=utf-8", body = String)),
)]
pub(super) async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        PAGE,
    )
        .into_response()
}

/// The docs page's start-up script.
#[utoipa::path(
    get,
    path = "/docs/swagger-initializer.js",
    operation_id = "docs_initializer",
    tag = "operations",
    responses((status = 200, description = "JavaScript",
        content_type = "text/javascript; charset=utf-8", body = String)),
)]
pub(super) async fn initializer() -> Response {
    asset("text/javascript; charset=utf-8", INITIALIZER)
}

/// Swagger UI's script bundle.
#[utoipa::path(
    get,
    path = "/docs/swagger-ui-bundle.js",
    operation_id = "docs_bundle",
    tag = "operations",
    responses((status = 200, description = "JavaScript",
        content_type = "text/javascript; charset=utf-8", body = String)),
)]
pub(super) async fn bundle() -> Response {
    asset("text/javascript; charset=utf-8", BUNDLE)
}

/// Swagger UI's stylesheet.
#[utoipa::path(
    get,
    path = "/docs/swagger-ui.css",
    operation_id = "docs_stylesheet",
    tag = "operations",
    responses((status = 200, description = "CSS",
        content_type = "text/css; charset=utf-8", body = String)),
)]
pub(super) async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static(ASSET_CACHE)),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn get_path(path: &str) -> (StatusCode, String, Vec<u8>) {
        let response = router::<()>()
            .oneshot(
                Request::get(path)
                    .body(Body::empty())
                    .unwrap_or_else(|e| panic!("{e}")),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        (status, content_type, body.to_vec())
    }

    #[tokio::test]
    async fn page_loads_only_assets_the_service_serves() {
        let (status, content_type, body) = get_path("/docs").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("text/html"));
        let page = String::from_utf8(body).unwrap_or_else(|e| panic!("{e}"));
        assert!(!page.contains("http://") && !page.contains("https://"));
        for asset in [
            "docs/swagger-ui.css",
            "docs/swagger-ui-bundle.js",
            "docs/swagger-initializer.js",
        ] {
            assert!(page.contains(asset), "{asset}");
            let (status, _, body) = get_path(&format!("/{asset}")).await;
            assert_eq!(status, StatusCode::OK, "{asset}");
            assert!(!body.is_empty(), "{asset}");
        }
        let (_, _, script) = get_path("/docs/swagger-initializer.js").await;
        let script = String::from_utf8(script).unwrap_or_else(|e| panic!("{e}"));
        assert!(script.contains("\"openapi.json\""));
        assert!(script.contains("validatorUrl: null"));
    }
}
