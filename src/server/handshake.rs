//! Handshake stage: greeting, method choice, authentication and the request, for
//! SOCKS5 and SOCKS4/4a on the same port (the first byte selects the version).
//!
//! Receives a freshly accepted client socket; hands on a `Negotiated` request, or an
//! error after the client got whatever reply the protocol has for it. Reads are
//! buffered, so bytes a client sends ahead of our reply (optimistic clients) are kept
//! and forwarded upstream as `early_data`. The caller bounds the whole stage by
//! `handshake_timeout_ms`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::auth::{AuthError, Authenticator};
use crate::config::SocksMethod;
use crate::protocol::socks5::{
    self, Command, Greeting, Method, MethodSelection, ReplyCode, Request, UserPassReply,
    UserPassRequest,
};
use crate::protocol::{socks4, Decode, Encode, ProtocolError, TargetAddr};

/// Upper bound on buffered handshake bytes. The largest SOCKS5 message is an RFC 1929
/// login (513 bytes), a request at most 262, and SOCKS4 fields are capped, so only a
/// client sending junk reaches it.
const MAX_BUFFERED: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("client closed the connection during the handshake")]
    Closed,
    #[error("malformed message: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("client offered no acceptable authentication method")]
    NoAcceptableMethod,
    #[error("authentication failed for user {user:?}: {source}")]
    Auth {
        user: String,
        #[source]
        source: AuthError,
    },
    #[error("SOCKS4 request refused: the server requires username/password authentication")]
    Socks4NeedsAuth,
    #[error("handshake message too long")]
    TooLong,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Socks4,
    Socks5,
}

/// A request that passed the handshake, ready for the connector.
#[derive(Debug)]
pub struct Negotiated {
    pub version: Version,
    pub command: Command,
    pub dest: TargetAddr,
    /// The authenticated RFC 1929 user, or the SOCKS4 user id if one was sent.
    pub user: Option<String>,
    /// Whether `user` was authenticated (RFC 1929). A SOCKS4 user id is whatever
    /// the client claims: it is recorded, never trusted by the access rules.
    pub authenticated: bool,
    /// Bytes the client sent after its request, before our reply.
    pub early_data: Bytes,
}

/// Encodes the reply for `version`. SOCKS4 has one failure code and IPv4 only.
pub fn encode_reply(version: Version, code: ReplyCode, bind: SocketAddr) -> Vec<u8> {
    match version {
        Version::Socks5 => socks5::Reply::new(code, bind).to_bytes(),
        Version::Socks4 => {
            let bind = match bind {
                SocketAddr::V4(v4) => v4,
                SocketAddr::V6(_) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            };
            let granted = code == ReplyCode::Succeeded;
            socks4::Reply { granted, bind }.to_bytes()
        }
    }
}

/// Buffered reader of handshake messages.
struct Conn<'a, S> {
    stream: &'a mut S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<'_, S> {
    /// Reads until `buf` holds at least one byte.
    async fn fill(&mut self) -> Result<(), HandshakeError> {
        if self.buf.len() >= MAX_BUFFERED {
            return Err(HandshakeError::TooLong);
        }
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(HandshakeError::Closed);
        }
        Ok(())
    }

    async fn read<T: Decode>(&mut self) -> Result<T, HandshakeError> {
        loop {
            if let Some((msg, used)) = T::decode(&self.buf)? {
                self.buf.advance(used);
                return Ok(msg);
            }
            self.fill().await?;
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), HandshakeError> {
        Ok(self.stream.write_all(bytes).await?)
    }
}

/// Runs the handshake on `stream`, from a client at `client`. `certified` is the
/// user named by the client's verified TLS certificate, if any: with
/// `socks_method = "certificate"` it is the user, and a client without one is
/// refused.
pub async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    client: IpAddr,
    auth: &Authenticator,
    certified: Option<&str>,
) -> Result<Negotiated, HandshakeError> {
    // Only the certificate method takes its user from the certificate.
    let certified = match auth.method() {
        SocksMethod::Certificate => certified.map(str::to_owned),
        _ => None,
    };
    let mut conn = Conn {
        stream,
        buf: BytesMut::with_capacity(512),
    };
    conn.fill().await?;
    match conn.buf[0] {
        socks5::VERSION => socks5_handshake(&mut conn, client, auth, certified).await,
        socks4::VERSION => socks4_handshake(&mut conn, auth, certified).await,
        other => Err(ProtocolError::UnsupportedVersion(other).into()),
    }
}

async fn socks5_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<'_, S>,
    client: IpAddr,
    auth: &Authenticator,
    certified: Option<String>,
) -> Result<Negotiated, HandshakeError> {
    let no_acceptable = MethodSelection(Method::NO_ACCEPTABLE).to_bytes();
    let greeting = match conn.read::<Greeting>().await {
        Err(HandshakeError::Protocol(ProtocolError::NoMethods)) => {
            conn.send(&no_acceptable).await?;
            return Err(ProtocolError::NoMethods.into());
        }
        other => other?,
    };
    let method = match auth.method() {
        SocksMethod::None | SocksMethod::Certificate => Method::NO_AUTH,
        SocksMethod::Userpass | SocksMethod::Pam => Method::USER_PASS,
    };
    // With the certificate method, a client whose certificate names no user has
    // no method it could use.
    let unnamed = auth.method() == SocksMethod::Certificate && certified.is_none();
    if !greeting.offers(method) || unnamed {
        conn.send(&no_acceptable).await?;
        return Err(HandshakeError::NoAcceptableMethod);
    }
    conn.send(&MethodSelection(method).to_bytes()).await?;
    let user = match method {
        Method::USER_PASS => Some(authenticate(conn, client, auth).await?),
        _ => certified,
    };
    let request = match conn.read::<Request>().await {
        Err(HandshakeError::Protocol(e)) => {
            if let Some(code) = e.reply() {
                conn.send(&socks5::Reply::failure(code).to_bytes()).await?;
            }
            return Err(e.into());
        }
        other => other?,
    };
    Ok(Negotiated {
        version: Version::Socks5,
        command: request.command,
        dest: request.dest,
        authenticated: user.is_some(),
        user,
        early_data: conn.buf.split().freeze(),
    })
}

/// RFC 1929 sub-negotiation; returns the user name on success.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<'_, S>,
    client: IpAddr,
    auth: &Authenticator,
) -> Result<String, HandshakeError> {
    let failure = UserPassReply { success: false }.to_bytes();
    let creds = match conn.read::<UserPassRequest>().await {
        Err(HandshakeError::Protocol(e)) => {
            conn.send(&failure).await?;
            return Err(e.into());
        }
        other => other?,
    };
    let user = String::from_utf8_lossy(&creds.username).into_owned();
    match auth.verify(client, &creds.username, &creds.password).await {
        Ok(()) => {
            conn.send(&UserPassReply { success: true }.to_bytes())
                .await?;
            Ok(user)
        }
        Err(source) => {
            conn.send(&failure).await?;
            Err(HandshakeError::Auth { user, source })
        }
    }
}

async fn socks4_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<'_, S>,
    auth: &Authenticator,
    certified: Option<String>,
) -> Result<Negotiated, HandshakeError> {
    let rejected = socks4::Reply::rejected().to_bytes();
    let request = match conn.read::<socks4::Request>().await {
        Err(HandshakeError::Protocol(e)) => {
            conn.send(&rejected).await?;
            return Err(e.into());
        }
        other => other?,
    };
    // SOCKS4 carries no password; accepting it would bypass authentication. With
    // the certificate method it is the certificate that must name the user.
    let unnamed = auth.method() == SocksMethod::Certificate && certified.is_none();
    let password = matches!(auth.method(), SocksMethod::Userpass | SocksMethod::Pam);
    if password || unnamed {
        conn.send(&rejected).await?;
        return Err(HandshakeError::Socks4NeedsAuth);
    }
    let command = match request.command {
        socks4::Command::Connect => Command::Connect,
        socks4::Command::Bind => Command::Bind,
    };
    // A certificate names the user; a SOCKS4 user id is only a claim.
    let authenticated = certified.is_some();
    let user = certified.or_else(|| {
        (!request.user_id.is_empty())
            .then(|| String::from_utf8_lossy(&request.user_id).into_owned())
    });
    Ok(Negotiated {
        version: Version::Socks4,
        command,
        dest: request.dest,
        user,
        authenticated,
        early_data: conn.buf.split().freeze(),
    })
}
