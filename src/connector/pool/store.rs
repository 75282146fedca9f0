//! Sharded storage of idle connections: one map per shard, keyed by destination.
//!
//! Lock discipline: a shard lock covers only map and vector operations. Nothing that
//! can block (no syscall, no await, not even closing a socket) happens under it;
//! callers move sockets out and drop them after unlocking. At most one shard lock is
//! held at a time, so there is no lock order to get wrong.

use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hashbrown::{DefaultHashBuilder, HashMap};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::stats::{Counts, DestShared, Tally};
use crate::protocol::TargetAddr;

/// An established upstream connection waiting for a client.
pub(super) struct IdleConn {
    pub stream: TcpStream,
    /// When it became idle: its age for `idle_timeout` and its rank for LRU.
    pub since: Instant,
}

pub(super) struct DestEntry {
    /// Oldest first; checkout pops the newest (LIFO).
    pub idle: Vec<IdleConn>,
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

    /// An entry that holds nothing and owes nothing can be forgotten.
    pub fn is_unused(&self) -> bool {
        self.idle.is_empty() && self.dialing == 0 && self.counts().in_use == 0
    }
}

pub(super) type Shard = HashMap<TargetAddr, DestEntry>;

pub(super) struct Shards {
    shards: Box<[Mutex<Shard>]>,
    hasher: DefaultHashBuilder,
}

impl Shards {
    /// A power of two of shards, a few per CPU, so two destinations rarely share a lock.
    pub fn new() -> Self {
        let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
        let n = (cpus * 4).next_power_of_two().clamp(8, 256);
        Self {
            shards: (0..n).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    pub fn lock(&self, dest: &TargetAddr) -> MutexGuard<'_, Shard> {
        // The high bits pick the shard; the map inside uses its own hasher state.
        let i = (self.hasher.hash_one(dest) >> 40) as usize & (self.shards.len() - 1);
        lock(&self.shards[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Mutex<Shard>> {
        self.shards.iter()
    }

    /// The entry for `dest`, created if needed.
    pub fn entry<'a>(shard: &'a mut Shard, dest: &TargetAddr) -> &'a mut DestEntry {
        // One hash lookup; the key is cloned only when the entry is new.
        shard.entry_ref(dest).or_insert_with(DestEntry::new)
    }
}

/// Locks a shard; a panic elsewhere while holding it leaves plain data that is still
/// consistent enough to use, so poisoning is ignored rather than spread.
pub(super) fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
