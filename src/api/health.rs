//! `GET /health`: liveness, version and uptime. Needs no token.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::ApiState;

pub async fn get(State(state): State<ApiState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.inner.started.elapsed().as_secs_f64(),
        // Lets a client (the dashboard) ask for a token before it calls anything.
        "auth_required": state.inner.deps.token.is_some(),
    }))
}
