//! Background expiry of idle connections, and forgetting destinations nobody has
//! asked for within `idle_timeout`.
//!
//! The reaper never takes a connection out of its shard except to close it, and makes
//! no system call per connection: checkout validates every connection it hands out
//! (see `liveness`), so a connection the peer closed is never given to a client;
//! it waits, closed, until a checkout reaches it or it expires (docs/connection-pool.md).

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connection_pool::Inner;
use super::store::IdleConn;

/// Shortest sleep between sweeps, so a burst of expiries cannot make the reaper spin.
const MIN_SLEEP: Duration = Duration::from_millis(10);

/// Sweeps until the pool is dropped or cancelled. Wakes when the oldest idle
/// connection expires, and at least every quarter of `idle_timeout` to forget
/// destinations without demand.
pub(super) async fn run(pool: Weak<Inner>, cancel: CancellationToken) {
    let mut next_forget = Instant::now();
    loop {
        let sleep = match pool.upgrade() {
            Some(inner) => {
                let now = Instant::now();
                inner.expire(now);
                if now >= next_forget {
                    inner.forget_unused(now);
                    next_forget = now + inner.forget_period();
                }
                inner.until_next_sweep(now, next_forget)
            }
            None => return,
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = cancel.cancelled() => return,
        }
    }
}

impl Inner {
    /// One full pass (expiry and forgetting), as the reaper makes at its periodic
    /// wake-up; returns how long the reaper would sleep after it.
    pub(super) fn sweep(&self, now: Instant) -> Duration {
        self.expire(now);
        self.forget_unused(now);
        self.until_next_sweep(now, now + self.forget_period())
    }

    /// Closes the idle connections that reached `idle_timeout`. Locks only the shards
    /// that hold one (known from their published ages) and touches only the
    /// destinations that hold one: O(k log n) for k expired connections.
    pub(super) fn expire(&self, now: Instant) {
        let Some(deadline) = now.checked_sub(self.config.idle_timeout) else {
            return;
        };
        let mut expired: Vec<IdleConn> = Vec::new();
        for mut shard in self.shards.expiring(deadline) {
            shard.drain_expired(deadline, &mut expired);
            // Under the lock: an eviction meanwhile must not count these as idle.
            self.totals.idle.fetch_sub(expired.len(), Ordering::Relaxed);
            drop(shard);
            // Closed here, with the shard unlocked.
            expired.clear();
        }
    }

    /// Forgets destinations with nothing idle, nothing in use, no dial in flight and
    /// no demand within `idle_timeout`, keeping their counts in the totals. A walk
    /// over the destinations without system calls, once per `forget_period`.
    pub(super) fn forget_unused(&self, now: Instant) {
        let timeout = self.config.idle_timeout;
        for mut shard in self.shards.each() {
            shard.retain(|_, entry| {
                let forgotten = entry.last_demand.is_none_or(|t| now - t >= timeout);
                if entry.is_unused() && forgotten {
                    self.totals.retire(entry.counts());
                    return false;
                }
                true
            });
        }
    }

    fn forget_period(&self) -> Duration {
        (self.config.idle_timeout / 4).max(MIN_SLEEP)
    }

    /// Until the oldest idle connection expires or forgetting is due, whichever is
    /// first, but at least `MIN_SLEEP`.
    fn until_next_sweep(&self, now: Instant, next_forget: Instant) -> Duration {
        let wake = self.shards.oldest().map_or(next_forget, |t| {
            next_forget.min(t + self.config.idle_timeout)
        });
        wake.saturating_duration_since(now)
            .clamp(MIN_SLEEP, self.forget_period())
    }
}
