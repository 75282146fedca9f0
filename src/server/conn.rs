//! One client connection: handshake → connector → relay, then the outcome in the log.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::handshake::{self, HandshakeError, Negotiated};
use super::relay::{self, Counters, RelayEnd, RelayError, RelayOptions};
use super::Context;
use crate::pool::ConnectError;
use crate::protocol::socks5::{Command, ReplyCode};

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("command {0:?} is not supported")]
    Unsupported(Command),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("sending reply: {0}")]
    Reply(#[source] std::io::Error),
    #[error(transparent)]
    Relay(#[from] RelayError),
}

pub(super) async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    ctx: &Context,
    cancel: &CancellationToken,
) {
    match run(client, peer, ctx, cancel).await {
        Ok(end) => debug!(client = %peer, ?end, "connection closed"),
        Err(ConnError::Handshake(HandshakeError::Auth { user, source })) => {
            warn!(client = %peer, user = %user, reason = %source, "authentication failed");
        }
        Err(e @ ConnError::Connect(_)) => {
            info!(client = %peer, error = %e, "upstream connect failed")
        }
        Err(e) => debug!(client = %peer, error = %e, "connection ended with an error"),
    }
}

async fn run(
    mut client: TcpStream,
    peer: SocketAddr,
    ctx: &Context,
    cancel: &CancellationToken,
) -> Result<RelayEnd, ConnError> {
    let _ = client.set_nodelay(true);
    let req = tokio::select! {
        r = tokio::time::timeout(ctx.handshake_timeout, handshake::negotiate(&mut client, &ctx.auth)) => {
            r.map_err(|_| ConnError::HandshakeTimeout)??
        }
        () = cancel.cancelled() => return Ok(RelayEnd::Shutdown),
    };
    if req.command != Command::Connect {
        reply(
            &mut client,
            &req,
            ReplyCode::CommandNotSupported,
            unspecified(),
        )
        .await?;
        return Err(ConnError::Unsupported(req.command));
    }
    let upstream = match ctx.connector.connect(&req.dest).await {
        Ok(s) => s,
        Err(e) => {
            reply(&mut client, &req, e.reply(), unspecified()).await?;
            return Err(e.into());
        }
    };
    let bind = upstream
        .stream()
        .local_addr()
        .unwrap_or_else(|_| unspecified());
    reply(&mut client, &req, ReplyCode::Succeeded, bind).await?;
    debug!(client = %peer, dest = %req.dest, user = ?req.user, pooled = upstream.from_pool(), "tunnel open");
    let counters = Counters::default();
    let opts = RelayOptions {
        idle_timeout: ctx.relay_idle_timeout,
        cancel,
        keep_unused_upstream: upstream.is_recyclable(),
    };
    let end = relay::run(&client, upstream.stream(), &req.early_data, &counters, opts).await?;
    if end == RelayEnd::Unused {
        // Not a byte went either way: the connection is as clean as a new one.
        ctx.connector.recycle(upstream);
    }
    Ok(end)
}

async fn reply(
    client: &mut TcpStream,
    req: &Negotiated,
    code: ReplyCode,
    bind: SocketAddr,
) -> Result<(), ConnError> {
    let bytes = handshake::encode_reply(req.version, code, bind);
    client.write_all(&bytes).await.map_err(ConnError::Reply)
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}
