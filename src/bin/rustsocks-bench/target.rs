//! The load generator's own targets: echo (latency, rate, idle), sink (upload
//! throughput) and source (download throughput), on three consecutive ports.

use std::net::SocketAddr;

use anyhow::Context;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Where the three services listen.
#[derive(Debug, Clone, Copy)]
pub struct Targets {
    pub echo: SocketAddr,
    pub sink: SocketAddr,
    pub source: SocketAddr,
}

impl Targets {
    /// The services of a `rustsocks-bench target` listening at `base` (echo),
    /// `base + 1` (sink) and `base + 2` (source).
    pub fn at(base: SocketAddr) -> Self {
        let at = |i: u16| SocketAddr::new(base.ip(), base.port() + i);
        Self {
            echo: at(0),
            sink: at(1),
            source: at(2),
        }
    }
}

/// Starts the three services: on `base`, `base + 1` and `base + 2`, or, when
/// `base` has port 0, on three ports the OS picks.
pub async fn start(base: SocketAddr) -> anyhow::Result<Targets> {
    let port = |i: u16| if base.port() == 0 { 0 } else { base.port() + i };
    let bind = |i: u16| {
        let addr = SocketAddr::new(base.ip(), port(i));
        async move {
            // A deep accept queue: 128 (`TcpListener::bind`'s) overflowed at 200
            // concurrent clients, and each dropped SYN cost that session 1 s.
            rustsocks::server::listen(addr).with_context(|| format!("binding {addr}"))
        }
    };
    let (echo, sink, source) = (bind(0).await?, bind(1).await?, bind(2).await?);
    let targets = Targets {
        echo: echo.local_addr()?,
        sink: sink.local_addr()?,
        source: source.local_addr()?,
    };
    tokio::spawn(serve(echo, echo_conn));
    tokio::spawn(serve(sink, sink_conn));
    tokio::spawn(serve(source, source_conn));
    Ok(targets)
}

async fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                let _ = s.set_nodelay(true);
                tokio::spawn(handler(s));
            }
            // Out of descriptors or similar: pause instead of spinning.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

async fn echo_conn(mut s: TcpStream) {
    let (mut r, mut w) = s.split();
    let _ = tokio::io::copy(&mut r, &mut w).await;
    let _ = w.shutdown().await;
}

async fn sink_conn(mut s: TcpStream) {
    let mut buf = vec![0u8; 256 * 1024];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

async fn source_conn(mut s: TcpStream) {
    let buf = vec![0x5Au8; 256 * 1024];
    while s.write_all(&buf).await.is_ok() {}
}
