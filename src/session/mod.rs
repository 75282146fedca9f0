//! Session tracking: every SOCKS request, accepted or refused, recorded live (the
//! registry) and afterwards (the history store).
//!
//! Fed by the connection handler at three moments: a session opens (after the
//! upstream connected), closes, or is refused. None of them waits: the registry
//! lock covers one map operation, and store operations go to the batch writer with
//! `try_send`. During the relay the only cost is the byte counters, atomics the
//! registry shares with the relay.

mod db_file;
mod record;
mod registry;
mod sqlite;
mod store;
mod writer;

use std::net::SocketAddr;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use db_file::{inspect_database_file, DatabaseFile};
pub(crate) use record::rfc3339;
pub use record::{Finish, SessionRecord, Status, StoreOp};
pub use registry::{ActiveSession, Registry};
pub use sqlite::SqliteStore;
pub use store::{
    HistoryPage, HistoryQuery, SessionStats, SessionStore, SortKey, StoreError, TopEntry,
};

use crate::config::SessionsConfig;
use crate::counters::Counters;
use crate::metrics::Metrics;
use crate::telemetry::Telemetry;
use writer::{Msg, Writer};

/// What is known when a session opens or is refused.
#[derive(Debug, Clone)]
pub struct Opening {
    pub user: Option<String>,
    pub client: SocketAddr,
    pub destination: Option<String>,
    pub resolved: Option<SocketAddr>,
    pub command: Option<&'static str>,
    pub protocol: &'static str,
    pub from_pool: bool,
}

impl Opening {
    fn record(self, status: Status, started_at: SystemTime) -> SessionRecord {
        SessionRecord {
            // Time-ordered (v7): new rows append to the primary-key index instead of
            // landing at random places in it.
            id: Uuid::now_v7(),
            user: self.user,
            client: self.client.to_string(),
            destination: self.destination,
            resolved: self.resolved.map(|a| a.to_string()),
            command: self.command.map(str::to_owned),
            protocol: self.protocol.to_owned(),
            started_at,
            ended_at: None,
            duration_ms: None,
            bytes_client_to_upstream: 0,
            bytes_upstream_to_client: 0,
            datagrams_client_to_upstream: 0,
            datagrams_upstream_to_client: 0,
            status,
            close_reason: None,
            from_pool: self.from_pool,
        }
    }
}

pub struct Sessions {
    registry: Registry,
    store: Arc<dyn SessionStore>,
    tx: SyncSender<Msg>,
    writer: Mutex<Option<JoinHandle<()>>>,
    dropped: Counter,
}

impl Sessions {
    /// Opens the store (creating and migrating it), closes sessions a crash left
    /// active, and starts the batch writer thread.
    pub fn start(
        config: &SessionsConfig,
        telemetry: Telemetry,
        metrics: &Metrics,
    ) -> Result<Self, StoreError> {
        let path = config.sqlite_path().unwrap_or_default();
        let sqlite = SqliteStore::open(path, &config.database_url)?;
        let interrupted = sqlite.close_interrupted()?;
        if interrupted > 0 {
            tracing::warn!(
                sessions = interrupted,
                "closed sessions left active by a previous run"
            );
        }
        let store: Arc<dyn SessionStore> = Arc::new(sqlite);
        let (tx, rx) = sync_channel(config.max_queued);
        let writer = Writer {
            store: Arc::clone(&store),
            batch_size: config.batch_size,
            interval: config.batch_interval(),
            retention: config.retention(),
            max_queued: config.max_queued,
            telemetry,
            dropped: metrics.sessions_dropped.clone(),
            errors: metrics.session_store_errors.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("session-writer".into())
            .spawn(move || {
                yield_to_the_data_path();
                writer.run(rx)
            })
            .map_err(|_| StoreError::Interrupted)?;
        Ok(Self {
            registry: Registry::new(),
            store,
            tx,
            writer: Mutex::new(Some(handle)),
            dropped: metrics.sessions_dropped.clone(),
        })
    }

    fn send(&self, op: StoreOp) {
        if self.tx.try_send(Msg::Op(Box::new(op))).is_err() {
            self.dropped.inc();
        }
    }

    /// Registers a session whose upstream just connected, and queues its record.
    pub fn open(&self, opening: Opening) -> Arc<ActiveSession> {
        let record = opening.record(Status::Active, SystemTime::now());
        let session = Arc::new(ActiveSession {
            record: record.clone(),
            counters: Counters::default(),
            terminate: CancellationToken::new(),
            cut_reason: std::sync::OnceLock::new(),
        });
        self.registry.insert(Arc::clone(&session));
        self.send(StoreOp::Insert(record));
        session
    }

    /// Ends a session opened with `open`.
    pub fn close(&self, session: &ActiveSession, status: Status, reason: String) {
        use std::sync::atomic::Ordering::Relaxed;
        self.registry.remove(&session.record.id);
        let ended_at = SystemTime::now();
        let duration = ended_at
            .duration_since(session.record.started_at)
            .unwrap_or_default();
        self.send(StoreOp::Finish(Finish {
            id: session.record.id,
            ended_at,
            duration_ms: duration.as_millis() as u64,
            bytes_client_to_upstream: session.counters.client_to_upstream.load(Relaxed),
            bytes_upstream_to_client: session.counters.upstream_to_client.load(Relaxed),
            datagrams_client_to_upstream: session
                .counters
                .datagrams_client_to_upstream
                .load(Relaxed),
            datagrams_upstream_to_client: session
                .counters
                .datagrams_upstream_to_client
                .load(Relaxed),
            status,
            close_reason: reason,
        }));
    }

    /// Records a request that never became a tunnel (refused or failed).
    pub fn refused(&self, opening: Opening, status: Status, reason: String) {
        let now = SystemTime::now();
        let mut record = opening.record(status, now);
        record.ended_at = Some(now);
        record.duration_ms = Some(0);
        record.close_reason = Some(reason);
        self.send(StoreOp::Insert(record));
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn store(&self) -> Arc<dyn SessionStore> {
        Arc::clone(&self.store)
    }

    /// Writes everything queued and stops the writer. Blocks; call it from a
    /// blocking context.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Msg::Stop);
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// Lowers the calling thread's scheduling priority (nice 10): the history writer's
/// SQLite work waits for the connections' threads instead of taking a core from
/// them under load; its queue absorbs the delay (`sessions.max_queued`). Failing to
/// change it (a sandbox without the call) changes nothing else.
fn yield_to_the_data_path() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on this thread's own id, with a valid nice value.
    unsafe {
        let tid = libc::gettid();
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The nice value of this process's thread named `name`, if there is one.
    fn nice_of(name: &str) -> Option<i64> {
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() == name {
                let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
                // Fields after the ")" that ends the name: nice is the 17th.
                let rest = stat.rsplit_once(')')?.1;
                return rest.split_whitespace().nth(16)?.parse().ok();
            }
        }
        None
    }

    #[tokio::test]
    async fn the_history_writer_yields_to_the_connections() {
        let dir = std::env::temp_dir().join(format!("rustsocks-nice-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = SessionsConfig {
            database_url: format!("sqlite://{}", dir.join("s.db").display()),
            ..SessionsConfig::default()
        };
        let telemetry = Telemetry::start(&crate::config::TelemetryConfig::default());
        let metrics = Metrics::new(None, &crate::metrics::Phases::new());
        let sessions = Sessions::start(&config, telemetry, &metrics).unwrap();
        // The thread sets its priority as it starts: wait for it (bounded).
        let mut nice = None;
        for _ in 0..200 {
            nice = nice_of("session-writer");
            if nice == Some(10) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        sessions.shutdown();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(nice, Some(10));
    }
}
