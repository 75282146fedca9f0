//! The pool itself: checkout, give-back, background refill and LRU eviction.
//!
//! Only clean connections are pooled: freshly dialled ones, and ones whose session
//! moved no byte in either direction. A tunnel is an opaque byte stream, so a
//! connection that carried one client's bytes could hold that client's TLS or HTTP
//! state; handing it to another client would leak or corrupt data. Because used
//! connections never come back, the pool keeps spares by dialling them itself, driven
//! by demand: each checkout that takes a connection dials a replacement, and a miss
//! for a destination asked for recently dials one more.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::lease::{Lease, UpstreamConn};
use super::liveness;
use super::stats::{bump, DestShared, DestinationStats, PoolStats, Totals};
use super::store::{IdleConn, Shards};
use crate::config::PoolSection;
use crate::connector::{ConnectError, Dialer};
use crate::protocol::TargetAddr;
use crate::telemetry::{Signal, Telemetry};

/// How many shards `evict_lru` tries when the one it picked was emptied meanwhile.
const EVICT_ATTEMPTS: usize = 4;

/// Limits and timeouts of a pool (the runtime form of `[server.pool]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub max_idle_per_dest: usize,
    pub max_total_idle: usize,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    /// TCP keepalive of the connections the pool dials (`server.tcp_keepalive_secs`).
    pub tcp_keepalive: Option<Duration>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self::from(&PoolSection::default())
    }
}

impl From<&PoolSection> for PoolConfig {
    fn from(s: &PoolSection) -> Self {
        Self {
            max_idle_per_dest: s.max_idle_per_dest,
            max_total_idle: s.max_total_idle,
            idle_timeout: s.idle_timeout(),
            connect_timeout: s.connect_timeout(),
            tcp_keepalive: crate::config::ServerConfig::default().tcp_keepalive(),
        }
    }
}

/// Upstream connection pool; cheap to clone (all clones share one pool).
#[derive(Clone)]
pub struct ConnectionPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ConnectionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionPool")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

pub(super) struct Inner {
    pub config: PoolConfig,
    dialer: Dialer,
    pub shards: Shards,
    pub totals: Totals,
    telemetry: Option<Telemetry>,
    /// Stops the reaper and refills; cancelled on shutdown or when the pool is dropped.
    cancel: CancellationToken,
    /// Set on shutdown. Checked on the hit path instead of `cancel.is_cancelled()`,
    /// which takes a lock inside the token.
    closed: AtomicBool,
    tasks: TaskTracker,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A checkout that found nothing usable idle: what `fill` needs to dial for it.
pub struct Miss {
    shared: Arc<DestShared>,
    recent_demand: bool,
}

/// The outcome of `lookup`.
pub enum Lookup {
    Hit(UpstreamConn),
    Miss(Miss),
}

/// The outcome of looking for an idle connection.
struct Taken {
    conn: Option<UpstreamConn>,
    /// The destination's shared counters, when no lease carries them.
    shared: Option<Arc<DestShared>>,
    /// `dest` was asked for within `idle_timeout` before this request.
    recent_demand: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Refill {
    /// A connection was taken: restore the level it was taken from.
    Replacement,
    /// A miss for a destination in demand: grow, within `max_idle_per_dest`.
    Growth,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Arrival {
    Refill,
    /// Given back unused; quiet since this instant (see `Lease::quiet_since`).
    Returned(Instant),
}

impl ConnectionPool {
    /// Creates a pool and its reaper task (which ends when the pool is dropped or
    /// shut down). Must be called inside a Tokio runtime.
    pub fn new(config: PoolConfig) -> Self {
        Self::with_telemetry(config, None)
    }

    pub fn with_telemetry(config: PoolConfig, telemetry: Option<Telemetry>) -> Self {
        let dialer = Dialer::new(config.connect_timeout).with_keepalive(config.tcp_keepalive);
        Self::with_dialer(config, dialer, telemetry)
    }

    /// A pool whose connections `dialer` opens (its timeout and keepalive are used,
    /// not the config's).
    pub fn with_dialer(config: PoolConfig, dialer: Dialer, telemetry: Option<Telemetry>) -> Self {
        let inner = Arc::new(Inner {
            dialer,
            config,
            shards: Shards::new(),
            totals: Totals::default(),
            telemetry,
            cancel: CancellationToken::new(),
            closed: AtomicBool::new(false),
            tasks: TaskTracker::new(),
        });
        let reaper = super::reaper::run(Arc::downgrade(&inner), inner.cancel.clone());
        inner.tasks.spawn(reaper);
        Self { inner }
    }

    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// A connection to `addr`:`port`, where `addr` is an IP address or a host name:
    /// `checkout` for callers that hold the destination as text.
    pub async fn get_or_connect(
        &self,
        addr: &str,
        port: u16,
    ) -> Result<UpstreamConn, ConnectError> {
        let dest = match addr.parse::<std::net::IpAddr>() {
            Ok(ip) => TargetAddr::Ip((ip, port).into()),
            Err(_) => TargetAddr::Domain(addr.to_owned(), port),
        };
        self.checkout(&dest).await
    }

    /// A connection to `dest`: the newest live idle one, or a new dial.
    pub async fn checkout(&self, dest: &TargetAddr) -> Result<UpstreamConn, ConnectError> {
        self.checkout_to(dest, None).await
    }

    /// `checkout`, where a miss, and the dials that keep the pool stocked, go to
    /// `resolved` (the addresses of `dest`, resolved and checked by the caller)
    /// instead of resolving `dest` again.
    pub async fn checkout_to(
        &self,
        dest: &TargetAddr,
        resolved: Option<&[SocketAddr]>,
    ) -> Result<UpstreamConn, ConnectError> {
        // No peer to judge: the hit path stays free of syscalls.
        let taken = self.take_idle(dest, &mut |_| true);
        match (taken.conn, taken.shared) {
            (Some(conn), _) => {
                self.inner
                    .refill(dest, Refill::Replacement, resolved.map(Arc::from));
                Ok(conn)
            }
            (None, Some(shared)) => {
                let miss = Miss {
                    shared,
                    recent_demand: taken.recent_demand,
                };
                self.fill(dest, miss, resolved).await
            }
            (None, None) => {
                unreachable!("take_idle returns the counters whenever it finds no connection")
            }
        }
    }

    /// The newest live idle connection to `dest` whose peer address passes
    /// `accept` (those that do not are closed), or a `Miss` to `fill`. A hit
    /// starts the dial of its replacement to the hit's own peer address, which
    /// `accept` judged (a name is not resolved again behind the caller's back).
    pub fn lookup(&self, dest: &TargetAddr, accept: impl Fn(SocketAddr) -> bool) -> Lookup {
        let mut judged = None;
        let taken = self.take_idle(dest, &mut |stream: &TcpStream| {
            let peer = stream.peer_addr().ok();
            judged = peer;
            peer.is_some_and(&accept)
        });
        match (taken.conn, taken.shared) {
            (Some(conn), _) => {
                let to = judged.map(|p| Arc::<[SocketAddr]>::from([p]));
                self.inner.refill(dest, Refill::Replacement, to);
                Lookup::Hit(conn)
            }
            (None, Some(shared)) => Lookup::Miss(Miss {
                shared,
                recent_demand: taken.recent_demand,
            }),
            (None, None) => {
                unreachable!("take_idle returns the counters whenever it finds no connection")
            }
        }
    }

    /// The newest live idle connection to `dest`, if there is one; never dials and
    /// starts no refill. Counts as demand for `dest` (a hit or a miss).
    pub fn checkout_idle(&self, dest: &TargetAddr) -> Option<UpstreamConn> {
        self.take_idle(dest, &mut |_| true).conn
    }

    /// Pops idle connections, newest first, until one is live. Expired and closed
    /// ones are counted and closed, outside the shard lock. A miss is counted here.
    fn take_idle(&self, dest: &TargetAddr, accept: &mut dyn FnMut(&TcpStream) -> bool) -> Taken {
        let inner = &self.inner;
        let now = Instant::now();
        let mut recent_demand = None;
        loop {
            let (idle, shared) = inner.shards.lock(dest).update(dest, |entry| {
                if recent_demand.is_none() {
                    let recent = entry
                        .last_demand
                        .is_some_and(|t| now - t < inner.config.idle_timeout);
                    recent_demand = Some(recent);
                    entry.last_demand = Some(now);
                }
                let idle = entry.pop_newest();
                if idle.is_some() {
                    entry.tally.popped += 1;
                } else {
                    entry.tally.misses += 1;
                }
                (idle, Arc::clone(&entry.shared))
            });
            let recent_demand = recent_demand == Some(true);
            let Some(conn) = idle else {
                return Taken {
                    conn: None,
                    shared: Some(shared),
                    recent_demand,
                };
            };
            inner.totals.idle.fetch_sub(1, Ordering::Relaxed);
            if now.saturating_duration_since(conn.since) >= inner.config.idle_timeout {
                bump(&shared.discarded_expired);
                continue;
            }
            if !liveness::is_open(&conn.stream) {
                bump(&shared.discarded_stale);
                continue;
            }
            // Dialled for an earlier resolution the caller's rules do not accept.
            if !accept(&conn.stream) {
                continue;
            }
            let lease = Lease::new(dest.clone(), conn.since, shared);
            let conn = Some(UpstreamConn::leased(conn.stream, true, lease));
            return Taken {
                conn,
                shared: None,
                recent_demand,
            };
        }
    }

    /// Dials for a checkout that missed: to `resolved` (checked by the caller),
    /// or to `dest` resolved now.
    pub async fn fill(
        &self,
        dest: &TargetAddr,
        miss: Miss,
        resolved: Option<&[SocketAddr]>,
    ) -> Result<UpstreamConn, ConnectError> {
        let Miss {
            shared,
            recent_demand,
        } = miss;
        // Grow now, not after this client's own dial: by then the spare would be a
        // round trip late for the clients arriving meanwhile. Only for a destination
        // asked for before: a one-off request must not leave a spare nobody uses.
        if recent_demand {
            self.inner
                .refill(dest, Refill::Growth, resolved.map(Arc::from));
        }
        let stream = match resolved {
            Some(addrs) => self.inner.dialer.dial_resolved(dest, addrs).await?,
            None => self.inner.dialer.dial(dest).await?,
        };
        bump(&shared.new_connections);
        let lease = Lease::new(dest.clone(), Instant::now(), shared);
        Ok(UpstreamConn::leased(stream, false, lease))
    }

    /// Gives a connection back for another client. Call it only when its session
    /// moved no byte in either direction: the pool hands it out as never used. A
    /// connection that did not come from this pool is just closed.
    pub fn recycle(&self, conn: UpstreamConn) {
        let (stream, lease) = conn.into_parts();
        if let Some(lease) = lease {
            self.inner
                .put(&lease.dest, stream, Arrival::Returned(lease.quiet_since));
        }
    }

    /// A snapshot of the counters and of every tracked destination.
    pub fn get_stats(&self) -> PoolStats {
        let inner = &self.inner;
        let now = Instant::now();
        let mut rows = Vec::new();
        for shard in inner.shards.each() {
            for (dest, entry) in shard.iter() {
                let counts = entry.counts();
                let mut row = DestinationStats::new(
                    dest.to_string(),
                    entry.idle_len(),
                    entry.dialing,
                    &counts,
                );
                row.last_demand_secs_ago = entry.last_demand.map(|t| (now - t).as_secs_f64());
                rows.push((row, counts));
            }
        }
        PoolStats::from_rows(rows, &inner.totals)
    }

    /// Runs one reaper pass now. For the `pool_checkout` benchmark, which measures
    /// what a sweep costs with many idle connections; not part of the API.
    #[doc(hidden)]
    pub fn sweep_now(&self) {
        self.inner.sweep(Instant::now());
    }

    #[cfg(test)]
    pub(super) fn inner_for_tests(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Stops refills and the reaper, waits for them, and closes every idle connection.
    /// Connections in use are unaffected; they are closed by their sessions.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Relaxed);
        inner.cancel.cancel();
        inner.tasks.close();
        inner.tasks.wait().await;
        let mut closed: Vec<IdleConn> = Vec::new();
        for mut shard in inner.shards.each() {
            shard.drain_all(&mut closed);
            drop(shard);
            inner.totals.idle.fetch_sub(closed.len(), Ordering::Relaxed);
            closed.clear();
        }
    }
}

impl Inner {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Starts a background dial for `dest` if the limits allow it.
    /// `to`: the addresses to dial (checked by the checkout that asked); None
    /// resolves `dest`.
    fn refill(self: &Arc<Self>, dest: &TargetAddr, kind: Refill, to: Option<Arc<[SocketAddr]>>) {
        if self.is_closed() {
            return;
        }
        let pending =
            self.totals.idle.load(Ordering::Relaxed) + self.totals.dialing.load(Ordering::Relaxed);
        if pending >= self.config.max_total_idle {
            return;
        }
        let started = self.shards.lock(dest).update(dest, |entry| {
            // Growth counts dials in flight with idle connections against
            // max_idle_per_dest. Counting only idle ones lets a burst of misses start
            // a dial each; they land together, overflow the limit and are closed
            // unused (measured: half of all dials at 50 concurrent, limit 8, 5 ms).
            // A destination whose last refill failed gets no speculative dials until
            // one succeeds (a hit's replacement).
            let full = entry.idle_len() + entry.dialing >= self.config.max_idle_per_dest;
            if kind == Refill::Growth && (full || entry.refill_failing) {
                return false;
            }
            entry.dialing += 1;
            true
        });
        if !started {
            return;
        }
        self.totals.dialing.fetch_add(1, Ordering::Relaxed);
        let pool = Arc::downgrade(self);
        let dialer = self.dialer.clone();
        let cancel = self.cancel.clone();
        let dest = dest.clone();
        self.tasks.spawn(async move {
            let result = tokio::select! {
                r = async {
                    match &to {
                        Some(addrs) => dialer.dial_resolved(&dest, addrs).await,
                        None => dialer.dial(&dest).await,
                    }
                } => Some(r),
                () = cancel.cancelled() => None,
            };
            let Some(inner) = pool.upgrade() else { return };
            match result {
                Some(Ok(stream)) => {
                    inner.put(&dest, stream, Arrival::Refill);
                }
                other => {
                    inner.shards.lock(&dest).update(&dest, |entry| {
                        entry.dialing = entry.dialing.saturating_sub(1);
                        if other.is_some() {
                            entry.tally.refill_failed += 1;
                            entry.refill_failing = true;
                        }
                    });
                    if let Some(Err(e)) = other {
                        tracing::debug!(dest = %dest, error = %e, "pool refill failed");
                    }
                    inner.totals.dialing.fetch_sub(1, Ordering::Relaxed);
                }
            }
        });
    }

    /// Adds a clean connection as the newest idle one for `dest`, within the limits.
    pub(super) fn put(&self, dest: &TargetAddr, stream: TcpStream, arrival: Arrival) {
        let mut idle = 0;
        let rejected = self.shards.lock(dest).update(dest, |entry| {
            match arrival {
                Arrival::Refill => {
                    entry.dialing = entry.dialing.saturating_sub(1);
                    entry.refill_failing = false;
                    entry.tally.refreshed += 1;
                }
                Arrival::Returned(_) => entry.tally.returned += 1,
            }
            if self.is_closed() {
                Some(stream)
            } else if entry.idle_len() >= self.config.max_idle_per_dest {
                entry.tally.dropped_full += 1;
                Some(stream)
            } else {
                let since = match arrival {
                    Arrival::Refill => Instant::now(),
                    Arrival::Returned(quiet_since) => quiet_since,
                };
                // A returned connection goes where its age puts it (expiry and
                // eviction take the oldest, checkout the newest).
                entry.insert(IdleConn { stream, since });
                // Counted before the lock is released: a checkout that pops this
                // connection at once decrements after this, never before (which
                // would wrap the counter below zero).
                idle = self.totals.idle.fetch_add(1, Ordering::Relaxed) + 1;
                None
            }
        });
        if arrival == Arrival::Refill {
            self.totals.dialing.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(stream) = rejected {
            drop(stream);
            if self.is_closed() {
                return;
            }
            self.emit(Signal::PoolDroppedFull {
                destination: dest.to_string(),
                limit: self.config.max_idle_per_dest,
            });
            return;
        }
        if idle > self.config.max_total_idle {
            self.evict_lru();
        }
    }

    /// Closes the least recently used idle connection of any destination: the oldest
    /// of the shard that published the oldest age (one atomic read per shard, one
    /// lock, O(log n) in that shard). Exact unless connections move between the read
    /// and the lock; then it is the oldest of that shard.
    fn evict_lru(&self) {
        // A shard found empty under its lock (its last idle connections were taken
        // after it published its age) sends the search round again; rarely more.
        for _ in 0..EVICT_ATTEMPTS {
            let victim = {
                let Some(mut shard) = self.shards.lock_oldest() else {
                    return;
                };
                if self.totals.idle.load(Ordering::Relaxed) <= self.config.max_total_idle {
                    return;
                }
                let victim = shard.evict_oldest();
                if victim.is_some() {
                    // Under the lock, so that a concurrent eviction that locks this
                    // shard next sees the count without this connection.
                    self.totals.idle.fetch_sub(1, Ordering::Relaxed);
                }
                victim
            };
            if let Some((dest, conn)) = victim {
                drop(conn);
                self.emit(Signal::PoolEvicted {
                    destination: dest.to_string(),
                    limit: self.config.max_total_idle,
                });
                return;
            }
        }
    }

    pub(super) fn emit(&self, signal: Signal) {
        if let Some(t) = &self.telemetry {
            t.emit(signal);
        }
    }
}
