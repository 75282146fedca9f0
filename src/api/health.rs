//! `GET /health`: liveness, version and uptime. Needs no token.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ForbiddenHost;
use super::ApiState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    status: HealthStatus,
    version: &'static str,
    uptime_secs: f64,
    /// Whether other routes need a bearer token. Lets a client (the dashboard) ask
    /// for a token before it calls anything.
    auth_required: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum HealthStatus {
    Ok,
}

/// Liveness, version and uptime
#[utoipa::path(get, path = "/health", responses(
    (status = 200, description = "The server is up.", body = Health),
    (status = 403, response = ForbiddenHost),
))]
pub async fn get(State(state): State<ApiState>) -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: state.inner.started.elapsed().as_secs_f64(),
        auth_required: state.inner.deps.token.is_some(),
    })
}
