//! Resolve and dial, under one deadline, mapping every failure to the RFC 1928
//! reply that tells the client what happened.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::access::OwnAddresses;
use crate::protocol::socks5::ReplyCode;
use crate::protocol::TargetAddr;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("resolving {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("{host} resolved to no address")]
    NoAddress { host: String },
    #[error("connect to {dest} timed out after {after:?}")]
    Timeout { dest: String, after: Duration },
    #[error("{dest} is this proxy's own listening address: refused")]
    OwnAddress { dest: String },
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

impl ConnectError {
    /// The reply code a SOCKS client gets for this failure.
    pub fn reply(&self) -> ReplyCode {
        match self {
            Self::Resolve { .. } | Self::NoAddress { .. } | Self::Timeout { .. } => {
                ReplyCode::HostUnreachable
            }
            Self::OwnAddress { .. } => ReplyCode::NotAllowed,
            Self::Connect { source, .. } => reply_for_io(source),
        }
    }
}

/// Maps the errno of a failed `connect(2)` to a reply code.
pub(crate) fn reply_for_io(err: &io::Error) -> ReplyCode {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => ReplyCode::ConnectionRefused,
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::NetworkDown => {
            ReplyCode::NetworkUnreachable
        }
        io::ErrorKind::HostUnreachable | io::ErrorKind::TimedOut => ReplyCode::HostUnreachable,
        _ => ReplyCode::GeneralFailure,
    }
}

/// Opens upstream TCP connections.
#[derive(Debug, Clone)]
pub struct Dialer {
    timeout: Duration,
    keepalive: Option<Duration>,
    /// Addresses never dialled: the proxy's own listeners (see `access::OwnAddresses`).
    refuse: Option<Arc<OwnAddresses>>,
}

impl Dialer {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            keepalive: None,
            refuse: None,
        }
    }

    /// Never connects to `own` (checked on every address a name resolves to).
    pub fn refusing(self, own: Arc<OwnAddresses>) -> Self {
        Self {
            refuse: Some(own),
            ..self
        }
    }

    fn allowed(&self, addr: SocketAddr) -> Result<(), ConnectError> {
        match &self.refuse {
            Some(own) if own.contains(addr) => Err(ConnectError::OwnAddress {
                dest: addr.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// TCP keepalive on every connection dialled (see `server.tcp_keepalive_secs`).
    pub fn with_keepalive(self, keepalive: Option<Duration>) -> Self {
        Self { keepalive, ..self }
    }

    /// Resolves (for domain names) and connects, trying each address in the order
    /// the resolver gave until one answers, all within the connect timeout. The
    /// returned socket has TCP_NODELAY set: SOCKS tunnels carry interactive traffic.
    pub async fn dial(&self, dest: &TargetAddr) -> Result<TcpStream, ConnectError> {
        let attempt = async {
            match dest {
                TargetAddr::Ip(addr) => {
                    self.allowed(*addr)?;
                    connect_one(*addr).await
                }
                TargetAddr::Domain(host, port) => self.connect_any(host, *port).await,
            }
        };
        let stream = tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| ConnectError::Timeout {
                dest: dest.to_string(),
                after: self.timeout,
            })??;
        // Failing to set an option leaves a working connection; not worth refusing.
        let _ = stream.set_nodelay(true);
        if let Some(idle) = self.keepalive {
            let _ = set_keepalive(socket2::SockRef::from(&stream), idle);
        }
        Ok(stream)
    }
}

/// Keepalive probes after `idle` without traffic, then every 30 s (or `idle`, if
/// shorter), 4 of them: a vanished peer is noticed within about `idle` + 2 minutes.
pub(crate) fn set_keepalive(socket: socket2::SockRef<'_>, idle: Duration) -> io::Result<()> {
    let probes = socket2::TcpKeepalive::new().with_time(idle);
    // The interval and count are not settable everywhere; elsewhere the system's.
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "macos"
    ))]
    let probes = probes
        .with_interval(idle.min(Duration::from_secs(30)))
        .with_retries(4);
    socket.set_tcp_keepalive(&probes)
}

async fn connect_one(addr: SocketAddr) -> Result<TcpStream, ConnectError> {
    TcpStream::connect(addr)
        .await
        .map_err(|source| ConnectError::Connect { addr, source })
}

impl Dialer {
    /// Resolves `host` and tries its addresses in order; each is checked before it
    /// is dialled, so a name cannot lead where its address could not.
    async fn connect_any(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| ConnectError::Resolve {
                host: host.to_owned(),
                source,
            })?;
        let mut last = None;
        for addr in addrs {
            let tried = match self.allowed(addr) {
                Ok(()) => connect_one(addr).await,
                Err(refused) => Err(refused),
            };
            match tried {
                Ok(stream) => return Ok(stream),
                // A refusal is the answer unless another address connects.
                Err(e @ ConnectError::OwnAddress { .. }) => last = Some(e),
                Err(e) => {
                    if !matches!(last, Some(ConnectError::OwnAddress { .. })) {
                        last = Some(e);
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| ConnectError::NoAddress {
            host: host.to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_rfc_1928_codes() {
        let code = |kind: io::ErrorKind| reply_for_io(&io::Error::from(kind));
        assert_eq!(
            code(io::ErrorKind::ConnectionRefused),
            ReplyCode::ConnectionRefused
        );
        assert_eq!(
            code(io::ErrorKind::NetworkUnreachable),
            ReplyCode::NetworkUnreachable
        );
        assert_eq!(
            code(io::ErrorKind::HostUnreachable),
            ReplyCode::HostUnreachable
        );
        assert_eq!(code(io::ErrorKind::TimedOut), ReplyCode::HostUnreachable);
        assert_eq!(
            code(io::ErrorKind::PermissionDenied),
            ReplyCode::GeneralFailure
        );
    }

    #[tokio::test]
    async fn dialled_connections_get_nodelay_and_the_keepalive_asked_for() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dest = l.local_addr().unwrap().into();
        let timeout = Duration::from_secs(5);
        let on = Dialer::new(timeout).with_keepalive(Some(Duration::from_secs(123)));
        let s = on.dial(&dest).await.unwrap();
        let sock = socket2::SockRef::from(&s);
        assert!(s.nodelay().unwrap() && sock.keepalive().unwrap());
        assert_eq!(sock.keepalive_time().unwrap(), Duration::from_secs(123));
        assert_eq!(sock.keepalive_interval().unwrap(), Duration::from_secs(30));
        let off = Dialer::new(timeout).dial(&dest).await.unwrap();
        assert!(!socket2::SockRef::from(&off).keepalive().unwrap());
    }

    #[tokio::test]
    async fn own_addresses_are_refused_by_address_and_by_name() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let own = Arc::new(OwnAddresses::new([l.local_addr().unwrap()]));
        let dialer = Dialer::new(Duration::from_secs(5)).refusing(own);
        for dest in [
            TargetAddr::Ip(SocketAddr::from(([127, 0, 0, 1], port))),
            TargetAddr::Ip(SocketAddr::from(([0, 0, 0, 0], port))),
            TargetAddr::Ip(format!("[::ffff:127.0.0.1]:{port}").parse().unwrap()),
            TargetAddr::Domain("localhost".into(), port),
        ] {
            let err = dialer
                .dial(&dest)
                .await
                .expect_err("dialled its own listener");
            assert_eq!(err.reply(), ReplyCode::NotAllowed, "{dest}: {err}");
        }
        // Other ports on loopback are still reachable.
        let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        dialer
            .dial(&other.local_addr().unwrap().into())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn refused_and_unresolvable_destinations() {
        // Bind then drop a listener to get a loopback port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dialer = Dialer::new(Duration::from_secs(5));
        let refused = dialer
            .dial(&SocketAddr::from(([127, 0, 0, 1], port)).into())
            .await;
        assert_eq!(refused.unwrap_err().reply(), ReplyCode::ConnectionRefused);
        let unknown = dialer
            .dial(&TargetAddr::Domain("no-such-host.invalid".into(), 80))
            .await;
        assert_eq!(unknown.unwrap_err().reply(), ReplyCode::HostUnreachable);
    }
}
