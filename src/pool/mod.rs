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
pub(crate) use dial::set_keepalive;
pub use dial::{ConnectError, Dialer};
pub use lease::UpstreamConn;
pub use stats::{DestinationStats, PoolStats};

use std::sync::Arc;
use std::time::Duration;

use crate::access::OwnAddresses;
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
    /// `tcp_keepalive` applies to every upstream connection (`server.tcp_keepalive_secs`);
    /// `own` are the proxy's listening addresses, never dialled.
    pub fn new(
        config: &PoolSection,
        tcp_keepalive: Option<Duration>,
        own: OwnAddresses,
        telemetry: &Telemetry,
    ) -> Self {
        let dialer = Dialer::new(config.connect_timeout())
            .with_keepalive(tcp_keepalive)
            .refusing(Arc::new(own));
        let pool = config.enabled.then(|| {
            let pool_config = PoolConfig {
                tcp_keepalive,
                ..PoolConfig::from(config)
            };
            ConnectionPool::with_dialer(pool_config, dialer.clone(), Some(telemetry.clone()))
        });
        Self { dialer, pool }
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
