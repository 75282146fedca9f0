//! Gives memory back to the system after a burst of connections has closed.
//!
//! glibc's allocator keeps freed memory in its per-thread arenas for reuse, so after
//! 9,000 tunnels opened and closed the process stayed at its peak RSS (54 MB before,
//! 97 MB after, measured). `malloc_trim(0)` returns the free pages of every arena.
//! It walks the arenas (milliseconds), so it runs only when many connections have
//! closed since the last trim, at most once per `CHECK_EVERY`, on the blocking pool.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How often the number of open connections is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(10);
/// Connections that must have closed since the peak before a trim is worth it.
const BURST: i64 = 1_000;

/// The most connections open at once since the last check; raised by the listener
/// on every accept (one atomic operation), read and reset by `after_bursts`.
#[derive(Debug, Default)]
pub(super) struct Peak(AtomicI64);

impl Peak {
    pub fn saw(&self, open: i64) {
        self.0.fetch_max(open, Ordering::Relaxed);
    }
}

/// Runs until `stop` is cancelled.
pub(super) async fn after_bursts(metrics: Arc<Metrics>, peak: Arc<Peak>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        let open = metrics.connections_active.get();
        let highest = peak.0.swap(open, Ordering::Relaxed);
        if highest - open >= BURST {
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

/// Returns free heap pages to the system; false where the allocator cannot.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim has no preconditions; it only releases free memory.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
