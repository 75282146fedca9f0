//! Connector stage: turns a requested destination into a connected upstream socket,
//! from the connection pool when it is enabled, by a direct dial when it is not.
//!
//! Receives the destination from the request stage; hands the relay an
//! `UpstreamConn`, or a `ConnectError` that knows its SOCKS reply code.

mod connection_pool;
mod dial;
mod lease;
mod liveness;
mod reaper;
mod stats;
mod store;

#[cfg(test)]
mod tests;

pub use connection_pool::{ConnectionPool, PoolConfig};
pub use dial::{ConnectError, Dialer};
pub use lease::UpstreamConn;
pub use stats::{DestinationStats, PoolStats};

use crate::config::PoolSection;
use crate::protocol::TargetAddr;
use crate::telemetry::Telemetry;

/// What the CONNECT handler asks for an upstream connection.
pub struct Connector {
    dialer: Dialer,
    pool: Option<ConnectionPool>,
}

impl Connector {
    /// Must be called inside a Tokio runtime when the pool is enabled.
    pub fn new(config: &PoolSection, telemetry: &Telemetry) -> Self {
        let pool = config.enabled.then(|| {
            ConnectionPool::with_telemetry(PoolConfig::from(config), Some(telemetry.clone()))
        });
        Self {
            dialer: Dialer::new(config.connect_timeout()),
            pool,
        }
    }

    pub async fn connect(&self, dest: &TargetAddr) -> Result<UpstreamConn, ConnectError> {
        match &self.pool {
            Some(pool) => pool.checkout(dest).await,
            // No pool: no lock, no allocation, just the dial.
            None => self.dialer.dial(dest).await.map(UpstreamConn::direct),
        }
    }

    /// Gives an unused connection back to the pool (see `ConnectionPool::recycle`);
    /// without a pool, closes it.
    pub fn recycle(&self, conn: UpstreamConn) {
        if let Some(pool) = &self.pool {
            pool.recycle(conn);
        }
    }

    pub fn pool(&self) -> Option<&ConnectionPool> {
        self.pool.as_ref()
    }

    /// Closes pooled connections and stops background dialling.
    pub async fn shutdown(&self) {
        if let Some(pool) = &self.pool {
            pool.shutdown().await;
        }
    }
}
