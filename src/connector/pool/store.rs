//! Sharded storage of idle connections: one map per shard, keyed by destination,
//! and per shard an index of its destinations by the age of their oldest idle
//! connection, so that eviction and expiry find the oldest connections without a
//! scan.
//!
//! Lock discipline: a shard lock covers only map, vector and index operations.
//! Nothing that can block (no syscall, no await, not even closing a socket) happens
//! under it; callers move sockets out and drop them after unlocking. At most one
//! shard lock is held at a time, so there is no lock order to get wrong.
//!
//! Each shard publishes the age of its oldest idle connection in an atomic, written
//! under its lock when it changes. Eviction and the reaper read those atomics without
//! locking (one per shard, a fixed number) and lock only the shard they act on; the
//! value may be stale by the time they lock, so they re-check under the lock.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hashbrown::{DefaultHashBuilder, HashMap};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::stats::{Counts, DestShared, Padded, Tally};
use crate::protocol::TargetAddr;

/// An established upstream connection waiting for a client.
pub(super) struct IdleConn {
    pub stream: TcpStream,
    /// When it became idle: its age for `idle_timeout` and its rank for LRU.
    pub since: Instant,
}

pub(super) struct DestEntry {
    /// Oldest first; checkout pops the newest (LIFO). Private: every change goes
    /// through `Shard::update`, which keeps the age index in step.
    idle: Vec<IdleConn>,
    /// This destination's key in its shard's age index, while it has idle connections.
    aged: Option<AgeKey>,
    /// The oldest idle connection may have changed since `aged` was set. Set by the
    /// changes that can move it, so that the hot path (a pop or push at the newest
    /// end) need not read the vector's first element to know that it did not.
    front_moved: bool,
    /// Background refills in flight: not idle yet, but counted against the limits.
    pub dialing: usize,
    /// The last checkout request; drives the "recent demand" rule of refills.
    pub last_demand: Option<Instant>,
    /// The last refill dial failed: no growth until a dial succeeds.
    pub refill_failing: bool,
    pub tally: Tally,
    pub shared: Arc<DestShared>,
}

impl DestEntry {
    fn new() -> Self {
        Self {
            idle: Vec::new(),
            aged: None,
            front_moved: false,
            dialing: 0,
            last_demand: None,
            refill_failing: false,
            tally: Tally::default(),
            shared: Arc::default(),
        }
    }

    pub fn counts(&self) -> Counts {
        Counts::of(&self.tally, &self.shared)
    }

    pub fn idle_len(&self) -> usize {
        self.idle.len()
    }

    /// An entry that holds nothing and owes nothing can be forgotten.
    pub fn is_unused(&self) -> bool {
        self.idle.is_empty() && self.dialing == 0 && self.counts().in_use == 0
    }

    /// The newest idle connection (LIFO).
    #[inline]
    pub fn pop_newest(&mut self) -> Option<IdleConn> {
        let conn = self.idle.pop();
        // Taking the last one empties the destination; otherwise the oldest stays.
        self.front_moved |= conn.is_some() && self.idle.is_empty();
        conn
    }

    /// Adds a connection where its age puts it (usually last: the newest).
    #[inline]
    pub fn insert(&mut self, conn: IdleConn) {
        let at = self.idle.partition_point(|c| c.since <= conn.since);
        self.idle.insert(at, conn);
        self.front_moved |= at == 0;
    }
}

/// Age of a destination's oldest idle connection, then a sequence number that makes
/// keys unique (two destinations may hold connections of the same age).
type AgeKey = (Instant, u64);

#[derive(Default)]
pub(super) struct Shard {
    dests: HashMap<TargetAddr, DestEntry>,
    /// Every destination with idle connections, once, by the age of its oldest.
    by_age: BTreeMap<AgeKey, TargetAddr>,
    next_seq: u64,
    /// The oldest key may have changed since the shard's atomic was written.
    moved: bool,
}

impl Shard {
    /// Runs `f` on the entry for `dest` (created if needed), then brings the age
    /// index up to date. Costs one test of a flag when the destination's oldest idle
    /// connection stayed the same, which it does on a checkout or a return to a
    /// destination that keeps other idle connections.
    #[inline]
    pub fn update<R>(&mut self, dest: &TargetAddr, f: impl FnOnce(&mut DestEntry) -> R) -> R {
        // One hash lookup; the key is cloned only when the entry is new.
        let entry = self.dests.entry_ref(dest).or_insert_with(DestEntry::new);
        let r = f(entry);
        if entry.front_moved {
            Self::reindex(&mut self.by_age, &mut self.next_seq, dest, entry);
            self.moved = true;
        }
        debug_assert_eq!(
            entry.aged.map(|(since, _)| since),
            entry.idle.first().map(|c| c.since),
            "age index out of step"
        );
        r
    }

    /// Re-keys `entry` in the index after its oldest idle connection changed.
    #[cold]
    #[inline(never)]
    fn reindex(
        by_age: &mut BTreeMap<AgeKey, TargetAddr>,
        next_seq: &mut u64,
        dest: &TargetAddr,
        entry: &mut DestEntry,
    ) {
        entry.front_moved = false;
        if let Some(key) = entry.aged.take() {
            by_age.remove(&key);
        }
        if let Some(first) = entry.idle.first() {
            let key = (first.since, *next_seq);
            *next_seq += 1;
            by_age.insert(key, dest.clone());
            entry.aged = Some(key);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&TargetAddr, &DestEntry)> {
        self.dests.iter()
    }

    /// Removes the shard's oldest idle connection, counted as evicted.
    pub fn evict_oldest(&mut self) -> Option<(TargetAddr, IdleConn)> {
        let dest = self.by_age.first_key_value()?.1.clone();
        let conn = self.update(&dest, |e| {
            e.tally.evicted += 1;
            e.front_moved = true;
            e.idle.remove(0)
        });
        Some((dest, conn))
    }

    /// Removes every idle connection that became idle at or before `deadline`, counted
    /// as expired. Touches only the destinations that have one: O(k log n).
    pub fn drain_expired(&mut self, deadline: Instant, out: &mut Vec<IdleConn>) {
        while let Some((&(since, _), dest)) = self.by_age.first_key_value() {
            if since > deadline {
                break;
            }
            let dest = dest.clone();
            self.update(&dest, |e| {
                let n = e.idle.partition_point(|c| c.since <= deadline);
                e.tally.expired += n as u64;
                e.front_moved = true;
                out.extend(e.idle.drain(..n));
            });
        }
    }

    /// Removes every idle connection (shutdown).
    pub fn drain_all(&mut self, out: &mut Vec<IdleConn>) {
        for entry in self.dests.values_mut() {
            out.append(&mut entry.idle);
            entry.aged = None;
            entry.front_moved = false;
        }
        self.by_age.clear();
        self.moved = true;
    }

    /// Keeps the destinations for which `keep` is true. Only destinations with no
    /// idle connection may be dropped (they are not in the index).
    pub fn retain(&mut self, mut keep: impl FnMut(&TargetAddr, &DestEntry) -> bool) {
        self.dests.retain(|dest, entry| {
            let kept = keep(dest, entry);
            debug_assert!(kept || entry.idle.is_empty(), "forgot idle connections");
            kept || !entry.idle.is_empty()
        });
    }
}

/// A shard and the published age of its oldest idle connection.
struct Slot {
    shard: Mutex<Shard>,
    /// Nanoseconds from `Shards::epoch` to the oldest idle connection's `since`;
    /// `EMPTY` when the shard holds none.
    oldest: AtomicU64,
}

const EMPTY: u64 = u64::MAX;

pub(super) struct Shards {
    slots: Box<[Padded<Slot>]>,
    hasher: DefaultHashBuilder,
    /// The origin of the published ages. A connection idle since before it (none is:
    /// the pool dials its connections after it exists) counts as idle since then.
    epoch: Instant,
}

impl Shards {
    /// A power of two of shards, a few per CPU, so two destinations rarely share a lock.
    pub fn new() -> Self {
        let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
        let n = (cpus * 4).next_power_of_two().clamp(8, 256);
        let slot = || {
            Padded(Slot {
                shard: Mutex::default(),
                oldest: AtomicU64::new(EMPTY),
            })
        };
        Self {
            slots: (0..n).map(|_| slot()).collect(),
            hasher: DefaultHashBuilder::default(),
            epoch: Instant::now(),
        }
    }

    #[inline]
    pub fn lock(&self, dest: &TargetAddr) -> ShardGuard<'_> {
        // The high bits pick the shard; the map inside uses its own hasher state.
        let i = (self.hasher.hash_one(dest) >> 40) as usize & (self.slots.len() - 1);
        self.lock_at(i)
    }

    #[inline]
    fn lock_at(&self, i: usize) -> ShardGuard<'_> {
        let slot = &self.slots[i];
        ShardGuard {
            shard: slot.shard.lock().unwrap_or_else(PoisonError::into_inner),
            oldest: &slot.oldest,
            epoch: self.epoch,
        }
    }

    /// Locks each shard in turn (one at a time: the guard is dropped before the next).
    pub fn each(&self) -> impl Iterator<Item = ShardGuard<'_>> {
        (0..self.slots.len()).map(|i| self.lock_at(i))
    }

    /// Locks the shard whose published oldest idle connection is the oldest of all,
    /// if any shard has one. Reads one atomic per shard and takes one lock.
    pub fn lock_oldest(&self) -> Option<ShardGuard<'_>> {
        let (i, _) = self
            .published()
            .filter(|&(_, at)| at != EMPTY)
            .min_by_key(|&(_, at)| at)?;
        Some(self.lock_at(i))
    }

    /// Locks, in turn, each shard that published an idle connection idle since
    /// `deadline` or earlier.
    pub fn expiring(&self, deadline: Instant) -> impl Iterator<Item = ShardGuard<'_>> {
        let limit = self.nanos(deadline);
        self.published()
            .filter(move |&(_, at)| at != EMPTY && at <= limit)
            .map(|(i, _)| self.lock_at(i))
    }

    /// When the oldest idle connection of any shard became idle.
    pub fn oldest(&self) -> Option<Instant> {
        let at = self.published().map(|(_, at)| at).min()?;
        (at != EMPTY).then(|| self.epoch + std::time::Duration::from_nanos(at))
    }

    fn published(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.oldest.load(Ordering::Relaxed)))
    }

    fn nanos(&self, t: Instant) -> u64 {
        to_nanos(self.epoch, t)
    }
}

fn to_nanos(epoch: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(EMPTY - 1)
}

/// A locked shard. When it is released after a change of the shard's oldest idle
/// connection, it publishes the new age (still under the lock, so publications are
/// in lock order and the last one is current).
pub(super) struct ShardGuard<'a> {
    shard: MutexGuard<'a, Shard>,
    oldest: &'a AtomicU64,
    epoch: Instant,
}

impl Deref for ShardGuard<'_> {
    type Target = Shard;
    fn deref(&self) -> &Shard {
        &self.shard
    }
}

impl DerefMut for ShardGuard<'_> {
    fn deref_mut(&mut self) -> &mut Shard {
        &mut self.shard
    }
}

impl Drop for ShardGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.shard.moved {
            self.publish();
        }
    }
}

impl ShardGuard<'_> {
    #[cold]
    #[inline(never)]
    fn publish(&mut self) {
        self.shard.moved = false;
        let at = self
            .shard
            .by_age
            .first_key_value()
            .map_or(EMPTY, |(&(since, _), _)| to_nanos(self.epoch, since));
        self.oldest.store(at, Ordering::Relaxed);
    }
}
