//! Opening a tunnel through a SOCKS5 proxy (or straight to the target, for the
//! `--direct` baseline), timing the CONNECT.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rustsocks::protocol::socks5::{
    Command, Greeting, Method, MethodSelection, Reply, ReplyCode, Request, UserPassReply,
    UserPassRequest,
};
use rustsocks::protocol::{Decode, Encode, TargetAddr};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// How a destination is written in the CONNECT request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DestKind {
    Ipv4,
    Ipv6,
    Domain,
}

#[derive(Clone)]
pub struct Client {
    /// None: connect straight to the target.
    pub proxy: Option<SocketAddr>,
    pub credentials: Option<(String, String)>,
    pub dest_kind: DestKind,
    pub timeout: Duration,
    /// SOCKS inside TLS: the connector (trusting the proxy's CA) and the name the
    /// proxy's certificate must carry.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// A tunnel: the socket to the proxy (or the target), or TLS over it.
pub enum Tunnel {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Tunnel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, data),
            Self::Tls(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A TLS connector that trusts the CA certificates in the PEM file `ca`.
pub fn tls_connector(ca: &std::path::Path) -> anyhow::Result<TlsConnector> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots.add(cert?)?;
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

impl Client {
    fn dest(&self, target: SocketAddr) -> TargetAddr {
        match self.dest_kind {
            DestKind::Ipv4 | DestKind::Ipv6 => TargetAddr::Ip(target),
            DestKind::Domain => TargetAddr::Domain("localhost".into(), target.port()),
        }
    }

    /// A connected tunnel to `target`, and the CONNECT-to-reply time (the TCP
    /// connect time when direct). Target bytes that arrived with the reply are
    /// dropped; only the source target sends unasked, and it counts them apart.
    pub async fn open(&self, target: SocketAddr) -> anyhow::Result<(Tunnel, Duration)> {
        tokio::time::timeout(self.timeout, self.open_inner(target))
            .await
            .context("timed out opening a tunnel")?
    }

    async fn open_inner(&self, target: SocketAddr) -> anyhow::Result<(Tunnel, Duration)> {
        let Some(proxy) = self.proxy else {
            let t = Instant::now();
            let s = TcpStream::connect(target)
                .await
                .context("connecting to the target")?;
            let elapsed = t.elapsed();
            s.set_nodelay(true)?;
            return Ok((Tunnel::Plain(s), elapsed));
        };
        let tcp = TcpStream::connect(proxy)
            .await
            .context("connecting to the proxy")?;
        tcp.set_nodelay(true)?;
        let mut s = match &self.tls {
            None => Tunnel::Plain(tcp),
            Some((connector, name)) => Tunnel::Tls(Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .context("TLS handshake with the proxy")?,
            )),
        };
        let method = if self.credentials.is_some() {
            Method::USER_PASS
        } else {
            Method::NO_AUTH
        };
        s.write_all(
            &Greeting {
                methods: vec![method],
            }
            .to_bytes(),
        )
        .await?;
        s.flush().await?;
        let mut buf = Vec::with_capacity(64);
        let MethodSelection(chosen) = read_msg(&mut s, &mut buf).await?;
        if chosen != method {
            bail!("proxy chose method {:#04x}", chosen.0);
        }
        if let Some((user, password)) = &self.credentials {
            let req = UserPassRequest {
                username: user.clone().into_bytes(),
                password: password.clone().into_bytes(),
            };
            s.write_all(&req.to_bytes()).await?;
            s.flush().await?;
            let reply: UserPassReply = read_msg(&mut s, &mut buf).await?;
            if !reply.success {
                bail!("proxy refused the credentials");
            }
        }
        let request = Request {
            command: Command::Connect,
            dest: self.dest(target),
        }
        .to_bytes();
        let t = Instant::now();
        s.write_all(&request).await?;
        s.flush().await?;
        let reply: Reply = read_msg(&mut s, &mut buf).await?;
        let elapsed = t.elapsed();
        if reply.code != ReplyCode::Succeeded {
            bail!("CONNECT failed: {:?}", reply.code);
        }
        Ok((s, elapsed))
    }
}

/// Reads one message. Bytes after it (a target that speaks first may follow the
/// CONNECT reply at once) stay in `buf` for the caller.
async fn read_msg<T: Decode>(s: &mut Tunnel, buf: &mut Vec<u8>) -> anyhow::Result<T> {
    buf.clear();
    loop {
        if let Some((msg, used)) = T::decode(buf)? {
            buf.drain(..used);
            return Ok(msg);
        }
        let mut chunk = [0u8; 64];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("proxy closed the connection during the handshake");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
