//! The connection a client gets from the connector, and the lease that accounts for
//! it while it is checked out.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::connection_pool::Arrival;
use super::stats::DestCounters;
use crate::protocol::TargetAddr;

/// An upstream connection serving one client. Dropping it closes the socket; only
/// `recycle` gives it back to the pool.
pub struct UpstreamConn {
    stream: TcpStream,
    from_pool: bool,
    lease: Option<Lease>,
}

/// Counts a checked-out connection as in use until dropped. Reaches the pool
/// weakly, through its destination's counters: a lease outliving its pool just
/// closes its socket.
pub(super) struct Lease {
    dest: TargetAddr,
    counters: Arc<DestCounters>,
}

impl Lease {
    pub(super) fn new(dest: TargetAddr, counters: Arc<DestCounters>) -> Self {
        counters.in_use.fetch_add(1, Ordering::Relaxed);
        Self { dest, counters }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.counters.in_use.fetch_sub(1, Ordering::Relaxed);
    }
}

impl UpstreamConn {
    /// A connection dialled with no pool involved.
    pub fn direct(stream: TcpStream) -> Self {
        Self {
            stream,
            from_pool: false,
            lease: None,
        }
    }

    pub(super) fn leased(stream: TcpStream, from_pool: bool, lease: Lease) -> Self {
        Self {
            stream,
            from_pool,
            lease: Some(lease),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// True when the connection was waiting in the pool (a hit), false when it was
    /// dialled for this request.
    pub fn from_pool(&self) -> bool {
        self.from_pool
    }

    /// True when a pool would take this connection back (pooling is enabled).
    pub fn is_recyclable(&self) -> bool {
        self.lease.is_some()
    }

    /// Gives the connection back for another client. Call it only when the session
    /// moved no byte in either direction: the pool hands it out as never used.
    pub fn recycle(self) {
        let Some(lease) = self.lease else { return };
        if let Some(pool) = lease.counters.pool.upgrade() {
            pool.put(&lease.dest, self.stream, Arrival::Returned);
        }
    }

    pub fn into_stream(self) -> TcpStream {
        self.stream
    }
}
