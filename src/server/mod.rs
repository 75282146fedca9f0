//! The SOCKS server: listener, per-connection stages and shutdown.
//!
//! `Server::start` binds the listener and returns a handle; the accept loop hands
//! each client to `conn::serve`, which runs handshake → connector → relay.

mod conn;
pub mod handshake;
mod listener;
pub mod relay;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthError, Authenticator};
use crate::config::{Config, ConfigError};
use crate::pool::{ConnectionPool, Connector};
use crate::telemetry::Telemetry;

/// Events kept in the telemetry feed.
const TELEMETRY_CAPACITY: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Everything a connection needs, shared by all of them.
pub(crate) struct Context {
    pub auth: Authenticator,
    pub connector: Connector,
    pub handshake_timeout: Duration,
    pub relay_idle_timeout: Option<Duration>,
}

pub struct Server;

impl Server {
    /// Validates `config`, binds the SOCKS listener and starts accepting. Fails before
    /// binding anything if the configuration is invalid.
    pub async fn start(config: Config) -> Result<ServerHandle, StartError> {
        config.validate()?;
        let telemetry = Telemetry::start(TELEMETRY_CAPACITY);
        let ctx = Arc::new(Context {
            auth: Authenticator::from_config(&config.auth)?,
            connector: Connector::new(&config.server.pool, &telemetry),
            handshake_timeout: config.server.handshake_timeout(),
            relay_idle_timeout: config.server.relay_idle_timeout(),
        });
        let addr = config.server.bind();
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let socks_addr = tcp
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let signals = listener::Signals::default();
        let tracker = TaskTracker::new();
        let accept = listener::Listener {
            tcp,
            ctx: Arc::clone(&ctx),
            max_connections: config.server.max_connections,
            signals: signals.clone(),
            tracker: tracker.clone(),
        };
        let accept_task = tokio::spawn(accept.run());
        tracing::info!(socks = %socks_addr, "SOCKS listener ready");
        Ok(ServerHandle {
            socks_addr,
            ctx,
            telemetry,
            signals,
            tracker,
            grace: config.server.shutdown_grace(),
            accept_task,
        })
    }
}

/// A running server. Dropping it does not stop the server; call `shutdown`.
pub struct ServerHandle {
    socks_addr: SocketAddr,
    ctx: Arc<Context>,
    telemetry: Telemetry,
    signals: listener::Signals,
    tracker: TaskTracker,
    grace: Duration,
    accept_task: JoinHandle<()>,
}

/// What a graceful shutdown had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections still open when the grace period ran out, closed by force.
    pub forced: usize,
}

impl ServerHandle {
    /// The address the SOCKS listener is bound to (useful with port 0).
    pub fn socks_addr(&self) -> SocketAddr {
        self.socks_addr
    }

    /// The upstream connection pool, when `server.pool.enabled`.
    pub fn pool(&self) -> Option<&ConnectionPool> {
        self.ctx.connector.pool()
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Stops accepting, lets open connections finish for up to the grace period,
    /// then closes the rest, and finally the pool's idle connections.
    pub async fn shutdown(self) -> ShutdownReport {
        self.signals.stop_accepting.cancel();
        let _ = self.accept_task.await;
        self.tracker.close();
        let mut forced = 0;
        if tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_err()
        {
            forced = self.tracker.len();
            tracing::info!(
                open = forced,
                "grace period over, closing remaining connections"
            );
            self.signals.close_connections.cancel();
            self.tracker.wait().await;
        }
        self.ctx.connector.shutdown().await;
        ShutdownReport { forced }
    }
}
