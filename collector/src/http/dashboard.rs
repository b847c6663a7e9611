//! The dashboard: one page and its script and style, embedded in the binary (no build step, nothing fetched
//! from elsewhere). `GET /` from a browser (which asks for HTML) is the page; any other `GET /` is the
//! Elasticsearch handshake its clients expect. The page itself holds no data: every number comes from the
//! read API with the key the user gives.

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/ui/app.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // A new binary may bring a new page: revalidated on each load, cheap as it is.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /` asking for HTML gets the page, before any authentication (the page asks for a key itself).
pub async fn page_for_browsers(req: Request, next: Next) -> Response {
    let wants_html = req.method() == Method::GET
        && req.uri().path() == "/"
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
    if !wants_html {
        return next.run(req).await;
    }
    let mut r = asset(PAGE, "text/html; charset=utf-8");
    let h = r.headers_mut();
    // Everything it loads is its own; nothing may frame it.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}
