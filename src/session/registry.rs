//! Sessions in progress: who is connected where, with live byte counts.
//!
//! The relay adds to the session's `Counters` (atomics) on every read; the registry
//! is touched only when a session opens and closes, and by API readers. Sharded so
//! that opening and closing sessions on different cores rarely share a lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::record::SessionRecord;
use crate::counters::Counters;

/// A session being relayed.
#[derive(Debug)]
pub struct ActiveSession {
    /// The record as it was opened (status active, no end).
    pub record: SessionRecord,
    pub counters: Counters,
    /// Cancelled to end the session from the API.
    pub terminate: CancellationToken,
    /// Why the proxy cut the session, when it was not the API (the access rules
    /// after a reload).
    pub cut_reason: std::sync::OnceLock<String>,
}

impl ActiveSession {
    /// Ends the session as `terminate` does, recording `reason` as its close reason.
    pub fn cut(&self, reason: String) {
        let _ = self.cut_reason.set(reason);
        self.terminate.cancel();
    }
}

const SHARDS: usize = 16;

pub struct Registry {
    shards: Vec<Mutex<HashMap<Uuid, Arc<ActiveSession>>>>,
    hasher: RandomState,
}

impl Registry {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, id: &Uuid) -> MutexGuard<'_, HashMap<Uuid, Arc<ActiveSession>>> {
        let i = self.hasher.hash_one(id) as usize % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn insert(&self, session: Arc<ActiveSession>) {
        self.shard(&session.record.id)
            .insert(session.record.id, session);
    }

    pub fn remove(&self, id: &Uuid) {
        self.shard(id).remove(id);
    }

    pub fn get(&self, id: &Uuid) -> Option<Arc<ActiveSession>> {
        self.shard(id).get(id).cloned()
    }

    /// Every active session, oldest first.
    pub fn snapshot(&self) -> Vec<Arc<ActiveSession>> {
        let mut all: Vec<_> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort_by_key(|s| s.record.started_at);
        all
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}
