//! Relay stage: copies bytes both ways between client and upstream until both
//! directions have ended, preserving half-close.
//!
//! Receives the two connected sockets (and any bytes the client sent early); counts
//! bytes per direction in atomics that the session layer can read while the tunnel
//! runs. An idle tunnel holds no buffer: a direction reads into a stack buffer only
//! once its socket is readable and writes straight through; only when the receiver
//! is slower than the sender are the unwritten bytes copied to the heap, and freed as
//! soon as they are written.

use std::io;
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use super::client::ClientStream;
use crate::counters::Counters;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Bytes read from one side per syscall. Larger reads mean fewer syscalls per byte
/// on bulk transfers; the buffer lives on the stack only during a read.
const CHUNK: usize = 128 * 1024;

/// Why a tunnel ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both sides sent FIN.
    Completed,
    /// The client sent FIN before any byte moved in either direction, and
    /// `RelayOptions::keep_unused_upstream` was set: the upstream was left untouched
    /// (no FIN sent) so that it can serve another client.
    Unused,
    /// No byte in either direction for `relay_idle_timeout_secs`.
    IdleTimeout,
    /// The server's shutdown grace period ran out.
    Shutdown,
    /// Ended on request (the API's terminate).
    Terminated,
}

/// A socket error, with the side it happened on: whose fault it was.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("client side: {0}")]
    Client(#[source] io::Error),
    #[error("upstream side: {0}")]
    Upstream(#[source] io::Error),
}

#[derive(Clone, Copy)]
pub(super) enum Direction {
    ClientToUpstream,
    UpstreamToClient,
}

impl Direction {
    pub(super) fn read_error(self, e: io::Error) -> RelayError {
        match self {
            Self::ClientToUpstream => RelayError::Client(e),
            Self::UpstreamToClient => RelayError::Upstream(e),
        }
    }

    pub(super) fn write_error(self, e: io::Error) -> RelayError {
        match self {
            Self::ClientToUpstream => RelayError::Upstream(e),
            Self::UpstreamToClient => RelayError::Client(e),
        }
    }
}

/// Limits and signals of one relay.
pub struct RelayOptions<'a> {
    pub idle_timeout: Option<Duration>,
    /// Cancelled when the server gives up waiting for tunnels at shutdown.
    pub cancel: &'a CancellationToken,
    /// Cancelled to end this one tunnel.
    pub terminate: Option<&'a CancellationToken>,
    /// End with `RelayEnd::Unused` instead of half-closing the upstream when the
    /// client closes before any byte moved. Set when a pool can reuse the upstream;
    /// the price is that such a client cannot half-close and then wait for data.
    pub keep_unused_upstream: bool,
}

/// Relays until both directions end, one side fails, the tunnel idles out or the
/// server shuts down. The caller owns (and closes) both sockets.
pub(super) async fn run(
    client: &ClientStream,
    upstream: &TcpStream,
    early_data: &[u8],
    counters: &Counters,
    opts: RelayOptions<'_>,
) -> Result<RelayEnd, RelayError> {
    let c2u = Direction::ClientToUpstream;
    if !early_data.is_empty() {
        counters.touched.store(true, Ordering::Relaxed);
        write_counted(upstream, early_data, &counters.client_to_upstream)
            .await
            .map_err(|e| c2u.write_error(e))?;
    }
    let unused_check = opts.keep_unused_upstream.then_some(counters);
    match client {
        ClientStream::Plain(client) => {
            let up = pump(
                client,
                upstream,
                &counters.client_to_upstream,
                &counters.touched,
                c2u,
                unused_check,
            );
            let down = pump(
                upstream,
                client,
                &counters.upstream_to_client,
                &counters.touched,
                Direction::UpstreamToClient,
                None,
            );
            tokio::pin!(up, down);
            drive(up, down, counters, opts).await
        }
        // Built in a statement of its own: the unboxed future, a temporary of
        // the `.await` expression, would otherwise keep its space here.
        ClientStream::Tls(tls) => {
            let relay = Box::pin(super::tls_relay::run(
                tls,
                upstream,
                counters,
                unused_check,
                opts,
            ));
            relay.await
        }
    }
}

/// Runs both directions of a tunnel, and its idle, shutdown and terminate
/// signals, until both directions have ended or one of the rest fires.
///
/// The directions come pinned by the caller: an async fn keeps its arguments
/// for its whole life, so futures passed by value and pinned here took their
/// space twice (+768 B in every tunnel's task, measured).
pub(super) async fn drive(
    mut up: Pin<&mut impl Future<Output = Result<PumpEnd, RelayError>>>,
    mut down: Pin<&mut impl Future<Output = Result<PumpEnd, RelayError>>>,
    counters: &Counters,
    opts: RelayOptions<'_>,
) -> Result<RelayEnd, RelayError> {
    let idle = idle_watchdog(counters, opts.idle_timeout);
    let terminated = async {
        match opts.terminate {
            Some(t) => t.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(idle, terminated);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            r = up.as_mut(), if !up_done => match r? {
                PumpEnd::Unused => return Ok(RelayEnd::Unused),
                PumpEnd::Eof => up_done = true,
            },
            r = down.as_mut(), if !down_done => { r?; down_done = true; }
            () = &mut idle => return Ok(RelayEnd::IdleTimeout),
            () = opts.cancel.cancelled() => return Ok(RelayEnd::Shutdown),
            () = &mut terminated => return Ok(RelayEnd::Terminated),
        }
    }
    Ok(RelayEnd::Completed)
}

pub(super) enum PumpEnd {
    /// `src` sent FIN, passed on to `dst`.
    Eof,
    /// `src` sent FIN before any byte moved either way; `dst` was left untouched.
    Unused,
}

/// Copies `src` to `dst` until `src` sends FIN, then shuts down `dst`'s write half so
/// the far end sees the FIN too, while the other direction goes on. With
/// `unused_check`, a FIN before any byte moved (per those counters) leaves `dst` open.
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    count: &AtomicU64,
    touched: &AtomicBool,
    dir: Direction,
    unused_check: Option<&Counters>,
) -> Result<PumpEnd, RelayError> {
    loop {
        src.readable().await.map_err(|e| dir.read_error(e))?;
        // The buffer lives only between awaits, so it is not part of the task's
        // state: a tunnel waiting for data costs no buffer memory.
        let backlog = {
            let mut buf = [MaybeUninit::<u8>::uninit(); CHUNK];
            match read_uninit(src, &mut buf) {
                Ok([]) => {
                    if unused_check.is_some_and(|c| !c.touched.load(Ordering::Relaxed)) {
                        return Ok(PumpEnd::Unused);
                    }
                    shutdown_write(dst);
                    return Ok(PumpEnd::Eof);
                }
                Ok(data) => {
                    touched.store(true, Ordering::Relaxed);
                    let rest = write_now(dst, data).map_err(|e| dir.write_error(e))?;
                    let unwritten = rest.as_ref().map_or(0, Vec::len);
                    count.fetch_add((data.len() - unwritten) as u64, Ordering::Relaxed);
                    rest
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                Err(e) => return Err(dir.read_error(e)),
            }
        };
        if let Some(rest) = backlog {
            write_counted(dst, &rest, count)
                .await
                .map_err(|e| dir.write_error(e))?;
        }
    }
}

/// Reads what is available into `buf` without initialising it first (zeroing a
/// `CHUNK` per read cost more than the copy itself), clearing the socket's readiness when
/// it is drained, as `TcpStream::try_read` does.
fn read_uninit<'a>(src: &TcpStream, buf: &'a mut [MaybeUninit<u8>]) -> io::Result<&'a [u8]> {
    let n = src.try_io(Interest::READABLE, || socket2::SockRef::from(src).recv(buf))?;
    // SAFETY: recv(2) wrote the first `n` bytes of `buf`, and `n <= buf.len()`.
    Ok(unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) })
}

/// Writes as much as the socket takes without waiting; returns what is left.
fn write_now(dst: &TcpStream, mut data: &[u8]) -> io::Result<Option<Vec<u8>>> {
    while !data.is_empty() {
        match dst.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Some(data.to_vec())),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

pub(super) async fn write_all(dst: &TcpStream, data: &[u8]) -> io::Result<()> {
    write_counted(dst, data, &AtomicU64::new(0)).await
}

/// Writes all of `data`, adding each write's bytes to `count` as it goes: a slow
/// receiver draining a backlog shows as progress to the idle timeout.
pub(super) async fn write_counted(
    dst: &TcpStream,
    mut data: &[u8],
    count: &AtomicU64,
) -> io::Result<()> {
    while !data.is_empty() {
        dst.writable().await?;
        match dst.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                count.fetch_add(n as u64, Ordering::Relaxed);
                data = &data[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub(super) fn shutdown_write(stream: &TcpStream) {
    // The peer may already be gone (ENOTCONN); the other direction will notice.
    let _ = socket2::SockRef::from(stream).shutdown(Shutdown::Write);
}

/// Completes once the byte counters have not moved for `timeout`; never completes
/// when there is no timeout. It samples the counters a few times per period instead
/// of stamping every read, so the data path pays nothing for it; the tunnel closes
/// between `timeout` and `timeout * 1.25` after its last byte.
async fn idle_watchdog(counters: &Counters, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    let tick = timeout / 4;
    let mut last_total = counters.total();
    let mut quiet = Duration::ZERO;
    while quiet < timeout {
        tokio::time::sleep(tick).await;
        let total = counters.total();
        if total == last_total {
            quiet += tick;
        } else {
            last_total = total;
            quiet = Duration::ZERO;
        }
    }
}
