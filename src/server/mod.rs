//! The SOCKS server: listener, per-connection stages and shutdown.
//!
//! `start` takes a bound listener and the parts every connection needs (`Context`,
//! built by the composition root, `app`); the accept loop hands each client to
//! `conn::serve`, which runs handshake → connector → relay.

mod bind;
mod conn;
mod connect;
pub mod handshake;
mod listener;
mod outcome;
pub mod relay;
mod reply;
mod trim;
mod tunnel;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::access::{Access, OwnAddresses, PerIpLimit};
use crate::auth::Authenticator;
use crate::config::ServerConfig;
use crate::connector::Connector;
use crate::metrics::Metrics;
use crate::session::Sessions;
use crate::telemetry::Telemetry;

/// Everything a connection needs, shared by all of them.
pub(crate) struct Context {
    pub auth: Authenticator,
    pub connector: Connector,
    /// The access rules in force (reloadable) and the destination guard.
    pub access: Arc<Access>,
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

/// Starts accepting on `tcp` (already bound, see `listen`) with `ctx`, under the
/// limits of `config`.
pub(crate) fn start(tcp: TcpListener, ctx: Context, config: &ServerConfig) -> Running {
    listener::configure(&tcp, config.tcp_keepalive());
    let ctx = Arc::new(ctx);
    let signals = listener::Signals::default();
    let tracker = TaskTracker::new();
    let peak = Arc::new(trim::Peak::default());
    let accept = listener::Listener {
        tcp,
        ctx: Arc::clone(&ctx),
        max_connections: config.max_connections,
        per_ip: PerIpLimit::new(config.per_ip_limit()),
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
    Running {
        ctx,
        signals,
        tracker,
        grace: config.shutdown_grace(),
        accept_task,
    }
}

/// Clients a listener lets the kernel queue before it accepts them (capped by
/// `net.core.somaxconn`). `TcpListener::bind` uses 128: at 200 clients connecting at
/// once the queue overflowed and the kernel dropped SYNs, each a 1 s retransmit for
/// that client (`nstat`: TcpExtListenOverflows). Also where clients wait while
/// `max_connections` is reached.
const LISTEN_BACKLOG: u32 = 4096;

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

/// The accepting server. Dropping it does not stop it; call `shutdown`.
pub(crate) struct Running {
    ctx: Arc<Context>,
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

impl Running {
    /// Stops accepting, lets open connections finish for up to the grace period,
    /// then closes the rest, and finally the pool's idle connections.
    pub(crate) async fn shutdown(self) -> ShutdownReport {
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
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
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
