//! One client connection: handshake, then the command's handler (CONNECT, BIND,
//! UDP ASSOCIATE), then its outcome to the observer. Every path ends in exactly one
//! `Outcome`, so nothing is counted or recorded twice, or not at all.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::client::{ClientStream, SharedTcp};
use super::handshake::{self, HandshakeError, Negotiated, Version};
use super::listener::canonical;
use super::outcome::{self, Outcome, Refusal};
use super::relay::RelayError;
use super::Context;
use crate::access::Check;
use crate::config::{AclCommand, CertificateUser, SocksMethod};
use crate::protocol::socks5::{Command, ReplyCode};
use crate::session::{ActiveSession, Opening};
use crate::tls::Tls;

#[derive(Debug, thiserror::Error)]
pub(super) enum ConnError {
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("TLS handshake: {0}")]
    Tls(#[source] std::io::Error),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("sending reply: {0}")]
    Reply(#[source] std::io::Error),
    #[error("opening a socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error(transparent)]
    Relay(#[from] RelayError),
    #[error("BIND: no inbound connection within {0:?}")]
    BindTimeout(std::time::Duration),
}

/// A client whose request has been read: what every command handler works with.
pub(super) struct Request<'a> {
    pub client: ClientStream,
    pub peer: SocketAddr,
    pub req: Negotiated,
    /// The user's system groups, for the access rules (`acl.system_groups`).
    pub groups: Arc<[Box<str>]>,
    pub ctx: &'a Context,
    /// Cancelled when the shutdown grace ends.
    pub cancel: &'a CancellationToken,
}

impl Request<'_> {
    /// Sends the reply for the request's protocol; BND is all zeros when `bind` is
    /// None.
    pub async fn reply(&self, code: ReplyCode, bind: Option<SocketAddr>) -> Result<(), ConnError> {
        let bind = bind.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let bytes = handshake::encode_reply(self.req.version, code, bind);
        self.client.send(&bytes).await.map_err(ConnError::Reply)
    }

    /// The access check for this request's user and client doing `command`.
    pub fn check(&self, command: AclCommand) -> Check<'_> {
        self.ctx
            .access
            .check(self.acl_user(), &self.groups, self.peer.ip(), command)
    }

    /// The user the access rules see: the authenticated one, or "" (a SOCKS4 user
    /// id is only a claim, so rules naming users never match it).
    pub fn acl_user(&self) -> &str {
        match self.req.authenticated {
            true => self.req.user.as_deref().unwrap_or(""),
            false => "",
        }
    }

    /// What the session record says of this request.
    pub fn opening(&self) -> Opening {
        outcome::opening(&self.req, self.peer)
    }

    /// Registers a session that is about to relay, when sessions are tracked (the
    /// record, with its strings, is built only then).
    pub fn open_session(
        &self,
        resolved: Option<SocketAddr>,
        from_pool: bool,
    ) -> Option<Arc<ActiveSession>> {
        let sessions = self.ctx.sessions.as_ref()?;
        Some(sessions.open(Opening {
            resolved,
            from_pool,
            ..self.opening()
        }))
    }

    /// The address the client connected to (IPv4 when it came IPv4-mapped): where a
    /// BIND listens and a UDP relay is bound, unless configured otherwise.
    pub fn local_ip(&self) -> Result<IpAddr, ConnError> {
        self.client
            .tcp()
            .local_addr()
            .map(|a| canonical(a).ip())
            .map_err(ConnError::Socket)
    }

    /// The socket a BIND or UDP ASSOCIATE needs, and the success reply naming where
    /// it is (`addr` reads that from it). If either fails, the client gets its
    /// failure reply and the outcome says why.
    pub async fn announce<T>(
        &self,
        socket: std::io::Result<T>,
        addr: impl FnOnce(&T) -> std::io::Result<SocketAddr>,
    ) -> Result<(T, SocketAddr), Outcome> {
        let opened = socket.and_then(|s| addr(&s).map(|a| (s, a)));
        match opened {
            Ok((s, at)) => match self.reply(ReplyCode::Succeeded, Some(at)).await {
                Ok(()) => Ok((s, at)),
                Err(e) => Err(Outcome::Broken(e)),
            },
            Err(e) => {
                let _ = self.reply(ReplyCode::GeneralFailure, None).await;
                Err(Outcome::Broken(ConnError::Socket(e)))
            }
        }
    }
}

pub(super) async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    ctx: &Context,
    cancel: &CancellationToken,
    tls: Option<&Tls>,
) {
    let outcome = run(client, peer, ctx, cancel, tls).await;
    outcome::observe(ctx, peer, outcome);
}

async fn run(
    client: TcpStream,
    peer: SocketAddr,
    ctx: &Context,
    cancel: &CancellationToken,
    tls: Option<&Tls>,
) -> Outcome {
    // Inherited from the listener on Linux (see `listener::configure`).
    #[cfg(not(target_os = "linux"))]
    let _ = client.set_nodelay(true);
    // One bound for the TLS handshake and the SOCKS one together: a client cannot
    // double its time by being slow in both.
    let deadline = tokio::time::Instant::now() + ctx.handshake_timeout;
    let mut certified = None;
    let mut client = match tls {
        None => ClientStream::Plain(client),
        Some(tls) => {
            let tcp = Arc::new(client);
            // Boxed: the handshake's state is kilobytes, and inline it would size
            // every connection's task for its whole life.
            let accept = Box::pin(tls.acceptor().accept(SharedTcp(Arc::clone(&tcp))));
            let accepted = tokio::select! {
                r = tokio::time::timeout_at(deadline, accept) => r,
                () = cancel.cancelled() => return Outcome::Shutdown,
            };
            match accepted {
                Ok(Ok(stream)) => {
                    if ctx.auth.method() == SocksMethod::Certificate {
                        certified = certified_user(&stream, ctx.certificate_user);
                    }
                    ClientStream::tls(tcp, stream)
                }
                Ok(Err(e)) => return Outcome::of_handshake(ConnError::Tls(e), peer),
                Err(_) => return Outcome::of_handshake(ConnError::HandshakeTimeout, peer),
            }
        }
    };
    let negotiated = tokio::select! {
        r = tokio::time::timeout_at(deadline, handshake::negotiate(&mut client, peer.ip(), &ctx.auth, certified.as_deref())) => r,
        () = cancel.cancelled() => return Outcome::Shutdown,
    };
    let req = match negotiated {
        Ok(Ok(req)) => req,
        Ok(Err(e)) => return Outcome::of_handshake(ConnError::Handshake(e), peer),
        Err(_) => return Outcome::of_handshake(ConnError::HandshakeTimeout, peer),
    };
    let groups = match req.authenticated {
        true => {
            ctx.access
                .groups_of(req.user.as_deref().unwrap_or(""))
                .await
        }
        false => Arc::from(Vec::new()),
    };
    let r = Request {
        client,
        peer,
        req,
        groups,
        ctx,
        cancel,
    };
    match (r.req.command, r.req.version) {
        (Command::Connect, _) => super::connect::serve(r).await,
        (Command::UdpAssociate, Version::Socks5) => super::udp::associate(r).await,
        (Command::Bind, _) => super::bind::serve(r).await,
        (Command::UdpAssociate, Version::Socks4) => {
            // SOCKS4 has no UDP; its decoder cannot produce this, but if it did the
            // client is told no. A client that already left cannot read the reply;
            // what is recorded is still the refusal.
            let _ = r.reply(ReplyCode::CommandNotSupported, None).await;
            Outcome::Refused {
                opening: r.opening(),
                why: Refusal::CommandNotSupported,
            }
        }
    }
}

/// The user the client's verified certificate names (see `auth.certificate_user`);
/// None if it presented none or the name is missing or unusable.
fn certified_user(
    stream: &tokio_rustls::server::TlsStream<SharedTcp>,
    field: CertificateUser,
) -> Option<String> {
    let leaf = stream.get_ref().1.peer_certificates()?.first()?;
    crate::tls::certificate_user(leaf, field)
}
