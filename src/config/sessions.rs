//! `[sessions]`: session tracking and its history store.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Track sessions (live registry, history, the sessions API). Off: none of it
    /// runs and the data path does not touch it.
    pub enabled: bool,
    /// Where history is kept. `sqlite://PATH` (relative to the working directory).
    pub database_url: String,
    /// Records written per transaction, at most.
    pub batch_size: usize,
    /// Longest a record waits before it is written: what a crash can lose.
    pub batch_interval_ms: u64,
    /// Finished sessions older than this are deleted.
    pub retention_days: u64,
    /// Records waiting for the store (while it fails, say) beyond which new ones
    /// are dropped and counted.
    pub max_queued: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            database_url: "sqlite://rustsocks-sessions.db".into(),
            batch_size: 400,
            batch_interval_ms: 250,
            retention_days: 90,
            max_queued: 100_000,
        }
    }
}

impl SessionsConfig {
    pub fn batch_interval(&self) -> Duration {
        Duration::from_millis(self.batch_interval_ms)
    }

    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_days * 86_400)
    }

    /// The SQLite file path, when the URL is a `sqlite://` URL.
    pub fn sqlite_path(&self) -> Option<&str> {
        self.database_url
            .strip_prefix("sqlite://")
            .filter(|p| !p.is_empty())
    }
}
