//! One client connection: handshake → connector → relay, then the outcome in the
//! log, the metrics, the telemetry feed and the session record.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::handshake::{self, HandshakeError, Negotiated, Version};
use super::relay::{self, RelayEnd, RelayError, RelayOptions};
use super::Context;
use crate::connector::ConnectError;
use crate::counters::Counters;
use crate::protocol::socks5::{Command, ReplyCode};
use crate::protocol::TargetAddr;
use crate::session::{ActiveSession, Opening, Status};
use crate::telemetry::Signal;

#[derive(Debug, thiserror::Error)]
pub(super) enum ConnError {
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("command {0:?} is not supported")]
    Unsupported(Command),
    #[error("{source}")]
    Connect {
        dest: TargetAddr,
        #[source]
        source: ConnectError,
    },
    #[error("sending reply: {0}")]
    Reply(#[source] std::io::Error),
    #[error(transparent)]
    Relay(#[from] RelayError),
    #[error("BIND: no inbound connection within {0:?}")]
    BindTimeout(std::time::Duration),
}

pub(super) async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    ctx: &Context,
    cancel: &CancellationToken,
) {
    match run(client, peer, ctx, cancel).await {
        Ok(end) => debug!(client = %peer, ?end, "connection closed"),
        Err(e) => record_failure(ctx, peer, &e),
    }
}

async fn run(
    mut client: TcpStream,
    peer: SocketAddr,
    ctx: &Context,
    cancel: &CancellationToken,
) -> Result<RelayEnd, ConnError> {
    // Inherited from the listener on Linux (see `listener::configure`).
    #[cfg(not(target_os = "linux"))]
    let _ = client.set_nodelay(true);
    let req = tokio::select! {
        r = tokio::time::timeout(ctx.handshake_timeout, handshake::negotiate(&mut client, peer.ip(), &ctx.auth)) => {
            r.map_err(|_| ConnError::HandshakeTimeout)??
        }
        () = cancel.cancelled() => return Ok(RelayEnd::Shutdown),
    };
    match (req.command, req.version) {
        (Command::Connect, _) => connect(client, peer, req, ctx, cancel).await,
        (Command::UdpAssociate, Version::Socks5) => {
            super::udp::associate(client, peer, req, ctx, cancel).await
        }
        (Command::Bind, _) => super::bind::serve(client, peer, req, ctx, cancel).await,
        (command, _) => {
            record_refusal(
                ctx,
                opening(&req, peer),
                Status::Rejected,
                "command not supported",
            );
            // A client that already left cannot read the reply; what is recorded
            // and counted is still the refusal, not the failed write.
            let _ = reply(&client, &req, ReplyCode::CommandNotSupported, None).await;
            Err(ConnError::Unsupported(command))
        }
    }
}

async fn connect(
    client: TcpStream,
    peer: SocketAddr,
    req: Negotiated,
    ctx: &Context,
    cancel: &CancellationToken,
) -> Result<RelayEnd, ConnError> {
    let started = Instant::now();
    // A dial can take up to connect_timeout_ms: at shutdown it is abandoned rather
    // than allowed to hold the process past the grace period.
    let dialled = tokio::select! {
        r = ctx.connector.connect(&req.dest) => r,
        () = cancel.cancelled() => return Ok(RelayEnd::Shutdown),
    };
    let upstream = match dialled {
        Ok(s) => s,
        Err(source) => {
            // Refused by a rule is not a failure of the upstream.
            let status = match source {
                ConnectError::Refused { .. } => Status::Rejected,
                _ => Status::Failed,
            };
            record_refusal(ctx, opening(&req, peer), status, &source.to_string());
            let code = super::reply::for_connect_error(&source);
            let _ = reply(&client, &req, code, None).await;
            return Err(ConnError::Connect {
                dest: req.dest,
                source,
            });
        }
    };
    let connect_time = if upstream.from_pool() {
        &ctx.metrics.connect_pool_hit
    } else {
        &ctx.metrics.connect_new_dial
    };
    connect_time.observe(started.elapsed().as_secs_f64());
    let bind = upstream.stream().local_addr().ok();
    reply(&client, &req, ReplyCode::Succeeded, bind).await?;
    debug!(client = %peer, dest = %req.dest, user = ?req.user, pooled = upstream.from_pool(), "tunnel open");

    let tunnel = Tunnel {
        client: &client,
        other: upstream.stream(),
        // An IP destination is its own resolution: no getpeername(2) per session.
        resolved: match &req.dest {
            TargetAddr::Ip(addr) => Some(*addr),
            TargetAddr::Domain(..) => upstream.stream().peer_addr().ok(),
        },
        from_pool: upstream.from_pool(),
        keep_unused: upstream.is_recyclable(),
    };
    let end = relay_recorded(ctx, &req, peer, tunnel, cancel).await;
    if matches!(end, Ok(RelayEnd::Unused)) {
        // Not a byte went either way: the connection is as clean as a new one.
        ctx.connector.recycle(upstream);
    }
    Ok(end?)
}

/// The two sockets of a tunnel about to relay, and what its record says of them.
pub(super) struct Tunnel<'a> {
    pub client: &'a TcpStream,
    /// The upstream (CONNECT) or the inbound peer (BIND).
    pub other: &'a TcpStream,
    pub resolved: Option<SocketAddr>,
    pub from_pool: bool,
    /// Leave `other` untouched if the client closes before any byte moved.
    pub keep_unused: bool,
}

/// Relays a tunnel as one recorded session: opens its record, relays, counts its
/// bytes and closes the record with how it ended.
pub(super) async fn relay_recorded(
    ctx: &Context,
    req: &Negotiated,
    peer: SocketAddr,
    t: Tunnel<'_>,
    cancel: &CancellationToken,
) -> Result<RelayEnd, RelayError> {
    let session = open_session(ctx, req, peer, t.resolved, t.from_pool);
    // Without session tracking the relay still counts, into counters of its own.
    let local = Counters::default();
    let counters = session.as_ref().map_or(&local, |s| &s.counters);
    let opts = RelayOptions {
        idle_timeout: ctx.relay_idle_timeout,
        cancel,
        terminate: session.as_ref().map(|s| &s.terminate),
        keep_unused_upstream: t.keep_unused,
    };
    ctx.metrics.sessions_active.inc();
    let end = relay::run(t.client, t.other, &req.early_data, counters, opts).await;
    match &end {
        // One side reset or failed: pass the abort on instead of a clean FIN, so
        // the other side cannot take a cut-off stream for a complete one. First let
        // what was already relayed leave (bounded): a reset discards the send queue.
        Err(_) => {
            for socket in [t.client, t.other] {
                let _ = drain_send_queue(socket, ABORT_DRAIN).await;
                reset_on_close(socket);
            }
        }
        // Cut by the proxy (end of the shutdown grace, or the API), maybe in the
        // middle of a transfer: both sides get a reset, never a FIN that would make
        // a truncated stream look whole. No drain: the cut is meant to be prompt.
        Ok(RelayEnd::Shutdown | RelayEnd::Terminated) => {
            reset_on_close(t.client);
            reset_on_close(t.other);
        }
        Ok(_) => {}
    }
    ctx.metrics.sessions_active.dec();
    finish(ctx, session.as_ref(), counters, &end);
    end
}

/// The socket a BIND or UDP ASSOCIATE needs; if it could not be opened, the client
/// gets its failure reply and the error is returned.
pub(super) async fn opened<T>(
    client: &TcpStream,
    req: &Negotiated,
    socket: std::io::Result<T>,
) -> Result<T, ConnError> {
    match socket {
        Ok(s) => Ok(s),
        Err(e) => {
            reply(client, req, ReplyCode::GeneralFailure, None).await?;
            Err(ConnError::Reply(e))
        }
    }
}

/// Makes the socket's close send a reset (SO_LINGER 0) instead of a FIN.
fn reset_on_close(socket: &TcpStream) {
    let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
}

/// How long an aborting tunnel waits for bytes it already relayed to be sent and
/// acknowledged before it resets the connection.
const ABORT_DRAIN: Duration = Duration::from_secs(2);

/// How a wait for a send queue to empty ended.
#[derive(Debug, PartialEq, Eq)]
enum Drained {
    Empty,
    GaveUp,
}

/// Waits until the socket's send queue (sent but unacknowledged, and unsent bytes)
/// is empty, or `limit` has passed. A queue that cannot be read counts as empty, and
/// so does that of a socket that was reset (it has no peer any more): the reset
/// discarded the queue, though SIOCOUTQ goes on counting its unacknowledged bytes
/// (waiting on it told the other side of a reset tunnel 2 s late; found with the
/// fault-injection wire).
async fn drain_send_queue(socket: &TcpStream, limit: Duration) -> Drained {
    let deadline = tokio::time::Instant::now() + limit;
    while send_queue_len(socket) > 0 && socket.peer_addr().is_ok() {
        if tokio::time::Instant::now() >= deadline {
            return Drained::GaveUp;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Drained::Empty
}

#[cfg(target_os = "linux")]
fn send_queue_len(socket: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int through the valid pointer.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if rc == 0 {
        usize::try_from(queued).unwrap_or(0)
    } else {
        0
    }
}

#[cfg(not(target_os = "linux"))]
fn send_queue_len(_: &TcpStream) -> usize {
    0
}

/// Registers a session that is about to relay, when sessions are tracked.
pub(super) fn open_session(
    ctx: &Context,
    req: &Negotiated,
    peer: SocketAddr,
    resolved: Option<SocketAddr>,
    from_pool: bool,
) -> Option<Arc<ActiveSession>> {
    let sessions = ctx.sessions.as_ref()?;
    Some(sessions.open(Opening {
        resolved,
        from_pool,
        ..opening(req, peer)
    }))
}

/// Counts a finished relay's bytes and closes its session record.
pub(super) fn finish(
    ctx: &Context,
    session: Option<&Arc<ActiveSession>>,
    counters: &Counters,
    end: &Result<RelayEnd, RelayError>,
) {
    count_bytes(ctx, counters);
    if let (Some(sessions), Some(session)) = (&ctx.sessions, session) {
        let (status, reason) = outcome(end);
        sessions.close(session, status, reason);
    }
}

/// Logs, counts and reports a connection that did not end normally.
fn record_failure(ctx: &Context, peer: SocketAddr, e: &ConnError) {
    let m = &ctx.metrics;
    let handshake_failure = |reason| {
        m.handshake_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    };
    let rejected = |reason| {
        m.connections_rejected
            .get_or_create(&[("reason", reason)])
            .inc();
    };
    match e {
        ConnError::Handshake(HandshakeError::Auth { user, source }) => {
            warn!(client = %peer, user = %user, reason = %source, "authentication failed");
            m.auth_failures.inc();
            rejected("auth_failed");
            ctx.telemetry.emit(Signal::AuthFailed {
                client: peer.ip(),
                user: user.clone(),
            });
            let opening = Opening {
                user: Some(user.clone()),
                ..refused_before_request(peer, "socks5")
            };
            record_refusal(ctx, opening, Status::Rejected, "authentication failed");
        }
        ConnError::Handshake(HandshakeError::NoAcceptableMethod) => {
            rejected("no_acceptable_method");
            let opening = refused_before_request(peer, "socks5");
            record_refusal(
                ctx,
                opening,
                Status::Rejected,
                "no acceptable authentication method offered",
            );
        }
        ConnError::Handshake(HandshakeError::Socks4NeedsAuth) => {
            rejected("socks4_needs_auth");
            let opening = refused_before_request(peer, "socks4");
            record_refusal(
                ctx,
                opening,
                Status::Rejected,
                "SOCKS4 refused: username/password required",
            );
        }
        ConnError::Unsupported(_) => rejected("command_not_supported"),
        ConnError::HandshakeTimeout => handshake_failure("timeout"),
        ConnError::Handshake(HandshakeError::Closed) => handshake_failure("client_closed"),
        ConnError::Handshake(HandshakeError::Protocol(_) | HandshakeError::TooLong) => {
            handshake_failure("malformed")
        }
        ConnError::Handshake(HandshakeError::Io(_)) => handshake_failure("io_error"),
        ConnError::Connect {
            dest,
            source: ConnectError::Refused { refusal, .. },
        } => {
            warn!(client = %peer, %dest, reason = refusal.reason, "refused a destination");
            rejected(refusal.label);
            return;
        }
        ConnError::Connect { dest, source } => {
            info!(client = %peer, error = %e, "upstream connect failed");
            let reply = super::reply::label(super::reply::for_connect_error(source));
            m.upstream_connect_failures
                .get_or_create(&[("reply", reply)])
                .inc();
            ctx.telemetry.emit(Signal::UpstreamConnectFailed {
                destination: dest.to_string(),
                error: source.to_string(),
            });
            return;
        }
        ConnError::Reply(_) | ConnError::Relay(_) | ConnError::BindTimeout(_) => {}
    }
    debug!(client = %peer, error = %e, "connection ended with an error");
}

/// A session refused before its request was read: no destination or command.
fn refused_before_request(peer: SocketAddr, protocol: &'static str) -> Opening {
    Opening {
        user: None,
        client: peer,
        destination: None,
        resolved: None,
        command: None,
        protocol,
        from_pool: false,
    }
}

fn record_refusal(ctx: &Context, opening: Opening, status: Status, reason: &str) {
    if let Some(sessions) = &ctx.sessions {
        sessions.refused(opening, status, reason.to_owned());
    }
}

fn opening(req: &Negotiated, peer: SocketAddr) -> Opening {
    Opening {
        user: req.user.clone(),
        client: peer,
        destination: Some(req.dest.to_string()),
        resolved: None,
        command: Some(match req.command {
            Command::Connect => "connect",
            Command::Bind => "bind",
            Command::UdpAssociate => "udp_associate",
        }),
        protocol: match req.version {
            Version::Socks4 => "socks4",
            Version::Socks5 => "socks5",
        },
        from_pool: false,
    }
}

/// The status and close reason of a tunnel that ran.
fn outcome(end: &Result<RelayEnd, RelayError>) -> (Status, String) {
    let closed = |reason: &str| (Status::Closed, reason.to_owned());
    match end {
        Ok(RelayEnd::Completed) => closed("completed"),
        Ok(RelayEnd::Unused) => closed("client closed before any data"),
        Ok(RelayEnd::IdleTimeout) => closed("idle timeout"),
        Ok(RelayEnd::Shutdown) => closed("server shutdown"),
        Ok(RelayEnd::Terminated) => (Status::Terminated, "terminated via the API".to_owned()),
        Err(e) => (Status::Closed, e.to_string()),
    }
}

fn count_bytes(ctx: &Context, counters: &Counters) {
    use std::sync::atomic::Ordering::Relaxed;
    let m = &ctx.metrics;
    m.bytes_client_to_upstream
        .inc_by(counters.client_to_upstream.load(Relaxed));
    m.bytes_upstream_to_client
        .inc_by(counters.upstream_to_client.load(Relaxed));
}

/// Sends the reply for `req`'s protocol; BND is all zeros when `bind` is None.
pub(super) async fn reply(
    client: &TcpStream,
    req: &Negotiated,
    code: ReplyCode,
    bind: Option<SocketAddr>,
) -> Result<(), ConnError> {
    let bytes = handshake::encode_reply(req.version, code, bind.unwrap_or_else(unspecified));
    relay::write_all(client, &bytes)
        .await
        .map_err(ConnError::Reply)
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A socket whose peer reset it while it still had bytes queued is not waited
    /// on: the reset threw those bytes away.
    #[tokio::test]
    async fn a_reset_socket_is_not_waited_on() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut ours, _) = listener.accept().await.unwrap();
        // Fill the queue: the peer never reads.
        let chunk = vec![1u8; 64 * 1024];
        for _ in 0..256 {
            match tokio::time::timeout(Duration::from_millis(100), ours.write_all(&chunk)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        assert!(send_queue_len(&ours) > 0, "nothing queued");
        assert_eq!(
            drain_send_queue(&ours, Duration::from_millis(100)).await,
            Drained::GaveUp,
            "a live peer that does not read is waited on"
        );
        reset_on_close(&peer);
        drop(peer);
        for _ in 0..200 {
            if ours.peer_addr().is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            drain_send_queue(&ours, Duration::from_secs(2)).await,
            Drained::Empty
        );
    }
}
