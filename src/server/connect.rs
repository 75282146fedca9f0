//! CONNECT: an upstream from the connector, the success reply with the upstream
//! socket's local address, then the relay.

use std::time::Instant;

use tracing::debug;

use super::conn::Request;
use super::outcome::Outcome;
use super::relay::RelayEnd;
use super::reply;
use super::tunnel::{relay_recorded, Tunnel};
use crate::config::AclCommand;
use crate::protocol::socks5::ReplyCode;
use crate::protocol::TargetAddr;

pub(super) async fn serve(r: Request<'_>) -> Outcome {
    let ctx = r.ctx;
    let started = Instant::now();
    // A dial can take up to connect_timeout_ms: at shutdown it is abandoned rather
    // than allowed to hold the process past the grace period.
    let check = r.check(AclCommand::Connect);
    let dialled = tokio::select! {
        d = ctx.connector.connect(&r.req.dest, &check) => d,
        () = r.cancel.cancelled() => return Outcome::Shutdown,
    };
    let upstream = match dialled {
        Ok(s) => s,
        Err(error) => {
            // A client that already left cannot read the reply; the outcome is
            // still the failure, not the failed write.
            let _ = r.reply(reply::for_connect_error(&error), None).await;
            return Outcome::Failed {
                opening: r.opening(),
                dest: r.req.dest.clone(),
                error,
            };
        }
    };
    let connect_time = if upstream.from_pool() {
        &ctx.metrics.connect_pool_hit
    } else {
        &ctx.metrics.connect_new_dial
    };
    connect_time.observe(started.elapsed().as_secs_f64());
    let bind = upstream.stream().local_addr().ok();
    if let Err(e) = r.reply(ReplyCode::Succeeded, bind).await {
        return Outcome::Broken(e);
    }
    debug!(client = %r.peer, dest = %r.req.dest, user = ?r.req.user, pooled = upstream.from_pool(), "tunnel open");
    let tunnel = Tunnel {
        other: upstream.stream(),
        // An IP destination is its own resolution: no getpeername(2) per session.
        resolved: match &r.req.dest {
            TargetAddr::Ip(addr) => Some(*addr),
            TargetAddr::Domain(..) => upstream.stream().peer_addr().ok(),
        },
        from_pool: upstream.from_pool(),
        keep_unused: upstream.is_recyclable(),
        judged: Some((check, &r.req.dest)),
    };
    let outcome = relay_recorded(&r, tunnel).await;
    if let Outcome::Ended {
        end: Ok(RelayEnd::Unused),
        ..
    } = outcome
    {
        // Not a byte went either way: the connection is as clean as a new one.
        ctx.connector.recycle(upstream);
    }
    outcome
}
