//! The SOCKS server: listener, per-connection stages and shutdown.
//!
//! `Server::start` binds the listener and returns a handle; the accept loop hands
//! each client to `conn::serve`, which runs handshake → connector → relay.

mod bind;
mod conn;
pub mod handshake;
mod listener;
pub mod relay;
mod reply;
mod trim;
mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::{OwnAddresses, PerIpLimit};
use crate::api::{self, ApiDeps};
use crate::auth::{self, AuthError, Authenticator};
use crate::config::{Config, ConfigError};
use crate::connector::{ConnectionPool, Connector};
use crate::metrics::Metrics;
use crate::session::{Sessions, StoreError};
use crate::telemetry::{Signal, Telemetry};

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
    #[error(transparent)]
    Sessions(#[from] StoreError),
}

/// Everything a connection needs, shared by all of them.
pub(crate) struct Context {
    pub auth: Authenticator,
    pub connector: Connector,
    /// The proxy's listening addresses: never a destination (TCP or UDP).
    pub own: OwnAddresses,
    pub handshake_timeout: Duration,
    pub relay_idle_timeout: Option<Duration>,
    pub external_address: Option<std::net::IpAddr>,
    pub bind_timeout: Duration,
    pub udp_idle_timeout: Duration,
    pub telemetry: Telemetry,
    pub metrics: Arc<Metrics>,
    /// None when `[sessions] enabled = false`.
    pub sessions: Option<Arc<Sessions>>,
}

pub struct Server;

impl Server {
    /// Validates `config`, binds the SOCKS listener (and the API's) and starts
    /// accepting. Fails before binding anything if the configuration is invalid.
    pub async fn start(config: Config) -> Result<ServerHandle, StartError> {
        config.validate()?;
        let api_token = config.api_token()?;
        let auth = Authenticator::from_config(&config.auth)?;
        let telemetry = Telemetry::start(&config.telemetry);
        for message in config.warnings() {
            telemetry.emit(Signal::ConfigWarning { message });
        }
        let tcp = bind(config.server.bind()).await?;
        listener::configure(&tcp, config.server.tcp_keepalive());
        let api_tcp = match config.api.enabled {
            true => Some(bind(config.api.bind()).await?),
            false => None,
        };
        let socks_addr = local_addr(&tcp, config.server.bind())?;
        let api_addr = match &api_tcp {
            Some(l) => Some(local_addr(l, config.api.bind())?),
            None => None,
        };
        // What the proxy listens on is never a destination (see access::OwnAddresses).
        let own = OwnAddresses::new([Some(socks_addr), api_addr].into_iter().flatten());
        let connector = Connector::new(
            &config.server.pool,
            config.server.tcp_keepalive(),
            Arc::new(own.clone()),
            &telemetry,
        );
        let metrics = Arc::new(Metrics::new(connector.pool().cloned()));
        auth.report_to(auth::Report {
            telemetry: telemetry.clone(),
            metrics: Arc::clone(&metrics),
        });
        let sessions = match config.sessions.enabled {
            true => Some(Arc::new(Sessions::start(
                &config.sessions,
                telemetry.clone(),
                &metrics,
            )?)),
            false => None,
        };
        let ctx = Arc::new(Context {
            auth,
            connector,
            own,
            handshake_timeout: config.server.handshake_timeout(),
            relay_idle_timeout: config.server.relay_idle_timeout(),
            external_address: config.server.external_address,
            bind_timeout: config.server.bind_timeout(),
            udp_idle_timeout: config.server.udp_idle_timeout(),
            telemetry: telemetry.clone(),
            metrics: Arc::clone(&metrics),
            sessions: sessions.clone(),
        });

        let api_shutdown = CancellationToken::new();
        let api_task = match (api_tcp, api_addr) {
            (Some(api_tcp), Some(addr)) => {
                let deps = ApiDeps {
                    pool: api::PoolView::new(
                        ctx.connector.pool().cloned(),
                        config.server.pool.clone(),
                    ),
                    telemetry: api::TelemetryView::new(
                        telemetry.clone(),
                        config.telemetry.max_events,
                    ),
                    metrics: api::MetricsView::new(metrics),
                    terminate: sessions.clone().map(api::Terminate::new),
                    sessions: sessions.map(api::SessionsView::new),
                    token: api_token,
                };
                let task = tokio::spawn(api::serve(api_tcp, deps, api_shutdown.clone()));
                tracing::info!(api = %addr, "management API ready");
                Some(task)
            }
            _ => None,
        };

        let signals = listener::Signals::default();
        let tracker = TaskTracker::new();
        let peak = Arc::new(trim::Peak::default());
        let accept = listener::Listener {
            tcp,
            ctx: Arc::clone(&ctx),
            max_connections: config.server.max_connections,
            per_ip: PerIpLimit::new(config.server.per_ip_limit()),
            peak: Arc::clone(&peak),
            signals: signals.clone(),
            tracker: tracker.clone(),
        };
        let accept_task = tokio::spawn(accept.run());
        tokio::spawn(trim::after_bursts(
            Arc::clone(&ctx.metrics),
            peak,
            signals.stop_accepting.clone(),
        ));
        tracing::info!(socks = %socks_addr, "SOCKS listener ready");
        Ok(ServerHandle {
            socks_addr,
            api_addr,
            ctx,
            telemetry,
            signals,
            tracker,
            grace: config.server.shutdown_grace(),
            accept_task,
            api_shutdown,
            api_task,
        })
    }
}

/// Clients a listener lets the kernel queue before it accepts them (capped by
/// `net.core.somaxconn`). `TcpListener::bind` uses 128: at 200 clients connecting at
/// once the queue overflowed and the kernel dropped SYNs, each a 1 s retransmit for
/// that client (`nstat`: TcpExtListenOverflows). Also where clients wait while
/// `max_connections` is reached.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    listen(addr).map_err(|source| StartError::Bind { addr, source })
}

/// The address `listener` was bound to for `asked` (the port is known only now when
/// `asked` named port 0).
fn local_addr(listener: &TcpListener, asked: SocketAddr) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Bind {
        addr: asked,
        source,
    })
}

/// A listening socket on `addr` with an accept queue of `LISTEN_BACKLOG` (the load
/// generator's targets use it too, for the same reason).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A running server. Dropping it does not stop the server; call `shutdown`.
pub struct ServerHandle {
    socks_addr: SocketAddr,
    api_addr: Option<SocketAddr>,
    ctx: Arc<Context>,
    telemetry: Telemetry,
    signals: listener::Signals,
    tracker: TaskTracker,
    grace: Duration,
    accept_task: JoinHandle<()>,
    api_shutdown: CancellationToken,
    api_task: Option<JoinHandle<std::io::Result<()>>>,
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

    /// The address the management API listens on, when `api.enabled`.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
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
            // Every stage ends on that signal; the bound only guards against a bug
            // keeping the process alive forever.
            if tokio::time::timeout(Duration::from_secs(5), self.tracker.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    open = self.tracker.len(),
                    "connections still open 5 s after being told to close; exiting anyway"
                );
            }
        }
        self.ctx.connector.shutdown().await;
        if let Some(sessions) = self.ctx.sessions.clone() {
            // Writes every queued record before returning.
            let _ = tokio::task::spawn_blocking(move || sessions.shutdown()).await;
        }
        self.api_shutdown.cancel();
        if let Some(task) = self.api_task {
            let _ = task.await;
        }
        ShutdownReport { forced }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 300 clients connecting at once to a listener that has not accepted any yet
    /// all complete their handshake: the queue holds them. With a backlog of 128 the
    /// kernel dropped the SYNs past it, and those clients waited a 1 s retransmit.
    #[tokio::test]
    async fn a_burst_of_connects_fits_in_the_accept_queue() {
        // The kernel caps the backlog at somaxconn (128 before Linux 5.4).
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok());
        if somaxconn.is_some_and(|n| n < 300) {
            eprintln!("skipped: net.core.somaxconn is {somaxconn:?}, below the burst");
            return;
        }
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connects: Vec<_> = (0..300)
            .map(|_| {
                tokio::spawn(async move {
                    // Well under the 1 s SYN retransmit: a dropped SYN fails this.
                    tokio::time::timeout(
                        Duration::from_millis(700),
                        tokio::net::TcpStream::connect(addr),
                    )
                    .await
                })
            })
            .collect();
        let mut held = Vec::new();
        for c in connects {
            let stream = c.await.unwrap().expect("a SYN was dropped").unwrap();
            held.push(stream);
        }
        assert_eq!(held.len(), 300);
        drop(listener);
    }
}
