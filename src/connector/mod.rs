//! Connector stage: turns a requested destination into a connected upstream socket,
//! from the connection pool when it is enabled, by a direct dial when it is not.
//!
//! Receives the destination from the request stage: resolves it (`resolve`),
//! checks every address it stands for (`AddressCheck`, the access stage's rules) and
//! dials (`Dialer`), or takes a connection from the pool (`pool`). Hands the relay an
//! `UpstreamConn`, or a `ConnectError` saying what went wrong; which SOCKS reply
//! that means is the server's business.

mod answers;
mod dial;
pub mod pool;
mod resolve;

pub(crate) use dial::set_keepalive;
pub use dial::{AddressCheck, ConnectError, DestinationCheck, Dialer, NoCheck, Refusal};
pub use pool::{ConnectionPool, DestinationStats, Lookup, PoolConfig, PoolStats, UpstreamConn};
pub use resolve::Resolver;

use std::sync::Arc;
use std::time::Duration;

use crate::config::PoolSection;
use crate::metrics::Phases;
use crate::protocol::TargetAddr;
use crate::telemetry::Telemetry;

/// What the CONNECT handler asks for an upstream connection.
pub struct Connector {
    dialer: Dialer,
    pool: Option<ConnectionPool>,
    /// Bounds a resolution made for a `DestinationCheck` (the dial has its own).
    timeout: Duration,
}

impl Connector {
    /// Must be called inside a Tokio runtime when the pool is enabled.
    /// `tcp_keepalive` applies to every upstream connection (`server.tcp_keepalive_secs`);
    /// `check` passes or refuses every address before it is dialled.
    pub fn new(
        config: &PoolSection,
        tcp_keepalive: Option<Duration>,
        check: Arc<dyn AddressCheck>,
        resolver: Resolver,
        phases: &Phases,
        telemetry: &Telemetry,
    ) -> Self {
        let dialer = Dialer::new(config.connect_timeout())
            .with_keepalive(tcp_keepalive)
            .with_resolver(resolver.timed(phases.resolve.clone()))
            .timed(phases.dial.clone())
            .checking(check);
        let pool = config.enabled.then(|| {
            let pool_config = PoolConfig {
                tcp_keepalive,
                ..PoolConfig::from(config)
            };
            ConnectionPool::with_dialer(pool_config, dialer.clone(), Some(telemetry.clone()))
        });
        Self {
            dialer,
            pool,
            timeout: config.connect_timeout(),
        }
    }

    /// An upstream connection to `dest`, if `check` passes it: an address is checked
    /// as it is; a name on its own, or (when `check` needs them) with every address
    /// it resolves to, and then only those addresses are dialled.
    pub async fn connect(
        &self,
        dest: &TargetAddr,
        check: &dyn DestinationCheck,
    ) -> Result<UpstreamConn, ConnectError> {
        match dest {
            TargetAddr::Ip(addr) => {
                check
                    .check(dest, std::slice::from_ref(addr))
                    .map_err(|r| refused(dest, r))?;
                self.open(dest).await
            }
            TargetAddr::Domain(..) if !check.needs_addresses() => {
                check.check(dest, &[]).map_err(|r| refused(dest, r))?;
                self.open(dest).await
            }
            TargetAddr::Domain(..) => {
                check.check_name(dest).map_err(|r| refused(dest, r))?;
                // One deadline for the lookup and the dial together. Boxed: a lookup's
                // state is large, and every connection's task would otherwise be
                // sized for it (idle tunnels included).
                Box::pin(tokio::time::timeout(
                    self.timeout,
                    self.connect_checked(dest, check),
                ))
                .await
                .map_err(|_| ConnectError::Timeout {
                    dest: dest.to_string(),
                    after: self.timeout,
                })?
            }
        }
    }

    /// A name whose addresses `check` judges: a pooled connection whose address
    /// passes, else one resolution, judged whole, and a dial to its addresses.
    async fn connect_checked(
        &self,
        dest: &TargetAddr,
        check: &dyn DestinationCheck,
    ) -> Result<UpstreamConn, ConnectError> {
        // A pooled connection went to an address of an earlier resolution: it is
        // judged by where it actually goes, so a hit needs no lookup.
        let miss = match &self.pool {
            Some(pool) => match pool.lookup(dest, |peer| check.check(dest, &[peer]).is_ok()) {
                Lookup::Hit(conn) => return Ok(conn),
                Lookup::Miss(miss) => Some(miss),
            },
            None => None,
        };
        let addrs = self.dialer.resolver().resolve(dest).await?;
        check.check(dest, &addrs).map_err(|r| refused(dest, r))?;
        match (&self.pool, miss) {
            (Some(pool), Some(miss)) => pool.fill(dest, miss, Some(&addrs)).await,
            _ => self
                .dialer
                .dial_resolved(dest, &addrs)
                .await
                .map(UpstreamConn::direct),
        }
    }

    /// The pool's connection, or a dial.
    async fn open(&self, dest: &TargetAddr) -> Result<UpstreamConn, ConnectError> {
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

    /// The resolver the connector looks names up with (shared: one cache).
    pub fn resolver(&self) -> &Resolver {
        self.dialer.resolver()
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

fn refused(dest: &TargetAddr, refusal: Refusal) -> ConnectError {
    ConnectError::Refused {
        dest: dest.to_string(),
        refusal,
    }
}
