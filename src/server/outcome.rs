//! How a connection ended, as one value, and the one observer that turns it into
//! log lines, metrics, telemetry and the session record. The stages only build the
//! value; none of them knows about all three consumers.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tracing::{debug, info, warn};

use super::conn::ConnError;
use super::handshake::{HandshakeError, Negotiated, Version};
use super::relay::{RelayEnd, RelayError};
use super::reply;
use super::Context;
use crate::auth::AuthError;
use crate::connector::ConnectError;
use crate::counters::Counters;
use crate::protocol::socks5::Command;
use crate::protocol::TargetAddr;
use crate::session::{ActiveSession, Opening, Status};
use crate::telemetry::Signal;

pub(super) enum Outcome {
    /// The handshake did not finish: nothing to record, counted by reason.
    Unfinished(ConnError),
    /// The server said no before any upstream was involved.
    Refused { opening: Opening, why: Refusal },
    /// The upstream could not be had (resolution, timeout, the connect itself), or a
    /// rule refused one of its addresses.
    Failed {
        opening: Opening,
        dest: TargetAddr,
        error: ConnectError,
    },
    /// A tunnel or UDP association ran. Its session record (opened when it started,
    /// so that it shows live) is closed here, with the bytes it moved.
    Ended {
        session: Option<Arc<ActiveSession>>,
        bytes: Bytes,
        end: Result<RelayEnd, RelayError>,
    },
    /// Ended by an error after the request, with no refusal or tunnel to record (a
    /// reply that could not be written, a socket that could not be opened, BIND's
    /// wait running out).
    Broken(ConnError),
    /// The server shut down before there was anything to record.
    Shutdown,
    /// The client left while BIND waited for its peer: nothing to record.
    ClientLeft,
}

/// Bytes a finished tunnel delivered each way.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Bytes {
    pub client_to_upstream: u64,
    pub upstream_to_client: u64,
}

impl From<&Counters> for Bytes {
    fn from(c: &Counters) -> Self {
        Self {
            client_to_upstream: c.client_to_upstream.load(Relaxed),
            upstream_to_client: c.upstream_to_client.load(Relaxed),
        }
    }
}

pub(super) enum Refusal {
    Auth { user: String, source: AuthError },
    NoAcceptableMethod,
    Socks4NeedsAuth,
    CommandNotSupported,
}

impl Outcome {
    /// The outcome of a handshake that failed with `e`.
    pub fn of_handshake(e: ConnError, peer: SocketAddr) -> Self {
        let refused = |protocol, why| Outcome::Refused {
            opening: before_request(peer, protocol),
            why,
        };
        match e {
            ConnError::Handshake(HandshakeError::Auth { user, source }) => {
                refused("socks5", Refusal::Auth { user, source })
            }
            ConnError::Handshake(HandshakeError::NoAcceptableMethod) => {
                refused("socks5", Refusal::NoAcceptableMethod)
            }
            ConnError::Handshake(HandshakeError::Socks4NeedsAuth) => {
                refused("socks4", Refusal::Socks4NeedsAuth)
            }
            other => Outcome::Unfinished(other),
        }
    }
}

/// What the session record says of a connection refused before its request.
fn before_request(peer: SocketAddr, protocol: &'static str) -> Opening {
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

/// What the session record says of `req`.
pub(super) fn opening(req: &Negotiated, peer: SocketAddr) -> Opening {
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

/// The one observer: logs, counts, reports and records `outcome`.
pub(super) fn observe(ctx: &Context, peer: SocketAddr, outcome: Outcome) {
    let m = &ctx.metrics;
    let rejected = |reason: &'static str| {
        m.connections_rejected
            .get_or_create(&[("reason", reason)])
            .inc();
    };
    match outcome {
        Outcome::Refused { mut opening, why } => {
            let (label, reason) = match why {
                Refusal::Auth {
                    user,
                    source: source @ AuthError::Throttled { .. },
                } => {
                    // Counted and reported by the authenticator as held back.
                    debug!(client = %peer, user = %user, reason = %source, "login refused unchecked");
                    opening.user = Some(user);
                    (
                        "auth_throttled",
                        "authentication refused unchecked: too many recent failures from this address",
                    )
                }
                Refusal::Auth { user, source } => {
                    warn!(client = %peer, user = %user, reason = %source, "authentication failed");
                    m.auth_failures.inc();
                    ctx.telemetry.emit(Signal::AuthFailed {
                        client: peer.ip(),
                        user: user.clone(),
                    });
                    opening.user = Some(user);
                    ("auth_failed", "authentication failed")
                }
                Refusal::NoAcceptableMethod => (
                    "no_acceptable_method",
                    "no acceptable authentication method offered",
                ),
                Refusal::Socks4NeedsAuth => (
                    "socks4_needs_auth",
                    "SOCKS4 refused: username/password required",
                ),
                Refusal::CommandNotSupported => ("command_not_supported", "command not supported"),
            };
            rejected(label);
            record(ctx, opening, Status::Rejected, reason.to_owned());
        }
        Outcome::Failed {
            opening,
            dest,
            error,
        } => {
            let status = match &error {
                // Refused by a rule is not a failure of the upstream.
                ConnectError::Refused { refusal, .. } => {
                    warn!(client = %peer, %dest, reason = %refusal.reason, "refused a destination");
                    rejected(refusal.label);
                    if refusal.label != "own_address" {
                        ctx.telemetry.emit(Signal::AclBlocked {
                            user: opening.user.clone().unwrap_or_default(),
                            destination: dest.to_string(),
                            reason: refusal.reason.to_string(),
                        });
                    }
                    Status::Rejected
                }
                _ => {
                    info!(client = %peer, %dest, %error, "upstream connect failed");
                    let label = reply::label(reply::for_connect_error(&error));
                    m.upstream_connect_failures
                        .get_or_create(&[("reply", label)])
                        .inc();
                    ctx.telemetry.emit(Signal::UpstreamConnectFailed {
                        destination: dest.to_string(),
                        error: error.to_string(),
                    });
                    Status::Failed
                }
            };
            record(ctx, opening, status, error.to_string());
        }
        Outcome::Ended {
            session,
            bytes,
            end,
        } => {
            debug!(client = %peer, ?end, "connection closed");
            m.bytes_client_to_upstream.inc_by(bytes.client_to_upstream);
            m.bytes_upstream_to_client.inc_by(bytes.upstream_to_client);
            if let (Some(sessions), Some(session)) = (&ctx.sessions, session) {
                let (status, reason) = match (&end, session.cut_reason.get()) {
                    (Ok(RelayEnd::Terminated), Some(why)) => (Status::Terminated, why.clone()),
                    _ => status_of(&end),
                };
                sessions.close(&session, status, reason);
            }
        }
        Outcome::Unfinished(e) => {
            let reason = match &e {
                ConnError::HandshakeTimeout => "timeout",
                ConnError::Tls(_) => "tls",
                ConnError::Handshake(HandshakeError::Closed) => "client_closed",
                ConnError::Handshake(HandshakeError::Io(_)) => "io_error",
                _ => "malformed",
            };
            m.handshake_failures
                .get_or_create(&[("reason", reason)])
                .inc();
            debug!(client = %peer, error = %e, "handshake did not complete");
        }
        Outcome::Broken(e) => debug!(client = %peer, error = %e, "connection ended with an error"),
        Outcome::Shutdown => debug!(client = %peer, "closed at shutdown"),
        Outcome::ClientLeft => debug!(client = %peer, "client left while BIND waited"),
    }
}

fn record(ctx: &Context, opening: Opening, status: Status, reason: String) {
    if let Some(sessions) = &ctx.sessions {
        sessions.refused(opening, status, reason);
    }
}

/// The status and close reason of a tunnel that ran.
fn status_of(end: &Result<RelayEnd, RelayError>) -> (Status, String) {
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
