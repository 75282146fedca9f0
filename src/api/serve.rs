//! The API's HTTP/1.1 connection loop: accepts connections (and does the TLS
//! handshake with `[api.tls]`), serves each with hyper
//! under a request-head limit, and at shutdown lets every connection finish the
//! response it is writing before the loop returns.
//!
//! `axum::serve` does not expose hyper's per-connection settings, so this is the
//! same loop with the one setting it lacks: a request line plus headers over
//! `MAX_HEAD_BYTES` get `431 Request Header Fields Too Large` and the connection is
//! closed, instead of hyper's default of buffering about 400 KB per connection.

use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::tls::Tls;

/// Largest request head (request line and headers) the API reads.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// A client must send its whole request head within this, or its connection is
/// closed: without it a client sending half a request holds a connection (and a
/// task) for ever. hyper applies it only with a timer, which `axum::serve` did not set.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// After a failed accept (out of file descriptors, say), wait this long before the
/// next: retrying at once would spin a core while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub async fn run(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    tls: Option<Arc<Tls>>,
) -> io::Result<()> {
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "management API: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(router.clone());
        let shutdown = shutdown.clone();
        let tls = tls.as_ref().map(|t| t.acceptor());
        connections.spawn(async move {
            let Some(acceptor) = tls else {
                return serve_connection(stream, service, shutdown).await;
            };
            // The handshake has the request head's bound: a client that opens a
            // connection and stalls holds it no longer either way.
            match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_connection(stream, service, shutdown).await,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "management API: TLS handshake failed");
                }
                Err(_) => tracing::debug!("management API: TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

async fn serve_connection<S>(
    stream: S,
    service: TowerToHyperService<Router>,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder.max_header_size(MAX_HEAD_BYTES);
    builder.timer(hyper_util::rt::TokioTimer::new());
    builder.header_read_timeout(HEADER_READ_TIMEOUT);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "management API connection ended with an error");
    }
}
