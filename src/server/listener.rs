//! Listener stage: accepts clients within `max_connections` and hands each one to
//! its own task; stops on shutdown.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{conn, Context};
use crate::access::PerIpLimit;
use crate::telemetry::Signal;
use crate::tls::Tls;

/// Options every client connection needs, set once on the listening socket: Linux
/// copies TCP_NODELAY and the keepalive settings to each accepted socket, which
/// saves those system calls per connection. Failing leaves working, slower or
/// less watched, connections, so it is logged, not fatal.
pub(super) fn configure(listener: &TcpListener, keepalive: Option<Duration>) {
    let sock = socket2::SockRef::from(listener);
    if let Err(e) = sock.set_nodelay(true) {
        tracing::warn!(error = %e, "could not set TCP_NODELAY on the listener");
    }
    if let Some(idle) = keepalive {
        if let Err(e) = crate::connector::set_keepalive(sock, idle) {
            tracing::warn!(error = %e, "could not set TCP keepalive on the listener");
        }
    }
}

/// An IPv4 address as IPv4 even when a dual-stack (`::`) socket reports it in its
/// IPv4-mapped IPv6 form (`::ffff:a.b.c.d`): compared with a client's IPv4 addresses
/// and sent to IPv4-only clients, the mapped form would match nothing and be unusable.
pub(super) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// How long to pause after an accept error such as EMFILE, so that a process out of
/// descriptors does not spin; connections closing meanwhile free some.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Clone, Default)]
pub(super) struct Signals {
    /// Cancelled first: no new connections.
    pub stop_accepting: CancellationToken,
    /// Cancelled when the grace period ends: open tunnels are closed.
    pub close_connections: CancellationToken,
}

pub(super) struct Listener {
    pub tcp: TcpListener,
    pub ctx: Arc<Context>,
    pub max_connections: usize,
    /// `max_connections` places, shared by every listener of the server.
    pub permits: Arc<Semaphore>,
    pub per_ip: PerIpLimit,
    pub peak: Arc<super::trim::Peak>,
    pub signals: Signals,
    pub tracker: TaskTracker,
    /// Set when this listener speaks TLS.
    pub tls: Option<Arc<Tls>>,
}

impl Listener {
    pub async fn run(self) {
        let permits = Arc::clone(&self.permits);
        let stop = &self.signals.stop_accepting;
        // Set while accept keeps failing, so a long EMFILE spell logs once, not
        // ten times a second.
        let mut failing = false;
        loop {
            let Some(permit) = self.acquire_slot(&permits).await else {
                return;
            };
            let accepted = tokio::select! {
                r = self.tcp.accept() => r,
                () = stop.cancelled() => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("accepting again");
                    }
                    self.spawn_connection(stream, canonical(peer), permit);
                }
                Err(e) if is_per_connection(&e) => {
                    tracing::debug!(error = %e, "accept: connection failed before it was accepted");
                }
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, "accept failed; backing off until it succeeds");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Takes a connection slot before accepting: at the limit, clients wait in the
    /// kernel's backlog instead of being accepted and closed in a loop. `None` on
    /// shutdown.
    async fn acquire_slot(&self, permits: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = Arc::clone(permits).try_acquire_owned() {
            return Some(p);
        }
        let limit = self.max_connections;
        tracing::warn!(limit, "max_connections reached; pausing accept");
        self.ctx
            .telemetry
            .emit(Signal::MaxConnectionsReached { limit });
        tokio::select! {
            p = Arc::clone(permits).acquire_owned() => p.ok(),
            () = self.signals.stop_accepting.cancelled() => None,
        }
    }

    fn spawn_connection(&self, stream: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit) {
        let ctx = Arc::clone(&self.ctx);
        ctx.metrics.connections_accepted.inc();
        let Some(per_ip) = self.per_ip.try_acquire(peer.ip()) else {
            // Closed at once, with a reset: nothing read, no TIME_WAIT kept here.
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            drop(stream);
            ctx.metrics
                .connections_rejected
                .get_or_create(&[("reason", "per_ip_limit")])
                .inc();
            ctx.telemetry.emit(Signal::PerIpLimitReached {
                client: peer.ip(),
                limit: self.per_ip.limit(),
            });
            return;
        };
        let cancel = self.signals.close_connections.clone();
        let tls = self.tls.clone();
        self.peak.saw(ctx.metrics.connections_active.inc() + 1);
        self.tracker.spawn(async move {
            conn::serve(stream, peer, &ctx, &cancel, tls.as_deref()).await;
            // Places first, then the gauge: whoever sees the gauge drop may connect.
            drop(per_ip);
            drop(permit);
            ctx.metrics.connections_active.dec();
        });
    }
}

/// Errors that concern one aborted connection, not the listener.
pub(super) fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_and_keepalive_from_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        configure(&listener, Some(Duration::from_secs(77)));
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let sock = socket2::SockRef::from(&accepted);
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY not inherited");
        assert!(sock.keepalive().unwrap(), "SO_KEEPALIVE not inherited");
        assert_eq!(sock.keepalive_time().unwrap(), Duration::from_secs(77));
    }
}
