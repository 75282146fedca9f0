//! The two directions of a tunnel whose client speaks TLS: the contract of
//! `relay::pump` (FIN passed on as a half-close, bytes counted as they are
//! written, an unused upstream left untouched), with rustls between the client's
//! socket and the bytes. Each direction holds one record-sized buffer for the
//! tunnel's life: TLS hands over whole records, so the plain path's trick of
//! reading into a stack buffer only once the socket is readable does not apply.

use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::TlsClient;
use super::relay::{
    drive, shutdown_write, write_counted, Direction, PumpEnd, RelayEnd, RelayError, RelayOptions,
};
use crate::counters::Counters;

/// `relay::run` for a TLS client.
pub(super) async fn run(
    tls: &TlsClient,
    upstream: &TcpStream,
    counters: &Counters,
    unused_check: Option<&Counters>,
    opts: RelayOptions<'_>,
) -> Result<RelayEnd, RelayError> {
    // Held for the whole relay: nothing else writes to the client now.
    let mut stream = tls.stream.lock().await;
    let (from_client, to_client) = tokio::io::split(&mut *stream);
    let up = from_client_pump(from_client, upstream, counters, unused_check);
    let down = to_client_pump(upstream, to_client, counters);
    tokio::pin!(up, down);
    drive(up, down, counters, opts).await
}

/// A TLS record's largest payload.
const RECORD: usize = 16 * 1024;

/// Client to upstream: decrypted bytes from `src` written to `upstream`; the
/// client's close (close_notify or FIN) becomes a FIN to the upstream.
async fn from_client_pump(
    mut src: impl AsyncRead + Unpin,
    upstream: &TcpStream,
    counters: &Counters,
    unused_check: Option<&Counters>,
) -> Result<PumpEnd, RelayError> {
    let dir = Direction::ClientToUpstream;
    let mut buf = vec![0u8; RECORD];
    loop {
        let n = match src.read(&mut buf).await {
            Ok(n) => n,
            // A client that closes without close_notify ends its stream all the
            // same: there is no length framing inside a tunnel to truncate.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(dir.read_error(e)),
        };
        if n == 0 {
            if unused_check.is_some_and(|c| !c.touched.load(Ordering::Relaxed)) {
                return Ok(PumpEnd::Unused);
            }
            shutdown_write(upstream);
            return Ok(PumpEnd::Eof);
        }
        counters.touched.store(true, Ordering::Relaxed);
        write_counted(upstream, &buf[..n], &counters.client_to_upstream)
            .await
            .map_err(|e| dir.write_error(e))?;
    }
}

/// Upstream to client: bytes from `upstream` sealed into records on `dst`; the
/// upstream's FIN becomes close_notify and a FIN to the client.
async fn to_client_pump(
    upstream: &TcpStream,
    mut dst: impl AsyncWrite + Unpin,
    counters: &Counters,
) -> Result<PumpEnd, RelayError> {
    let dir = Direction::UpstreamToClient;
    let mut buf = vec![0u8; RECORD];
    loop {
        upstream.readable().await.map_err(|e| dir.read_error(e))?;
        let n = match upstream.try_read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(dir.read_error(e)),
        };
        if n == 0 {
            // The peer may be gone already; the other direction will notice.
            let _ = dst.shutdown().await;
            return Ok(PumpEnd::Eof);
        }
        counters.touched.store(true, Ordering::Relaxed);
        dst.write_all(&buf[..n])
            .await
            .map_err(|e| dir.write_error(e))?;
        dst.flush().await.map_err(|e| dir.write_error(e))?;
        counters
            .upstream_to_client
            .fetch_add(n as u64, Ordering::Relaxed);
    }
}
