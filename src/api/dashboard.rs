//! The web dashboard: static files compiled into the binary, served at `/` and
//! `/assets/{file}` without a token (they hold no data; the page asks for the token
//! when the API needs one). A strict Content-Security-Policy allows scripts and
//! styles from this origin only, so even a value that slipped into the page as
//! HTML could not run.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorBody};

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// (name, content type, contents)
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
    (
        "uplot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/uplot.iife.min.js"),
    ),
    (
        "uplot.min.css",
        "text/css; charset=utf-8",
        include_str!("assets/uplot.min.css"),
    ),
    (
        "LICENSE-uPlot",
        "text/plain; charset=utf-8",
        include_str!("assets/LICENSE-uPlot"),
    ),
];

fn respond(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The names of the files under `/assets/`.
pub fn asset_names() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|(name, _, _)| *name)
}

/// The web dashboard (needs no token; the page asks for one when the API does)
#[utoipa::path(get, path = "/", responses(
    (status = 200, description = "The dashboard page.", body = String, content_type = "text/html"),
))]
pub async fn index() -> Response {
    respond(
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    )
}

/// The dashboard's static files (scripts, styles, the charting library and its
/// license)
#[utoipa::path(get, path = "/assets/{file}",
    params(("file" = String, Path, description = "One of the dashboard's files.")),
    responses(
        (status = 200, description = "The file.", content(
            (String = "text/javascript"), (String = "text/css"), (String = "text/plain"))),
        (status = 404, description = "No such file.", body = ErrorBody),
    ))]
pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => Ok(respond(content_type, body)),
        None => Err(ApiError::NotFound {
            method: "GET".into(),
            path: format!("/assets/{name}"),
        }),
    }
}
