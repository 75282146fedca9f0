//! Listener stage: accepts clients within `max_connections` and hands each one to
//! its own task; stops on shutdown.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{conn, Context};

/// How long to pause after an accept error such as EMFILE, so that a process out of
/// descriptors does not spin; connections closing meanwhile free some.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Clone, Default)]
pub(super) struct Signals {
    /// Cancelled first: no new connections.
    pub stop_accepting: CancellationToken,
    /// Cancelled when the grace period ends: open tunnels are closed.
    pub close_connections: CancellationToken,
}

pub(super) struct Listener {
    pub tcp: TcpListener,
    pub ctx: Arc<Context>,
    pub max_connections: usize,
    pub signals: Signals,
    pub tracker: TaskTracker,
}

impl Listener {
    pub async fn run(self) {
        let permits = Arc::new(Semaphore::new(self.max_connections));
        let stop = &self.signals.stop_accepting;
        // Set while accept keeps failing, so a long EMFILE spell logs once, not
        // ten times a second.
        let mut failing = false;
        loop {
            // Take a slot before accepting: at the limit, clients wait in the kernel's
            // backlog instead of being accepted and closed in a loop.
            let permit = match Arc::clone(&permits).try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    tracing::warn!(
                        limit = self.max_connections,
                        "max_connections reached; pausing accept"
                    );
                    tokio::select! {
                        p = Arc::clone(&permits).acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                        () = stop.cancelled() => return,
                    }
                }
            };
            let accepted = tokio::select! {
                r = self.tcp.accept() => r,
                () = stop.cancelled() => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("accepting again");
                    }
                    let ctx = Arc::clone(&self.ctx);
                    let cancel = self.signals.close_connections.clone();
                    self.tracker.spawn(async move {
                        conn::serve(stream, peer, &ctx, &cancel).await;
                        drop(permit);
                    });
                }
                Err(e) if is_per_connection(&e) => {
                    tracing::debug!(error = %e, "accept: connection failed before it was accepted");
                }
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, "accept failed; backing off until it succeeds");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
        }
    }
}

/// Errors that concern one aborted connection, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}
