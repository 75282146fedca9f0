//! BIND (RFC 1928): listen for one inbound connection on behalf of the client, as
//! active-mode FTP needs. First reply: where we listen. Second reply: who connected.
//! Then the two connections are relayed like a CONNECT.

use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::conn::{opened, relay_recorded, reply, ConnError, Tunnel};
use super::handshake::Negotiated;
use super::listener::{canonical, is_per_connection};
use super::relay::RelayEnd;
use super::Context;
use crate::protocol::socks5::ReplyCode;
use crate::protocol::TargetAddr;

pub(super) async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    req: Negotiated,
    ctx: &Context,
    cancel: &CancellationToken,
) -> Result<RelayEnd, ConnError> {
    let ip = match ctx.external_address {
        Some(ip) => ip,
        None => canonical(client.local_addr().map_err(ConnError::Reply)?).ip(),
    };
    let listener = opened(&client, &req, TcpListener::bind((ip, 0)).await).await?;
    let listening = listener.local_addr().map_err(ConnError::Reply)?;
    reply(&client, &req, ReplyCode::Succeeded, Some(listening)).await?;
    // RFC 1928: DST.ADDR names the host expected to connect; all zeros, anyone.
    let expected: Option<IpAddr> = match &req.dest {
        TargetAddr::Ip(a) if !a.ip().is_unspecified() => Some(a.ip().to_canonical()),
        _ => None,
    };
    let deadline = tokio::time::Instant::now() + ctx.bind_timeout;
    let (inbound, from) = loop {
        let accepted = tokio::select! {
            r = tokio::time::timeout_at(deadline, listener.accept()) => r,
            () = client_gone(&client) => return Ok(RelayEnd::Completed),
            () = cancel.cancelled() => return Ok(RelayEnd::Shutdown),
        };
        match accepted {
            Err(_) => {
                reply(&client, &req, ReplyCode::GeneralFailure, None).await?;
                return Err(ConnError::BindTimeout(ctx.bind_timeout));
            }
            Ok(Ok((s, from))) if expected.is_none_or(|ip| ip == canonical(from).ip()) => {
                break (s, canonical(from))
            }
            Ok(Ok((_, from))) => {
                debug!(client = %peer, %from, "BIND: refused a connection from an unexpected host");
                ctx.metrics.bind_refused.inc();
            }
            Ok(Err(e)) if is_per_connection(&e) => {}
            // Out of descriptors, most likely: retrying at once would spin until the
            // deadline, so the BIND fails now.
            Ok(Err(e)) => {
                reply(&client, &req, ReplyCode::GeneralFailure, None).await?;
                return Err(ConnError::Reply(e));
            }
        }
    };
    drop(listener);
    let _ = inbound.set_nodelay(true);
    reply(&client, &req, ReplyCode::Succeeded, Some(from)).await?;
    let tunnel = Tunnel {
        client: &client,
        other: &inbound,
        resolved: Some(from),
        from_pool: false,
        keep_unused: false,
    };
    let end = relay_recorded(ctx, &req, peer, tunnel, cancel).await;
    Ok(end?)
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
