//! The client's side of a connection: a TCP socket, or TLS over one.
//!
//! Stages that only look at the socket (addresses, whether the client left, how it
//! is closed) use `tcp()` whichever it is; the bytes of the protocol go through
//! `AsyncRead`/`AsyncWrite` during the handshake, and through `reply` and the relay
//! after it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

pub(super) enum ClientStream {
    Plain(TcpStream),
    /// Boxed: a TLS session is kilobytes, and a plain connection should not pay
    /// for it. The lock lets `&self` users write a reply and the relay split the
    /// stream; it is never contended (one task per connection).
    Tls(Box<TlsClient>),
}

pub(super) struct TlsClient {
    tcp: Arc<TcpStream>,
    pub stream: tokio::sync::Mutex<TlsStream<SharedTcp>>,
}

impl ClientStream {
    pub fn tls(tcp: Arc<TcpStream>, stream: TlsStream<SharedTcp>) -> Self {
        Self::Tls(Box::new(TlsClient {
            tcp,
            stream: tokio::sync::Mutex::new(stream),
        }))
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(t) => &t.tcp,
        }
    }

    /// Writes `bytes` and, over TLS, flushes them into records on the wire.
    pub async fn send(&self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Plain(s) => super::relay::write_all(s, bytes).await,
            Self::Tls(t) => {
                let mut stream = t.stream.lock().await;
                stream.write_all(bytes).await?;
                stream.flush().await
            }
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(t) => Pin::new(t.stream.get_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, data),
            Self::Tls(t) => Pin::new(t.stream.get_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(t) => Pin::new(t.stream.get_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(t) => Pin::new(t.stream.get_mut()).poll_shutdown(cx),
        }
    }
}

/// A TCP socket that the TLS layer reads and writes while the rest of the
/// connection keeps a reference to it (for its addresses, `SO_LINGER`, the send
/// queue): tokio's socket works through `&self`, so sharing it needs no lock.
pub(super) struct SharedTcp(pub Arc<TcpStream>);

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(data) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The peer may already be gone (ENOTCONN): nothing left to tell it.
        let _ = socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write);
        Poll::Ready(Ok(()))
    }
}
