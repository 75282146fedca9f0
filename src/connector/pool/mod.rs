//! The upstream connection pool: the connector's strategy for destinations in
//! demand. It keeps clean (never used) connections per destination, refills them
//! as they are taken, and never lets one connection serve two clients (see
//! docs/connection-pool.md).

mod connection_pool;
mod lease;
mod liveness;
mod reaper;
mod stats;
mod store;

#[cfg(test)]
mod tests;

pub use connection_pool::{ConnectionPool, PoolConfig};
pub use connection_pool::{Lookup, Miss};
pub use lease::UpstreamConn;
pub use stats::{DestinationStats, PoolStats};
