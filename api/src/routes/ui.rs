//! The web UI: `GET /` and its assets under `/ui/`, built into the binary (`api/ui/`, plain
//! JavaScript modules and CSS: no build step, nothing fetched at run time). It is a client of
//! the public APIs, served where reads are. With `--auth.enabled` the page itself needs a
//! token with the `read` scope, so the browser asks for the tenant and token once (HTTP Basic)
//! and sends them with the UI's every call.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, StatusCode, header};

use crate::auth::Scope;
use crate::request::RequestRules;

/// The assets, by the name they are served under.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    (
        "flamegraph.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/flamegraph.js"),
    ),
    (
        "timeline.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/timeline.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/style.css"),
    ),
];
const INDEX: &str = include_str!("../../ui/index.html");

pub fn routes(rules: RequestRules) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ui/{asset}", get(asset))
        .with_state(Arc::new(rules))
}

fn page(
    rules: &RequestRules,
    headers: &HeaderMap,
    content_type: &str,
    body: &'static str,
) -> Response {
    if let Err(e) = rules.authenticate(headers, Scope::Read) {
        return e.into_response();
    }
    (
        [
            (header::CONTENT_TYPE, content_type),
            // A new binary may bring new assets: browsers check before reusing them.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn index(State(rules): State<Arc<RequestRules>>, headers: HeaderMap) -> Response {
    page(&rules, &headers, "text/html; charset=utf-8", INDEX)
}

async fn asset(
    State(rules): State<Arc<RequestRules>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => page(&rules, &headers, content_type, body),
        None => (StatusCode::NOT_FOUND, format!("no UI asset {name:?}\n")).into_response(),
    }
}
