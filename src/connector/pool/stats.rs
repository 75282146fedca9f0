//! Pool statistics: per-destination atomic counters, the two global gauges the
//! limits need, and the snapshot the API serves.
//!
//! Each event is counted once, on its destination; global figures are sums taken
//! when a snapshot is asked for. That keeps the hit path to one counter update and
//! keeps threads working on different destinations off each other's cache lines.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

/// Keeps a value on its own cache line, so two cores updating neighbouring counters
/// do not invalidate each other's caches.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(super) struct Padded<T>(pub T);

impl<T> Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Counts of one destination that change only under its shard lock: plain integers,
/// no atomic traffic.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Tally {
    /// Idle connections taken for a checkout (before validation).
    pub popped: u64,
    pub misses: u64,
    pub returned: u64,
    pub refreshed: u64,
    pub refill_failed: u64,
    /// Closed by the reaper at `idle_timeout`.
    pub expired: u64,
    pub evicted: u64,
    pub dropped_full: u64,
}

/// Counts of one destination that change outside the shard lock. A lease holds
/// this (per destination, not the pool), so checkouts on different destinations
/// never write to a shared cache line.
#[derive(Debug, Default)]
pub(super) struct DestShared {
    pub new_connections: AtomicU64,
    /// Popped at checkout, then found expired or closed by the peer.
    pub discarded_expired: AtomicU64,
    pub discarded_stale: AtomicU64,
    /// Leases ended (connection closed or given back).
    pub released: AtomicU64,
}

/// All counts of one destination, as plain numbers for sums and snapshots.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    created: u64,
    new_connections: u64,
    refreshed: u64,
    refill_failed: u64,
    hits: u64,
    misses: u64,
    returned: u64,
    expired: u64,
    stale: u64,
    evicted: u64,
    dropped_full: u64,
    pub in_use: u64,
}

impl Counts {
    /// Combines a tally read under the shard lock with the shared atomics. Derived
    /// figures saturate: a checkout between the two reads can make them lag by one.
    pub fn of(t: &Tally, s: &DestShared) -> Self {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (new, exp, stale) = (
            get(&s.new_connections),
            get(&s.discarded_expired),
            get(&s.discarded_stale),
        );
        let hits = t.popped.saturating_sub(exp + stale);
        Self {
            created: new + t.refreshed,
            new_connections: new,
            refreshed: t.refreshed,
            refill_failed: t.refill_failed,
            hits,
            misses: t.misses,
            returned: t.returned,
            expired: t.expired + exp,
            stale,
            evicted: t.evicted,
            dropped_full: t.dropped_full,
            in_use: (hits + new).saturating_sub(get(&s.released)),
        }
    }

    fn add(&mut self, o: &Self) {
        self.created += o.created;
        self.new_connections += o.new_connections;
        self.refreshed += o.refreshed;
        self.refill_failed += o.refill_failed;
        self.hits += o.hits;
        self.misses += o.misses;
        self.returned += o.returned;
        self.expired += o.expired;
        self.stale += o.stale;
        self.evicted += o.evicted;
        self.dropped_full += o.dropped_full;
        self.in_use += o.in_use;
    }
}

/// Global state of the pool that is not per destination.
#[derive(Debug, Default)]
pub(super) struct Totals {
    /// Idle connections in all shards; checked against `max_total_idle`.
    pub idle: Padded<AtomicUsize>,
    /// Refill dials in flight; they count against `max_total_idle` too.
    pub dialing: Padded<AtomicUsize>,
    /// Counts of destinations the reaper forgot, so that totals never go down.
    retired: Mutex<Counts>,
}

impl Totals {
    pub fn retire(&self, counts: Counts) {
        self.retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(&counts);
    }

    fn retired(&self) -> Counts {
        *self.retired.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A point-in-time view of the pool.
#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct PoolStats {
    /// Idle connections ready for a client.
    pub total_idle: usize,
    /// Destinations the pool currently tracks (recent demand, idle or in-use connections).
    pub destinations: usize,
    /// Connections checked out and serving a client now.
    pub in_use: usize,
    /// Background refill dials in flight.
    pub dialing: usize,
    /// Checkouts served by a pooled connection: equal to `hits`, under a second name
    /// that API clients read.
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
    /// Idle connections found closed by the peer (FIN or RST) at checkout.
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

    /// Sums the per-destination rows (and what was retired) into the totals.
    pub(super) fn from_rows(rows: Vec<(DestinationStats, Counts)>, totals: &Totals) -> Self {
        let mut sum = totals.retired();
        for (_, c) in &rows {
            sum.add(c);
        }
        let mut per_destination: Vec<_> = rows.into_iter().map(|(d, _)| d).collect();
        per_destination.sort_by(|a, b| a.destination.cmp(&b.destination));
        Self {
            total_idle: totals.idle.load(Ordering::Relaxed),
            destinations: per_destination.len(),
            in_use: sum.in_use as usize,
            dialing: totals.dialing.load(Ordering::Relaxed),
            reused_connections: sum.hits,
            new_connections: sum.new_connections,
            hits: sum.hits,
            misses: sum.misses,
            expired: sum.expired,
            evicted: sum.evicted,
            dropped_full: sum.dropped_full,
            stale_on_checkout: sum.stale,
            refreshed: sum.refreshed,
            refill_failed: sum.refill_failed,
            returned: sum.returned,
            per_destination,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
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
    pub(super) fn new(destination: String, idle: usize, dialing: usize, c: &Counts) -> Self {
        Self {
            destination,
            idle,
            dialing,
            in_use: c.in_use as usize,
            created: c.created,
            hits: c.hits,
            misses: c.misses,
            dropped_full: c.dropped_full,
            evicted: c.evicted,
            expired: c.expired,
            stale_on_checkout: c.stale,
            refreshed: c.refreshed,
            returned: c.returned,
            last_demand_secs_ago: None,
        }
    }
}
