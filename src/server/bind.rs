//! BIND (RFC 1928): listen for one inbound connection on behalf of the client, as
//! active-mode FTP needs. First reply: where we listen. Second reply: who connected.
//! Then the two connections are relayed like a CONNECT.

use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::conn::{finish, open_session, reply, ConnError};
use super::handshake::Negotiated;
use super::relay::{self, Counters, RelayEnd, RelayOptions};
use super::udp::closed;
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
        None => client.local_addr().map_err(ConnError::Reply)?.ip(),
    };
    let listener = match TcpListener::bind((ip, 0)).await {
        Ok(l) => l,
        Err(e) => {
            reply(&client, &req, ReplyCode::GeneralFailure, None).await?;
            return Err(ConnError::Reply(e));
        }
    };
    let listening = listener.local_addr().map_err(ConnError::Reply)?;
    reply(&client, &req, ReplyCode::Succeeded, Some(listening)).await?;
    // RFC 1928: DST.ADDR names the host expected to connect; all zeros, anyone.
    let expected: Option<IpAddr> = match &req.dest {
        TargetAddr::Ip(a) if !a.ip().is_unspecified() => Some(a.ip()),
        _ => None,
    };
    let deadline = tokio::time::Instant::now() + ctx.bind_timeout;
    let (inbound, from) = loop {
        let accepted = tokio::select! {
            r = tokio::time::timeout_at(deadline, listener.accept()) => r,
            () = closed(&client) => return Ok(RelayEnd::Completed),
            () = cancel.cancelled() => return Ok(RelayEnd::Shutdown),
        };
        match accepted {
            Err(_) => {
                reply(&client, &req, ReplyCode::GeneralFailure, None).await?;
                return Err(ConnError::BindTimeout(ctx.bind_timeout));
            }
            Ok(Ok((s, from))) if expected.is_none_or(|ip| ip == from.ip()) => break (s, from),
            Ok(Ok((_, from))) => {
                debug!(client = %peer, %from, "BIND: refused a connection from an unexpected host");
                ctx.metrics.bind_refused.inc();
            }
            Ok(Err(_)) => {}
        }
    };
    drop(listener);
    let _ = inbound.set_nodelay(true);
    reply(&client, &req, ReplyCode::Succeeded, Some(from)).await?;
    let session = open_session(ctx, &req, peer, Some(from), false);
    let local = Counters::default();
    let counters = session.as_ref().map_or(&local, |s| &s.counters);
    let opts = RelayOptions {
        idle_timeout: ctx.relay_idle_timeout,
        cancel,
        terminate: session.as_ref().map(|s| &s.terminate),
        keep_unused_upstream: false,
    };
    ctx.metrics.sessions_active.inc();
    let end = relay::run(&client, &inbound, &req.early_data, counters, opts).await;
    ctx.metrics.sessions_active.dec();
    finish(ctx, session.as_ref(), counters, &end);
    Ok(end?)
}
