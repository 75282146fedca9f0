//! `GET /api/pool/stats`: the pool's statistics, limits and derived figures.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::ApiState;

pub async fn stats(State(state): State<ApiState>) -> Json<Value> {
    let deps = &state.inner.deps;
    let c = &deps.pool_config;
    let config = json!({
        "max_idle_per_dest": c.max_idle_per_dest,
        "max_total_idle": c.max_total_idle,
        "idle_timeout_secs": c.idle_timeout_secs,
        "connect_timeout_ms": c.connect_timeout_ms,
    });
    let Some(pool) = &deps.pool else {
        return Json(json!({ "enabled": false, "config": config, "stats": null }));
    };
    let stats = pool.get_stats();
    let utilisation = stats.total_idle as f64 / c.max_total_idle.max(1) as f64;
    Json(json!({
        "enabled": true,
        "config": config,
        "reuse_rate": stats.reuse_rate(),
        "utilisation": utilisation,
        "stats": stats,
    }))
}
