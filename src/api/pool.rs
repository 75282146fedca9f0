//! `GET /api/pool/stats`: the pool's statistics, limits and derived figures.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiState;
use crate::connector::PoolStats;

#[derive(Serialize, ToSchema)]
pub struct PoolStatsResponse {
    enabled: bool,
    config: PoolLimits,
    /// reused / (reused + new); absent when disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    reuse_rate: Option<f64>,
    /// total_idle / max_total_idle; absent when disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    utilisation: Option<f64>,
    /// Null when disabled.
    stats: Option<PoolStats>,
}

/// The configured limits (`[server.pool]`).
#[derive(Serialize, ToSchema)]
pub struct PoolLimits {
    max_idle_per_dest: usize,
    max_total_idle: usize,
    idle_timeout_secs: u64,
    connect_timeout_ms: u64,
}

/// Upstream connection pool statistics, limits and derived figures
#[utoipa::path(get, path = "/api/pool/stats", responses(
    (status = 200, description = "Statistics, or enabled = false.", body = PoolStatsResponse),
))]
pub async fn stats(State(state): State<ApiState>) -> Json<PoolStatsResponse> {
    let pool = &state.inner.deps.pool;
    let c = pool.config();
    let config = PoolLimits {
        max_idle_per_dest: c.max_idle_per_dest,
        max_total_idle: c.max_total_idle,
        idle_timeout_secs: c.idle_timeout_secs,
        connect_timeout_ms: c.connect_timeout_ms,
    };
    let Some(stats) = pool.stats() else {
        return Json(PoolStatsResponse {
            enabled: false,
            config,
            reuse_rate: None,
            utilisation: None,
            stats: None,
        });
    };
    let utilisation = stats.total_idle as f64 / c.max_total_idle.max(1) as f64;
    Json(PoolStatsResponse {
        enabled: true,
        config,
        reuse_rate: Some(stats.reuse_rate()),
        utilisation: Some(utilisation),
        stats: Some(stats),
    })
}
