//! Background sweep of idle connections: closes expired and peer-closed ones and
//! forgets destinations nobody has asked for within `idle_timeout`.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connection_pool::Inner;
use super::liveness;
use super::store::{lock, IdleConn, Shard, Shards};
use crate::protocol::TargetAddr;

/// Shortest sleep between sweeps, so a burst of expiries cannot make the reaper spin.
const MIN_SLEEP: Duration = Duration::from_millis(10);

/// Sweeps until the pool is dropped or cancelled. Sleeps until the next idle
/// connection expires, but at most a quarter of `idle_timeout`, so connections the
/// peer closed are found within that time.
pub(super) async fn run(pool: Weak<Inner>, cancel: CancellationToken) {
    loop {
        let sleep = match pool.upgrade() {
            Some(inner) => inner.sweep(Instant::now()),
            None => return,
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = cancel.cancelled() => return,
        }
    }
}

impl Inner {
    /// One pass over every shard; returns how long to sleep before the next.
    pub(super) fn sweep(&self, now: Instant) -> Duration {
        let timeout = self.config.idle_timeout;
        let mut next_expiry: Option<Instant> = None;
        for m in self.shards.iter() {
            let mut expired: Vec<IdleConn> = Vec::new();
            let mut to_check: Vec<(TargetAddr, Vec<IdleConn>)> = Vec::new();
            {
                let mut shard = lock(m);
                shard.retain(|dest, entry| {
                    let forgotten = entry.last_demand.is_none_or(|t| now - t >= timeout);
                    if entry.is_unused() && forgotten {
                        self.totals.retire(entry.counts());
                        return false;
                    }
                    // `idle` is oldest first, so the expired ones are a prefix.
                    let n = entry
                        .idle
                        .partition_point(|c| now.saturating_duration_since(c.since) >= timeout);
                    if n > 0 {
                        entry.tally.expired += n as u64;
                        expired.extend(entry.idle.drain(..n));
                    }
                    if !entry.idle.is_empty() {
                        to_check.push((dest.clone(), std::mem::take(&mut entry.idle)));
                    }
                    true
                });
            }
            let taken = expired.len() + to_check.iter().map(|(_, v)| v.len()).sum::<usize>();
            self.totals.idle.fetch_sub(taken, Ordering::Relaxed);
            drop(expired);
            if to_check.is_empty() {
                continue;
            }
            // Liveness checks are syscalls: done with the shard unlocked.
            let checked = to_check
                .into_iter()
                .map(|(dest, mut conns)| {
                    let before = conns.len();
                    conns.retain(|c| liveness::is_open(&c.stream));
                    let stale = before - conns.len();
                    Checked { dest, conns, stale }
                })
                .collect();
            let overflow = self.reinsert(m, checked, &mut next_expiry);
            drop(overflow);
        }
        let max_sleep = (timeout / 4).max(MIN_SLEEP);
        let until_expiry = next_expiry.map_or(max_sleep, |t| t.saturating_duration_since(now));
        until_expiry.clamp(MIN_SLEEP, max_sleep)
    }

    /// Puts checked connections back, before any that arrived meanwhile (they are
    /// older), keeping `max_idle_per_dest`. Returns what did not fit, to be closed
    /// after the lock is released.
    fn reinsert(
        &self,
        m: &Mutex<Shard>,
        checked: Vec<Checked>,
        next_expiry: &mut Option<Instant>,
    ) -> Vec<IdleConn> {
        let timeout = self.config.idle_timeout;
        let mut overflow = Vec::new();
        let mut shard = lock(m);
        for Checked {
            dest,
            mut conns,
            stale,
        } in checked
        {
            let entry = Shards::entry(&mut shard, &dest);
            entry.tally.stale += stale as u64;
            // Those that arrived meanwhile are already in `totals.idle`.
            let arrived = entry.idle.len();
            conns.append(&mut entry.idle);
            conns.sort_by_key(|c| c.since);
            let excess = conns.len().saturating_sub(self.config.max_idle_per_dest);
            if excess > 0 {
                entry.tally.dropped_full += excess as u64;
                overflow.extend(conns.drain(..excess));
            }
            if let Some(first) = conns.first() {
                let expiry = first.since + timeout;
                *next_expiry = Some(next_expiry.map_or(expiry, |t| t.min(expiry)));
            }
            let kept = conns.len();
            entry.idle = conns;
            if kept >= arrived {
                self.totals
                    .idle
                    .fetch_add(kept - arrived, Ordering::Relaxed);
            } else {
                self.totals
                    .idle
                    .fetch_sub(arrived - kept, Ordering::Relaxed);
            }
        }
        overflow
    }
}

/// The live connections of one destination after a liveness check.
struct Checked {
    dest: TargetAddr,
    conns: Vec<IdleConn>,
    stale: usize,
}
