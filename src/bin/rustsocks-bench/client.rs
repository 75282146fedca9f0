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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a destination is written in the CONNECT request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DestKind {
    Ipv4,
    Ipv6,
    Domain,
}

#[derive(Debug, Clone)]
pub struct Client {
    /// None: connect straight to the target.
    pub proxy: Option<SocketAddr>,
    pub credentials: Option<(String, String)>,
    pub dest_kind: DestKind,
    pub timeout: Duration,
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
    pub async fn open(&self, target: SocketAddr) -> anyhow::Result<(TcpStream, Duration)> {
        tokio::time::timeout(self.timeout, self.open_inner(target))
            .await
            .context("timed out opening a tunnel")?
    }

    async fn open_inner(&self, target: SocketAddr) -> anyhow::Result<(TcpStream, Duration)> {
        let Some(proxy) = self.proxy else {
            let t = Instant::now();
            let s = TcpStream::connect(target)
                .await
                .context("connecting to the target")?;
            let elapsed = t.elapsed();
            s.set_nodelay(true)?;
            return Ok((s, elapsed));
        };
        let mut s = TcpStream::connect(proxy)
            .await
            .context("connecting to the proxy")?;
        s.set_nodelay(true)?;
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
async fn read_msg<T: Decode>(s: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<T> {
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
