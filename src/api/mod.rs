//! Management HTTP API (axum): health, pool statistics, the telemetry feed, metrics,
//! sessions, the OpenAPI document, and the dashboard at `/`.
//!
//! Handlers read snapshots and atomics; none takes a lock that the relay or the pool
//! holds across work, so the API cannot slow the data path. With a token configured,
//! every route but `/health` and the dashboard (`/`, `/assets/`) needs `Authorization: Bearer <token>`.
//! Without one, every route answers only requests whose `Host` is loopback (`host.rs`).
//! No response carries a CORS permission (`Access-Control-Allow-*`): a page from
//! another origin cannot read any answer.

mod acl;
mod dashboard;
mod deps;
mod error;
mod health;
mod host;
mod openapi;
mod pool;
pub(crate) mod query;
mod serve;
mod sessions;
mod telemetry;

/// The query parameters of every operation, one list per operation (the fuzz
/// target of the query parser takes their union).
pub(crate) const QUERY_PARAMS: &[&[&str]] = &[
    sessions::ACTIVE_PARAMS,
    sessions::HISTORY_PARAMS,
    sessions::STATS_PARAMS,
    telemetry::EVENTS_PARAMS,
    telemetry::STREAM_PARAMS,
];

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use deps::{ApiDeps, MetricsView, PoolView, SessionsView, TelemetryView, Terminate};
pub use error::ApiError;

/// What the handlers read. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<StateInner>,
}

struct StateInner {
    started: Instant,
    deps: ApiDeps,
    /// Cancelled at shutdown; ends open event streams.
    shutdown: CancellationToken,
}

/// Every route, with the method it answers. The OpenAPI document must list exactly
/// these (a test in `openapi.rs` checks it).
fn routes() -> Vec<(&'static str, &'static str, MethodRouter<ApiState>)> {
    vec![
        ("GET", "/", get(dashboard::index)),
        ("GET", "/assets/{file}", get(dashboard::asset)),
        ("GET", "/health", get(health::get)),
        ("GET", "/metrics", get(metrics)),
        ("GET", "/api/pool/stats", get(pool::stats)),
        ("GET", "/api/telemetry/events", get(telemetry::events)),
        ("GET", "/api/telemetry/stream", get(telemetry::stream)),
        ("GET", "/api/sessions/active", get(sessions::active)),
        ("GET", "/api/sessions/history", get(sessions::history)),
        ("GET", "/api/sessions/stats", get(sessions::stats)),
        ("GET", "/api/sessions/{id}", get(sessions::one)),
        (
            "POST",
            "/api/sessions/{id}/terminate",
            post(sessions::terminate),
        ),
        ("GET", "/api/acl", get(acl::rules)),
        ("POST", "/api/acl/test", post(acl::test)),
        ("POST", "/api/acl/reload", post(acl::reload)),
        ("GET", "/api/openapi.json", get(openapi::get)),
    ]
}

/// Paths reachable without the token: health, and the dashboard's static files.
fn is_public(path: &str) -> bool {
    path == "/health" || path == "/" || path.starts_with("/assets/")
}

fn router(state: ApiState) -> Router {
    let mut router = Router::new();
    for (_, path, handler) in routes() {
        router = router.route(path, handler);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Serves the API on `listener` (over TLS when `tls` is given) until `shutdown` is
/// cancelled.
pub async fn serve(
    listener: TcpListener,
    deps: ApiDeps,
    shutdown: CancellationToken,
    tls: Option<Arc<crate::tls::Tls>>,
) -> std::io::Result<()> {
    let state = ApiState {
        inner: Arc::new(StateInner {
            started: Instant::now(),
            deps,
            shutdown: shutdown.clone(),
        }),
    };
    serve::run(listener, router(state), shutdown, tls).await
}

/// Without a token: the Host check, on every route. With one: the token, on every
/// route but the public ones (the token is the protection; Host is not checked).
async fn guard(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.inner.deps.token else {
        return match host::check(request.headers(), request.uri()) {
            Ok(()) => next.run(request).await,
            Err(refused) => refused.into_response(),
        };
    };
    if is_public(request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let valid =
        presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(token.expose().as_bytes())));
    if valid {
        next.run(request).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// Prometheus metrics (text exposition format); names in docs/metrics.md
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, description = "Metrics.", body = String,
        content_type = "application/openmetrics-text"),
))]
async fn metrics(State(state): State<ApiState>) -> Response {
    let body = state.inner.deps.metrics.encode();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

/// The credentials of an `Authorization: Bearer <token>` header; the scheme name is
/// case-insensitive (RFC 7235).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

#[cfg(test)]
mod tests {
    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for header in ["Bearer t0k", "bearer t0k", "BEARER  t0k"] {
            assert_eq!(super::bearer_token(header), Some("t0k"), "{header}");
        }
        for header in ["Basic t0k", "Bearert0k", "t0k"] {
            assert_eq!(super::bearer_token(header), None, "{header}");
        }
    }
}
