//! Pool statistics: global atomic counters and the snapshot the API serves.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

use super::store::DestCounters;

/// Global counters, updated with relaxed atomics on the data path.
#[derive(Debug, Default)]
pub(super) struct Totals {
    pub idle: AtomicUsize,
    pub dialing: AtomicUsize,
    pub in_use: AtomicUsize,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub new_connections: AtomicU64,
    pub refreshed: AtomicU64,
    pub refill_failed: AtomicU64,
    pub returned: AtomicU64,
    pub expired: AtomicU64,
    pub evicted: AtomicU64,
    pub dropped_full: AtomicU64,
    pub stale: AtomicU64,
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A point-in-time view of the pool.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PoolStats {
    /// Idle connections ready for a client.
    pub total_idle: usize,
    /// Destinations the pool currently tracks (recent demand, idle or in-use connections).
    pub destinations: usize,
    /// Connections checked out and serving a client now.
    pub in_use: usize,
    /// Background refill dials in flight.
    pub dialing: usize,
    /// Checkouts served by a pooled connection (equal to `hits`; the name of the
    /// original pool's statistics API).
    pub reused_connections: u64,
    /// Connections a client had to wait for: dialled on a miss.
    pub new_connections: u64,
    pub hits: u64,
    /// Checkouts that found no usable idle connection.
    pub misses: u64,
    /// Idle connections closed because they reached `idle_timeout_secs`.
    pub expired: u64,
    /// Idle connections closed to stay within `max_total_idle` (least recently used).
    pub evicted: u64,
    /// Connections closed on arrival because their destination held
    /// `max_idle_per_dest` idle connections.
    pub dropped_full: u64,
    /// Idle connections found closed by the peer (FIN or RST) at checkout or sweep.
    pub stale_on_checkout: u64,
    /// Background refill dials that succeeded and joined the pool.
    pub refreshed: u64,
    pub refill_failed: u64,
    /// Connections given back after a session that moved no byte either way.
    pub returned: u64,
    pub per_destination: Vec<DestinationStats>,
}

impl PoolStats {
    /// `reused / (reused + new)`, or 0 with no traffic.
    pub fn reuse_rate(&self) -> f64 {
        let total = self.reused_connections + self.new_connections;
        if total == 0 {
            0.0
        } else {
            self.reused_connections as f64 / total as f64
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DestinationStats {
    pub destination: String,
    pub idle: usize,
    pub in_use: usize,
    pub dialing: usize,
    /// Connections dialled for this destination, by clients and by refills.
    pub created: u64,
    pub hits: u64,
    pub misses: u64,
    pub dropped_full: u64,
    pub evicted: u64,
    pub expired: u64,
    pub stale_on_checkout: u64,
    pub refreshed: u64,
    pub returned: u64,
    /// Seconds since the last checkout request for this destination.
    pub last_demand_secs_ago: Option<f64>,
}

impl DestinationStats {
    pub(super) fn fill_counters(&mut self, c: &DestCounters) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.created = get(&c.created);
        self.hits = get(&c.hits);
        self.misses = get(&c.misses);
        self.dropped_full = get(&c.dropped_full);
        self.evicted = get(&c.evicted);
        self.expired = get(&c.expired);
        self.stale_on_checkout = get(&c.stale);
        self.refreshed = get(&c.refreshed);
        self.returned = get(&c.returned);
        self.in_use = c.in_use.load(Ordering::Relaxed);
    }
}

impl Totals {
    pub(super) fn snapshot(&self) -> PoolStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let hits = get(&self.hits);
        PoolStats {
            total_idle: self.idle.load(Ordering::Relaxed),
            destinations: 0,
            in_use: self.in_use.load(Ordering::Relaxed),
            dialing: self.dialing.load(Ordering::Relaxed),
            reused_connections: hits,
            new_connections: get(&self.new_connections),
            hits,
            misses: get(&self.misses),
            expired: get(&self.expired),
            evicted: get(&self.evicted),
            dropped_full: get(&self.dropped_full),
            stale_on_checkout: get(&self.stale),
            refreshed: get(&self.refreshed),
            refill_failed: get(&self.refill_failed),
            returned: get(&self.returned),
            per_destination: Vec::new(),
        }
    }
}
