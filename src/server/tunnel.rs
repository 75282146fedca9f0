//! A tunnel relayed as one recorded session: its record opens as the relay starts
//! (so it shows live and can be terminated), the relay runs, and how it ended
//! decides how its sockets close: a cut or a failure ends with a reset on both
//! sides, never a FIN that would make a truncated stream look whole.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::conn::Request;
use super::outcome::{Bytes, Outcome};
use super::relay::{self, RelayEnd, RelayOptions};
use crate::access::Check;
use crate::counters::Counters;
use crate::protocol::TargetAddr;

/// The two sockets of a tunnel about to relay, and what its record says of them.
pub(super) struct Tunnel<'a> {
    /// The upstream (CONNECT) or the inbound peer (BIND).
    pub other: &'a TcpStream,
    pub resolved: Option<SocketAddr>,
    pub from_pool: bool,
    /// Leave `other` untouched if the client closes before any byte moved.
    pub keep_unused: bool,
    /// The check that let this tunnel through, and what it judged: judged again
    /// if the rules were reloaded before the session was registered (a reload
    /// re-judges only the sessions registered when it runs).
    /// Taken by value and dropped once used, so that a long tunnel does not keep
    /// the rule set it was judged by alive.
    pub judged: Option<(Check<'a>, &'a TargetAddr)>,
}

/// Relays `t` for `r`'s client as one recorded session; the outcome closes the record.
pub(super) async fn relay_recorded(r: &Request<'_>, t: Tunnel<'_>) -> Outcome {
    let ctx = r.ctx;
    let session = r.open_session(t.resolved, t.from_pool);
    if let (Some(session), Some((check, dest))) = (&session, t.judged) {
        if let Some(why) = blocked_since(check, dest, t.resolved) {
            // Not a byte is relayed (not even what the client sent with its
            // request): the destination is blocked now.
            session.cut(format!("acl: {why}"));
            reset_on_close(r.client.tcp());
            reset_on_close(t.other);
            return Outcome::Ended {
                bytes: Bytes::default(),
                session: Some(Arc::clone(session)),
                end: Ok(RelayEnd::Terminated),
            };
        }
    }
    // Without session tracking the relay still counts, into counters of its own.
    let local = Counters::default();
    let counters = session.as_ref().map_or(&local, |s| &s.counters);
    let opts = RelayOptions {
        idle_timeout: ctx.relay_idle_timeout,
        cancel: r.cancel,
        terminate: session.as_ref().map(|s| &s.terminate),
        keep_unused_upstream: t.keep_unused,
    };
    ctx.metrics.sessions_active.inc();
    let end = relay::run(&r.client, t.other, &r.req.early_data, counters, opts).await;
    match &end {
        // One side reset or failed: pass the abort on instead of a clean FIN, so
        // the other side cannot take a cut-off stream for a complete one. First let
        // what was already relayed leave (bounded): a reset discards the send queue.
        Err(_) => {
            for socket in [r.client.tcp(), t.other] {
                let _ = drain_send_queue(socket, ABORT_DRAIN).await;
                reset_on_close(socket);
            }
        }
        // Cut by the proxy (end of the shutdown grace, or the API), maybe in the
        // middle of a transfer: both sides get a reset. No drain: the cut is meant
        // to be prompt.
        Ok(RelayEnd::Shutdown | RelayEnd::Terminated) => {
            reset_on_close(r.client.tcp());
            reset_on_close(t.other);
        }
        Ok(_) => {}
    }
    ctx.metrics.sessions_active.dec();
    Outcome::Ended {
        bytes: Bytes::from(counters),
        session,
        end,
    }
}

/// Why `dest` (connected at `resolved`) is blocked under rules reloaded since
/// `check` judged it, if it is. Registration and a reload's walk over the live
/// sessions can interleave; this closes the gap: a session registered after the
/// walk sees the new rules here.
fn blocked_since(
    check: Check<'_>,
    dest: &TargetAddr,
    resolved: Option<SocketAddr>,
) -> Option<String> {
    if check.is_current() {
        return None;
    }
    let renewed = check.renewed();
    let addrs: Vec<SocketAddr> = resolved.into_iter().collect();
    let verdict = renewed.verdict(dest, &addrs);
    (!verdict.allowed()).then(|| renewed.refusal(&verdict).reason.into_owned())
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
