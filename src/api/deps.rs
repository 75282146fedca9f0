//! What the API is handed: read-only views of the pool, sessions, telemetry and
//! metrics, and one capability to act (terminate a session).
//!
//! Each view wraps its part in a private field and offers only reads, so no handler
//! can check a connection out of the pool, open or close a session, emit an event or
//! bump a counter. Reads return values (snapshots), not handles into live state.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::broadcast;
use uuid::Uuid;

use super::error::ApiError;
use crate::access::AclControl;
use crate::config::{PoolSection, Secret};
use crate::connector::{ConnectionPool, PoolStats};
use crate::metrics::Metrics;
use crate::session::{
    ActiveSession, HistoryPage, HistoryQuery, SessionRecord, SessionStats, SessionStore, Sessions,
    StoreError,
};
use crate::telemetry::{Event, EventFilter, Telemetry};

pub struct ApiDeps {
    pub pool: PoolView,
    pub telemetry: TelemetryView,
    pub metrics: MetricsView,
    /// None when session tracking is off.
    pub sessions: Option<SessionsView>,
    pub terminate: Option<Terminate>,
    /// The access rules: read, test a request, reload (the second capability to act).
    pub acl: AclControl,
    pub token: Option<Secret>,
}

/// The pool's statistics and configured limits.
pub struct PoolView {
    pool: Option<ConnectionPool>,
    config: PoolSection,
}

impl PoolView {
    pub fn new(pool: Option<ConnectionPool>, config: PoolSection) -> Self {
        Self { pool, config }
    }

    pub fn config(&self) -> &PoolSection {
        &self.config
    }

    /// None when the pool is disabled.
    pub fn stats(&self) -> Option<PoolStats> {
        self.pool.as_ref().map(ConnectionPool::get_stats)
    }
}

/// The recorded events, and a live feed of new ones.
pub struct TelemetryView {
    telemetry: Telemetry,
    max_events: usize,
}

impl TelemetryView {
    pub fn new(telemetry: Telemetry, max_events: usize) -> Self {
        Self {
            telemetry,
            max_events,
        }
    }

    /// The most events the feed keeps (`telemetry.max_events`).
    pub fn max_events(&self) -> usize {
        self.max_events
    }

    pub fn events(&self, filter: &EventFilter, limit: usize) -> Vec<Event> {
        self.telemetry.events(filter, limit)
    }

    pub fn lost(&self) -> u64 {
        self.telemetry.lost()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.telemetry.subscribe()
    }
}

/// The Prometheus exposition of every metric.
pub struct MetricsView(Arc<Metrics>);

impl MetricsView {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self(metrics)
    }

    pub fn encode(&self) -> String {
        self.0.encode()
    }
}

/// Active sessions (with live counts) and the history store's queries.
pub struct SessionsView(Arc<Sessions>);

impl SessionsView {
    pub fn new(sessions: Arc<Sessions>) -> Self {
        Self(sessions)
    }

    /// How many sessions are active, and `take` of them (oldest first) after
    /// skipping `skip`. Live counts are read for the page only: a busy server has
    /// thousands of sessions.
    pub fn active(&self, skip: usize, take: usize) -> (usize, Vec<SessionRecord>) {
        let all = self.0.registry().snapshot();
        let page = all.iter().skip(skip).take(take).map(|s| live(s)).collect();
        (all.len(), page)
    }

    pub fn active_count(&self) -> usize {
        self.0.registry().len()
    }

    /// A session by id: live from the registry, or else from the store.
    pub async fn find(&self, id: Uuid) -> Result<Option<SessionRecord>, ApiError> {
        if let Some(s) = self.0.registry().get(&id) {
            return Ok(Some(live(&s)));
        }
        self.query(move |s| s.get(id)).await
    }

    pub async fn history(&self, q: HistoryQuery) -> Result<HistoryPage, ApiError> {
        self.query(move |s| s.history(&q)).await
    }

    pub async fn stats(&self, since: SystemTime, top: usize) -> Result<SessionStats, ApiError> {
        self.query(move |s| s.stats(since, top)).await
    }

    /// Runs a store query off the async workers. Only the reads reach here: the
    /// store's writes (`apply`, `cleanup`) are not offered.
    async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn SessionStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.0.store();
        let result = tokio::task::spawn_blocking(move || f(store.as_ref())).await;
        Ok(result.map_err(|_| StoreError::Interrupted)??)
    }
}

/// An active session as the API shows it: its record with the live counts.
fn live(s: &ActiveSession) -> SessionRecord {
    let elapsed = SystemTime::now()
        .duration_since(s.record.started_at)
        .unwrap_or_default();
    SessionRecord {
        bytes_client_to_upstream: s.counters.client_to_upstream.load(Relaxed),
        bytes_upstream_to_client: s.counters.upstream_to_client.load(Relaxed),
        datagrams_client_to_upstream: s.counters.datagrams_client_to_upstream.load(Relaxed),
        datagrams_upstream_to_client: s.counters.datagrams_upstream_to_client.load(Relaxed),
        duration_ms: Some(elapsed.as_millis() as u64),
        ..s.record.clone()
    }
}

/// The one thing the API may do to a session: end it.
pub struct Terminate(Arc<Sessions>);

impl Terminate {
    pub fn new(sessions: Arc<Sessions>) -> Self {
        Self(sessions)
    }

    /// Closes both sockets of the active session `id`; false when it is not active.
    /// The relay sees the cancellation and records the session as terminated.
    pub fn session(&self, id: Uuid) -> bool {
        match self.0.registry().get(&id) {
            Some(s) => {
                s.terminate.cancel();
                true
            }
            None => false,
        }
    }
}
