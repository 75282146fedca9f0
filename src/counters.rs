//! The live byte counts of one tunnel. A leaf module: the relay writes them, the
//! session registry, the API and the metrics read them, and none of those need to
//! know each other for it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Live byte counts of one tunnel: bytes delivered (written to the receiving side),
/// so that a session record never counts bytes that were read and then lost with a
/// failed write, and a slow receiver draining a backlog still counts as activity.
#[derive(Debug, Default)]
pub struct Counters {
    pub client_to_upstream: AtomicU64,
    pub upstream_to_client: AtomicU64,
    /// A byte was read from either side (even if not yet delivered): the upstream
    /// is no longer clean and must not go back to the pool.
    pub touched: AtomicBool,
    /// UDP ASSOCIATE only: datagrams relayed each way.
    pub datagrams_client_to_upstream: AtomicU64,
    pub datagrams_upstream_to_client: AtomicU64,
}

impl Counters {
    pub fn total(&self) -> u64 {
        self.client_to_upstream.load(Ordering::Relaxed)
            + self.upstream_to_client.load(Ordering::Relaxed)
    }
}
