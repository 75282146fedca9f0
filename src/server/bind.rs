//! BIND (RFC 1928): listen for one inbound connection on behalf of the client, as
//! active-mode FTP needs. First reply: where we listen. Second reply: who connected.
//! Then the two connections are relayed like a CONNECT.

use std::net::IpAddr;

use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use super::conn::{ConnError, Request};
use super::listener::{canonical, is_per_connection};
use super::outcome::Outcome;
use super::tunnel::{relay_recorded, Tunnel};
use crate::config::AclCommand;
use crate::connector::ConnectError;
use crate::protocol::socks5::ReplyCode;
use crate::protocol::TargetAddr;

pub(super) async fn serve(r: Request<'_>) -> Outcome {
    let ctx = r.ctx;
    let ip = match ctx.external_address.map_or_else(|| r.local_ip(), Ok) {
        Ok(ip) => ip,
        Err(e) => return Outcome::Broken(e),
    };
    let bound = r.announce(TcpListener::bind((ip, 0)).await, TcpListener::local_addr);
    let listener = match bound.await {
        Ok((listener, _)) => listener,
        Err(outcome) => return outcome,
    };
    // RFC 1928: DST.ADDR names the host expected to connect; all zeros, anyone.
    let expected: Option<IpAddr> = match &r.req.dest {
        TargetAddr::Ip(a) if !a.ip().is_unspecified() => Some(a.ip().to_canonical()),
        _ => None,
    };
    let deadline = tokio::time::Instant::now() + ctx.bind_timeout;
    let (inbound, from) = loop {
        let accepted = tokio::select! {
            a = tokio::time::timeout_at(deadline, listener.accept()) => a,
            () = client_gone(r.client.tcp()) => return Outcome::ClientLeft,
            () = r.cancel.cancelled() => return Outcome::Shutdown,
        };
        match accepted {
            Err(_) => {
                let _ = r.reply(ReplyCode::GeneralFailure, None).await;
                return Outcome::Broken(ConnError::BindTimeout(ctx.bind_timeout));
            }
            Ok(Ok((s, from))) if expected.is_none_or(|ip| ip == canonical(from).ip()) => {
                break (s, canonical(from))
            }
            Ok(Ok((_, from))) => {
                debug!(client = %r.peer, %from, "BIND: refused a connection from an unexpected host");
                ctx.metrics.bind_refused.inc();
            }
            Ok(Err(e)) if is_per_connection(&e) => {}
            // Out of descriptors, most likely: retrying at once would spin until the
            // deadline, so the BIND fails now.
            Ok(Err(e)) => {
                let _ = r.reply(ReplyCode::GeneralFailure, None).await;
                return Outcome::Broken(ConnError::Socket(e));
            }
        }
    };
    drop(listener);
    // The peer is the destination of a BIND: the rules judge it like a CONNECT's.
    let check = r.check(AclCommand::Bind);
    let peer = TargetAddr::Ip(from);
    let verdict = check.verdict(&peer, &[from]);
    if !verdict.allowed() {
        let _ = r.reply(ReplyCode::NotAllowed, None).await;
        return Outcome::Failed {
            opening: r.opening(),
            dest: TargetAddr::Ip(from),
            error: ConnectError::Refused {
                dest: from.to_string(),
                refusal: check.refusal(&verdict),
            },
        };
    }
    let _ = inbound.set_nodelay(true);
    if let Err(e) = r.reply(ReplyCode::Succeeded, Some(from)).await {
        return Outcome::Broken(e);
    }
    let tunnel = Tunnel {
        other: &inbound,
        resolved: Some(from),
        from_pool: false,
        keep_unused: false,
        judged: Some((check, &peer)),
    };
    relay_recorded(&r, tunnel).await
}

/// Completes when the client closes (or resets) the connection while BIND waits for
/// its peer. Bytes the client sends meanwhile are for that peer: they are peeked at,
/// never read, and once some are waiting the wait ends only by the peer's arrival
/// or the timeout (watching for a close further would mean consuming them).
async fn client_gone(client: &TcpStream) {
    let mut one = [0u8; 1];
    match client.peek(&mut one).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}
