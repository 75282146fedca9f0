//! Connector stage: turns a requested destination into a connected upstream socket,
//! from the connection pool when it is enabled, by a direct dial when it is not.
//!
//! Receives the destination from the request stage: resolves it (`resolve`),
//! checks every address it stands for (`AddressCheck`, the access stage's rules) and
//! dials (`Dialer`), or takes a connection from the pool (`pool`). Hands the relay an
//! `UpstreamConn`, or a `ConnectError` saying what went wrong; which SOCKS reply
//! that means is the server's business.

mod dial;
pub mod pool;
mod resolve;

pub(crate) use dial::set_keepalive;
pub use dial::{AddressCheck, ConnectError, Dialer, Refusal};
pub use pool::{ConnectionPool, DestinationStats, PoolConfig, PoolStats, UpstreamConn};
pub use resolve::resolve;

use std::sync::Arc;
use std::time::Duration;

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
    /// `check` passes or refuses every address before it is dialled.
    pub fn new(
        config: &PoolSection,
        tcp_keepalive: Option<Duration>,
        check: Arc<dyn AddressCheck>,
        telemetry: &Telemetry,
    ) -> Self {
        let dialer = Dialer::new(config.connect_timeout())
            .with_keepalive(tcp_keepalive)
            .checking(check);
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
