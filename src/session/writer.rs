//! The batch writer: one thread that takes store operations off a bounded channel
//! and writes them in transactions of up to `batch_size`, at most
//! `batch_interval_ms` after the first of a batch arrived. The data path only ever
//! `try_send`s to it.
//!
//! When the store fails (disk full, database locked), the operations stay queued,
//! up to `max_queued` (beyond that new ones are dropped and counted), a telemetry
//! error is raised once per failure streak, and every interval the writer tries
//! again. The proxy keeps serving throughout.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use uuid::Uuid;

use super::record::StoreOp;
use super::store::SessionStore;
use crate::telemetry::{Signal, Telemetry};

/// How often finished sessions past `retention_days` are deleted.
const CLEANUP_EVERY: Duration = Duration::from_secs(3600);
/// Tries at shutdown, one interval apart, before queued records are given up.
const STOP_ATTEMPTS: u32 = 5;

pub(super) enum Msg {
    /// Boxed: the bounded channel allocates `max_queued` slots up front, so a slot
    /// is a pointer, not a whole record.
    Op(Box<StoreOp>),
    /// Write everything queued, then end.
    Stop,
}

pub(super) struct Writer {
    pub store: Arc<dyn SessionStore>,
    pub batch_size: usize,
    pub interval: Duration,
    pub retention: Duration,
    pub max_queued: usize,
    pub telemetry: Telemetry,
    pub dropped: Counter,
    pub errors: Counter,
}

impl Writer {
    pub fn run(self, rx: Receiver<Msg>) {
        let mut pending: Vec<StoreOp> = Vec::new();
        // Sessions whose insert was dropped: their close is dropped too.
        let mut dropped: HashSet<Uuid> = HashSet::new();
        let mut failing = false;
        let mut last_cleanup: Option<Instant> = None;
        let mut stopping = false;
        while !stopping {
            // Wait for the first operation; wake each interval anyway to retry a
            // failed batch and to run the cleanup.
            match rx.recv_timeout(self.interval) {
                Ok(Msg::Op(op)) => self.queue(&mut pending, &mut dropped, *op),
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => stopping = true,
                Err(RecvTimeoutError::Timeout) => {}
            }
            // Gather what arrives within one interval of it, up to a batch; while
            // the store fails, the whole interval, so that a failing store is tried
            // once per interval and not once per record that arrives.
            let deadline = Instant::now() + self.interval;
            while !stopping && (failing || pending.len() < self.batch_size) {
                let left = deadline.saturating_duration_since(Instant::now());
                // A receive with no time left still returns a queued message, so a
                // steady stream would never reach the flush: stop at the deadline.
                if left.is_zero() {
                    break;
                }
                match rx.recv_timeout(left) {
                    Ok(Msg::Op(op)) => self.queue(&mut pending, &mut dropped, *op),
                    Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => stopping = true,
                    Err(RecvTimeoutError::Timeout) => break,
                }
            }
            if stopping {
                while let Ok(Msg::Op(op)) = rx.try_recv() {
                    self.queue(&mut pending, &mut dropped, *op);
                }
                self.flush_at_stop(&mut pending, &mut failing);
                return;
            }
            self.flush(&mut pending, &mut failing);
            // Written through: no session is waiting on a dropped insert any more
            // (a close for one is an update of no row), so the set starts over.
            if pending.is_empty() || dropped.len() > self.max_queued {
                dropped.clear();
            }
            if last_cleanup.is_none_or(|t| t.elapsed() >= CLEANUP_EVERY) {
                self.cleanup();
                last_cleanup = Some(Instant::now());
            }
        }
    }

    /// The last flush: a store that still fails gets a few more tries, one interval
    /// apart, so that shutdown is bounded; what is left then is reported lost.
    fn flush_at_stop(&self, pending: &mut Vec<StoreOp>, failing: &mut bool) {
        for attempt in 1..=STOP_ATTEMPTS {
            self.flush(pending, failing);
            if pending.is_empty() {
                return;
            }
            if attempt < STOP_ATTEMPTS {
                std::thread::sleep(self.interval);
            }
        }
        tracing::error!(
            lost = pending.len(),
            "session store still failing at shutdown; these session records were not written"
        );
    }

    /// Queues `op` within `max_queued`. When full, a new session's insert is
    /// dropped (and its close later with it), but the close of a session whose insert
    /// was kept is always queued: dropping it would leave that row `active` for ever.
    /// The extra closes are bounded by the sessions open at once.
    fn queue(&self, pending: &mut Vec<StoreOp>, dropped: &mut HashSet<Uuid>, op: StoreOp) {
        let keep = match &op {
            StoreOp::Insert(r) if pending.len() >= self.max_queued => {
                dropped.insert(r.id);
                false
            }
            StoreOp::Finish(f) => !dropped.remove(&f.id),
            StoreOp::Insert(_) => true,
        };
        if keep {
            pending.push(op);
        } else {
            self.dropped.inc();
        }
    }

    /// Writes `pending` in batches; on failure keeps the rest for the next try.
    fn flush(&self, pending: &mut Vec<StoreOp>, failing: &mut bool) {
        coalesce(pending);
        let mut written = 0;
        while written < pending.len() {
            let end = (written + self.batch_size).min(pending.len());
            match self.store.apply(&pending[written..end]) {
                Ok(()) => written = end,
                Err(e) => {
                    self.errors.inc();
                    if !std::mem::replace(failing, true) {
                        tracing::error!(error = %e, queued = pending.len() - written, "session store write failed; records wait in memory");
                        self.telemetry.emit(Signal::SessionStoreFailed {
                            error: e.to_string(),
                            queued: pending.len() - written,
                        });
                    }
                    break;
                }
            }
        }
        pending.drain(..written);
        if pending.is_empty() && std::mem::take(failing) {
            tracing::info!("session store writes again");
            self.telemetry.emit(Signal::SessionStoreRecovered);
        }
    }

    fn cleanup(&self) {
        let Some(before) = SystemTime::now().checked_sub(self.retention) else {
            return;
        };
        match self.store.cleanup(before) {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "deleted sessions past retention_days"),
            Err(e) => tracing::warn!(error = %e, "session cleanup failed"),
        }
    }
}

/// Folds each `Finish` into the `Insert` of the same session when that insert is
/// still waiting: most sessions open and close within one interval, and this
/// makes them one row write instead of two.
fn coalesce(pending: &mut Vec<StoreOp>) {
    let mut inserts: HashMap<Uuid, usize> = HashMap::new();
    let mut merged = vec![false; pending.len()];
    for i in 0..pending.len() {
        match &pending[i] {
            StoreOp::Insert(r) => {
                inserts.insert(r.id, i);
            }
            StoreOp::Finish(f) => {
                let Some(&at) = inserts.get(&f.id) else {
                    continue;
                };
                let f = f.clone();
                if let StoreOp::Insert(r) = &mut pending[at] {
                    r.ended_at = Some(f.ended_at);
                    r.duration_ms = Some(f.duration_ms);
                    r.bytes_client_to_upstream = f.bytes_client_to_upstream;
                    r.bytes_upstream_to_client = f.bytes_upstream_to_client;
                    r.datagrams_client_to_upstream = f.datagrams_client_to_upstream;
                    r.datagrams_upstream_to_client = f.datagrams_upstream_to_client;
                    r.status = f.status;
                    r.close_reason = Some(f.close_reason);
                    merged[i] = true;
                }
            }
        }
    }
    let mut i = 0;
    pending.retain(|_| {
        i += 1;
        !merged[i - 1]
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TelemetryConfig;
    use crate::session::record::{Finish, SessionRecord, Status};
    use crate::session::store::{HistoryPage, HistoryQuery, SessionStats, StoreError};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc::sync_channel;
    use std::time::SystemTime;

    /// A store whose writes always fail (a locked or full database), counting tries.
    #[derive(Default)]
    struct Failing {
        tries: AtomicU64,
    }

    impl SessionStore for Failing {
        fn apply(&self, _: &[StoreOp]) -> Result<(), StoreError> {
            self.tries.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::Interrupted)
        }
        fn cleanup(&self, _: SystemTime) -> Result<u64, StoreError> {
            Ok(0)
        }
        fn history(&self, _: &HistoryQuery) -> Result<HistoryPage, StoreError> {
            Err(StoreError::Interrupted)
        }
        fn get(&self, _: Uuid) -> Result<Option<SessionRecord>, StoreError> {
            Err(StoreError::Interrupted)
        }
        fn stats(&self, _: SystemTime, _: usize) -> Result<SessionStats, StoreError> {
            Err(StoreError::Interrupted)
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_new_sessions_whole_never_the_close_of_a_kept_one() {
        let writer = Writer {
            store: Arc::new(Failing::default()),
            batch_size: 10,
            interval: Duration::from_millis(20),
            retention: Duration::from_secs(3600),
            max_queued: 2,
            telemetry: Telemetry::start(&TelemetryConfig::default()),
            dropped: Counter::default(),
            errors: Counter::default(),
        };
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let (mut pending, mut dropped) = (Vec::new(), HashSet::new());
        for op in [
            StoreOp::Insert(record(a)),
            StoreOp::Insert(record(b)),
            StoreOp::Insert(record(c)), // full: dropped
            StoreOp::Finish(finish(a)), // kept although full
            StoreOp::Finish(finish(c)), // its insert was dropped: dropped too
        ] {
            writer.queue(&mut pending, &mut dropped, op);
        }
        let kept: Vec<(bool, Uuid)> = pending
            .iter()
            .map(|op| match op {
                StoreOp::Insert(r) => (true, r.id),
                StoreOp::Finish(f) => (false, f.id),
            })
            .collect();
        assert_eq!(kept, [(true, a), (true, b), (false, a)]);
        assert_eq!(writer.dropped.get(), 2);
        assert!(
            dropped.is_empty(),
            "the dropped session is forgotten once closed"
        );
    }

    #[tokio::test]
    async fn a_failing_store_is_tried_once_per_interval_and_shutdown_is_bounded() {
        let store = Arc::new(Failing::default());
        let interval = Duration::from_millis(20);
        let writer = Writer {
            store: store.clone(),
            batch_size: 10,
            interval,
            retention: Duration::from_secs(3600),
            max_queued: 100_000,
            telemetry: Telemetry::start(&TelemetryConfig::default()),
            dropped: Counter::default(),
            errors: Counter::default(),
        };
        let (tx, rx) = sync_channel(100_000);
        let started = Instant::now();
        let thread = std::thread::spawn(move || writer.run(rx));
        // Far more records than a batch, arriving faster than the interval.
        for _ in 0..200 {
            for _ in 0..50 {
                tx.send(Msg::Op(Box::new(StoreOp::Insert(record(Uuid::new_v4())))))
                    .unwrap();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let before_stop = store.tries.load(Ordering::SeqCst);
        let allowed = started.elapsed().as_millis() / interval.as_millis() + 2;
        assert!(
            u128::from(before_stop) <= allowed,
            "{before_stop} tries in {:?}: more than one per interval",
            started.elapsed()
        );
        tx.send(Msg::Stop).unwrap();
        // Shutdown gives up after a bounded number of tries instead of hanging.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            thread.join().unwrap();
            let _ = done_tx.send(());
        });
        done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the writer did not stop");
        let at_stop = store.tries.load(Ordering::SeqCst) - before_stop;
        // The stop itself tries STOP_ATTEMPTS times; a loaded machine may let one
        // or two interval retries slip in between the reading above and the Stop.
        assert!(
            (1..=u64::from(STOP_ATTEMPTS) + 3).contains(&at_stop),
            "{at_stop} tries at stop"
        );
    }

    fn record(id: Uuid) -> SessionRecord {
        SessionRecord {
            id,
            user: None,
            client: "127.0.0.1:1".into(),
            destination: None,
            resolved: None,
            command: None,
            protocol: "socks5".into(),
            started_at: SystemTime::now(),
            ended_at: None,
            duration_ms: None,
            bytes_client_to_upstream: 0,
            bytes_upstream_to_client: 0,
            datagrams_client_to_upstream: 0,
            datagrams_upstream_to_client: 0,
            status: Status::Active,
            close_reason: None,
            from_pool: false,
        }
    }

    fn finish(id: Uuid) -> Finish {
        Finish {
            id,
            ended_at: SystemTime::now(),
            duration_ms: 5,
            bytes_client_to_upstream: 10,
            bytes_upstream_to_client: 20,
            datagrams_client_to_upstream: 0,
            datagrams_upstream_to_client: 0,
            status: Status::Closed,
            close_reason: "completed".into(),
        }
    }

    #[test]
    fn a_session_opened_and_closed_in_one_batch_becomes_one_insert() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut ops = vec![
            StoreOp::Insert(record(a)),
            StoreOp::Insert(record(b)),
            StoreOp::Finish(finish(a)),
            StoreOp::Finish(finish(c)), // its insert was written in an earlier batch
        ];
        coalesce(&mut ops);
        assert_eq!(ops.len(), 3);
        let StoreOp::Insert(merged) = &ops[0] else {
            panic!("insert first")
        };
        assert_eq!(
            (merged.status, merged.bytes_upstream_to_client),
            (Status::Closed, 20)
        );
        assert!(matches!(&ops[1], StoreOp::Insert(r) if r.id == b && r.status == Status::Active));
        assert!(matches!(&ops[2], StoreOp::Finish(f) if f.id == c));
    }
}
