//! The SOCKS server: listener, per-connection stages and shutdown.
//!
//! `start` takes a bound listener and the parts every connection needs (`Context`,
//! built by the composition root, `app`); the accept loop hands each client to
//! `conn::serve`, which runs handshake → connector → relay.

mod bind;
mod client;
mod conn;
mod connect;
pub mod handshake;
mod listener;
mod outcome;
pub mod relay;
mod reply;
mod tls_relay;
mod trim;
mod tunnel;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tokio_util::task::TaskTracker;

use crate::access::{Access, OwnAddresses, PerIpLimit};
use crate::auth::Authenticator;
use crate::config::{Runtime, ServerConfig};
use crate::connector::Connector;
use crate::metrics::Metrics;
use crate::session::Sessions;
use crate::telemetry::Telemetry;
use crate::tls::Tls;

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
    /// Which name of a client certificate is the user (`socks_method = "certificate"`).
    pub certificate_user: crate::config::CertificateUser,
    pub telemetry: Telemetry,
    pub metrics: Arc<Metrics>,
    /// None when `[sessions] enabled = false`.
    pub sessions: Option<Arc<Sessions>>,
}

/// Starts accepting on `listeners` (bound by `listen_group`) with `ctx`, under the
/// limits of `config`. One listener: its accept loop and connections run on the
/// current runtime (`runtime = "shared"`). Several (`runtime = "per-core"`): each
/// gets a thread of its own running a single-threaded runtime, on which its
/// connections live from accept to close.
pub(crate) fn start(
    listeners: Vec<(std::net::TcpListener, Option<Arc<Tls>>)>,
    ctx: Context,
    config: &ServerConfig,
) -> std::io::Result<Running> {
    let ctx = Arc::new(ctx);
    let signals = listener::Signals::default();
    let peak = Arc::new(trim::Peak::default());
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let per_ip = PerIpLimit::new(config.per_ip_limit());
    let per_core = config.runtime == Runtime::PerCore;
    let mut accepting = Vec::new();
    let mut trackers = Vec::new();
    let mut threads = Vec::new();
    for (i, (tcp, tls)) in listeners.into_iter().enumerate() {
        let tracker = TaskTracker::new();
        let (done, finished) = oneshot::channel();
        let accept = Acceptor {
            tcp,
            keepalive: config.tcp_keepalive(),
            ctx: Arc::clone(&ctx),
            max_connections: config.max_connections,
            permits: Arc::clone(&permits),
            per_ip: per_ip.clone(),
            peak: Arc::clone(&peak),
            signals: signals.clone(),
            tracker: tracker.clone(),
            tls,
        };
        if per_core {
            threads.push(
                std::thread::Builder::new()
                    .name(format!("socks-worker-{i}"))
                    .spawn(move || accept.run_on_own_thread(done))?,
            );
        } else {
            let listener = accept.into_listener()?;
            tokio::spawn(async move {
                listener.run().await;
                let _ = done.send(());
            });
        }
        accepting.push(finished);
        trackers.push(tracker);
    }
    tokio::spawn(trim::after_bursts(
        Arc::clone(&ctx.metrics),
        peak,
        signals.stop_accepting.clone(),
    ));
    Ok(Running {
        ctx,
        signals,
        trackers,
        grace: config.shutdown_grace(),
        accepting,
        threads,
    })
}

/// A listener before it has a runtime: tokio sockets belong to the runtime that
/// registers them, so a per-core listener is converted on its own thread.
struct Acceptor {
    tcp: std::net::TcpListener,
    keepalive: Option<Duration>,
    ctx: Arc<Context>,
    max_connections: usize,
    permits: Arc<Semaphore>,
    per_ip: PerIpLimit,
    peak: Arc<trim::Peak>,
    signals: listener::Signals,
    tracker: TaskTracker,
    tls: Option<Arc<Tls>>,
}

impl Acceptor {
    /// Registers the socket with the current runtime.
    fn into_listener(self) -> std::io::Result<listener::Listener> {
        let tcp = TcpListener::from_std(self.tcp)?;
        listener::configure(&tcp, self.keepalive);
        Ok(listener::Listener {
            tcp,
            ctx: self.ctx,
            max_connections: self.max_connections,
            permits: self.permits,
            per_ip: self.per_ip,
            peak: self.peak,
            signals: self.signals,
            tracker: self.tracker,
            tls: self.tls,
        })
    }

    /// The body of a per-core thread: accepts until told to stop, then lives until
    /// its last connection has ended (dropping the runtime earlier would cut them).
    fn run_on_own_thread(self, done: oneshot::Sender<()>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                // Its listener is closed with it: the kernel stops giving it
                // clients, and the other threads' listeners take them.
                tracing::error!(error = %e, "could not start a connection thread's runtime");
                let _ = done.send(());
                return;
            }
        };
        let tracker = self.tracker.clone();
        runtime.block_on(async move {
            match self.into_listener() {
                Ok(listener) => listener.run().await,
                Err(e) => tracing::error!(error = %e, "could not register a listener"),
            }
            let _ = done.send(());
            tracker.close();
            tracker.wait().await;
        });
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
    TcpListener::from_std(bound(addr, false)?)
}

/// `count` listening sockets on the same address (the port the first one got,
/// when `addr` asks for port 0), which the kernel spreads clients over
/// (`SO_REUSEPORT`); one plain socket when `count` is 1. Not yet registered with
/// any runtime.
///
/// `SO_REUSEPORT` would also let another process of the same user join the group
/// and take a share of the clients unnoticed (a second RustSocks started by
/// mistake, say), so a plain socket is bound first: if anything listens there
/// already, that fails as it would without the group.
pub fn listen_group(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    if count <= 1 {
        return Ok(vec![bound(addr, false)?]);
    }
    let probe = bound(addr, false)?;
    let addr = probe.local_addr()?;
    drop(probe);
    (0..count).map(|_| bound(addr, true)).collect()
}

fn bound(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG as i32)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The accepting server. Dropping it without `shutdown` stops accepting and closes
/// its connections at once (per-core threads would otherwise outlive it).
pub(crate) struct Running {
    ctx: Arc<Context>,
    signals: listener::Signals,
    /// Each listener's connections.
    trackers: Vec<TaskTracker>,
    grace: Duration,
    /// One per listener, ready when its accept loop has ended.
    accepting: Vec<oneshot::Receiver<()>>,
    /// The per-core threads; empty with `runtime = "shared"`.
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.signals.stop_accepting.cancel();
        self.signals.close_connections.cancel();
    }
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
    pub(crate) async fn shutdown(mut self) -> ShutdownReport {
        self.signals.stop_accepting.cancel();
        for finished in std::mem::take(&mut self.accepting) {
            let _ = finished.await;
        }
        for t in &self.trackers {
            t.close();
        }
        let mut forced = 0;
        let mut ended = true;
        if tokio::time::timeout(self.grace, self.all_ended())
            .await
            .is_err()
        {
            forced = self.open();
            tracing::info!(
                open = forced,
                "grace period over, closing remaining connections"
            );
            self.signals.close_connections.cancel();
            // Every stage ends on that signal; the bound only guards against a bug
            // keeping the process alive forever.
            if tokio::time::timeout(Duration::from_secs(5), self.all_ended())
                .await
                .is_err()
            {
                ended = false;
                tracing::warn!(
                    open = self.open(),
                    "connections still open 5 s after being told to close; exiting anyway"
                );
            }
        }
        let threads = std::mem::take(&mut self.threads);
        if ended && !threads.is_empty() {
            // Each has seen its last connection end (or is about to); joining
            // lets its runtime's teardown finish before the pool is closed.
            let _ = tokio::task::spawn_blocking(move || {
                for t in threads {
                    let _ = t.join();
                }
            })
            .await;
        }
        self.ctx.connector.shutdown().await;
        ShutdownReport { forced }
    }

    async fn all_ended(&self) {
        for t in &self.trackers {
            t.wait().await;
        }
    }

    fn open(&self) -> usize {
        self.trackers.iter().map(TaskTracker::len).sum()
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
