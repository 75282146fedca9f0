//! The connection a client gets from the connector, and the lease that accounts for
//! it while it is checked out.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::stats::DestShared;
use crate::protocol::TargetAddr;

/// An upstream connection serving one client. Dropping it closes the socket; only
/// `ConnectionPool::recycle` (or `Connector::recycle`) gives it back to a pool.
pub struct UpstreamConn {
    stream: TcpStream,
    from_pool: bool,
    lease: Option<Lease>,
}

/// Counts a checked-out connection as in use until dropped.
pub(super) struct Lease {
    pub dest: TargetAddr,
    /// When the connection last carried anything: its dial, or its last return.
    /// A connection given back unused keeps this age, so that checkouts which move
    /// no byte cannot keep it past `idle_timeout` (the upstream saw no traffic).
    pub quiet_since: Instant,
    shared: Arc<DestShared>,
}

impl Lease {
    /// The caller has already counted the checkout (a pop or a new connection).
    pub(super) fn new(dest: TargetAddr, quiet_since: Instant, shared: Arc<DestShared>) -> Self {
        Self {
            dest,
            quiet_since,
            shared,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shared.released.fetch_add(1, Ordering::Relaxed);
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

    /// True when it came from a pool, which would take it back if it stays unused.
    pub fn is_recyclable(&self) -> bool {
        self.lease.is_some()
    }

    /// The socket and, for a pooled connection, its lease (ended when dropped).
    pub(super) fn into_parts(self) -> (TcpStream, Option<Lease>) {
        (self.stream, self.lease)
    }

    pub fn into_stream(self) -> TcpStream {
        self.stream
    }
}
