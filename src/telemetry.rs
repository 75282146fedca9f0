//! Operational event feed: a bounded, in-process record of things an operator should
//! know about (pool evictions and drops, later upstream failures and limits).
//!
//! Stages emit typed `Signal`s with `try_send` on a bounded channel, so the data path
//! never waits and never builds JSON; a background task turns them into `Event`s and
//! keeps the newest `capacity` of them for the API. When the channel is full a signal
//! is dropped and counted in `lost`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

/// Signals waiting to be recorded; beyond this they are counted as lost.
const CHANNEL_CAPACITY: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    ConnectionPool,
}

/// What a stage reports. Typed, so the stage does no formatting.
#[derive(Debug, Clone)]
pub enum Signal {
    /// The global idle limit forced out the least recently used idle connection.
    PoolEvicted { destination: String, limit: usize },
    /// A connection came back to a destination already holding its limit of idle
    /// connections, and was closed.
    PoolDroppedFull { destination: String, limit: usize },
}

/// One recorded event, as the API serves it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: u64,
    #[serde(with = "unix_millis")]
    pub timestamp: SystemTime,
    pub severity: Severity,
    pub category: Category,
    pub message: String,
    pub details: serde_json::Value,
}

impl Event {
    fn from_signal(id: u64, signal: Signal) -> Self {
        let (severity, category, message, details) = match signal {
            Signal::PoolEvicted { destination, limit } => (
                Severity::Warning,
                Category::ConnectionPool,
                format!("evicted the least recently used idle connection (to {destination}): max_total_idle = {limit} reached"),
                json!({ "destination": destination, "limit": limit, "limit_key": "server.pool.max_total_idle" }),
            ),
            Signal::PoolDroppedFull { destination, limit } => (
                Severity::Warning,
                Category::ConnectionPool,
                format!("closed a returned connection to {destination}: max_idle_per_dest = {limit} reached"),
                json!({ "destination": destination, "limit": limit, "limit_key": "server.pool.max_idle_per_dest" }),
            ),
        };
        Self {
            id,
            timestamp: SystemTime::now(),
            severity,
            category,
            message,
            details,
        }
    }
}

mod unix_millis {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        s.serialize_u64(ms as u64)
    }
}

/// Handle for emitting and reading events; cheap to clone.
#[derive(Clone)]
pub struct Telemetry {
    tx: mpsc::Sender<Signal>,
    store: Arc<Store>,
}

struct Store {
    events: Mutex<VecDeque<Event>>,
    capacity: usize,
    lost: AtomicU64,
}

impl Telemetry {
    /// Starts the recording task; it ends when the last handle is dropped.
    pub fn start(capacity: usize) -> Self {
        let (tx, mut rx) = mpsc::channel(CHANNEL_CAPACITY);
        let store = Arc::new(Store {
            events: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity: capacity.max(1),
            lost: AtomicU64::new(0),
        });
        let sink = Arc::clone(&store);
        tokio::spawn(async move {
            let mut next_id = 1;
            while let Some(signal) = rx.recv().await {
                let event = Event::from_signal(next_id, signal);
                next_id += 1;
                let mut events = sink.events.lock().unwrap_or_else(PoisonError::into_inner);
                if events.len() == sink.capacity {
                    events.pop_front();
                }
                events.push_back(event);
            }
        });
        Self { tx, store }
    }

    /// Records `signal` without waiting; drops and counts it if the feed is backed up.
    pub fn emit(&self, signal: Signal) {
        if self.tx.try_send(signal).is_err() {
            self.store.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Up to `limit` events, newest first.
    pub fn recent(&self, limit: usize) -> Vec<Event> {
        let events = self
            .store
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        events.iter().rev().take(limit).cloned().collect()
    }

    /// Signals dropped because the channel was full.
    pub fn lost(&self) -> u64 {
        self.store.lost.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (bounded) until the newest recorded event has id `id`.
    async fn wait_for_id(t: &Telemetry, id: u64) -> Vec<Event> {
        for _ in 0..1000 {
            let events = t.recent(usize::MAX);
            if events.first().map(|e| e.id) == Some(id) {
                return events;
            }
            tokio::task::yield_now().await;
        }
        panic!("event {id} was not recorded");
    }

    #[tokio::test]
    async fn keeps_the_newest_events_up_to_capacity() {
        let t = Telemetry::start(3);
        for i in 0..5 {
            t.emit(Signal::PoolDroppedFull {
                destination: format!("d{i}"),
                limit: 4,
            });
        }
        let events = wait_for_id(&t, 5).await;
        let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
        assert_eq!(ids, [5, 4, 3]);
        let e = &events[0];
        assert_eq!(e.severity, Severity::Warning);
        assert_eq!(e.category, Category::ConnectionPool);
        assert_eq!(e.details["destination"], "d4");
        assert_eq!(e.details["limit"], 4);
        assert_eq!(t.lost(), 0);
    }
}
