//! The history store behind a small trait, so that a shared store (PostgreSQL for
//! a fleet of proxies) can be added without touching the data path or the API.

use std::time::SystemTime;

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::record::{SessionRecord, Status, StoreOp};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open session database {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "session database {url}: the file exists and is not a SQLite database; \
         refusing to open it (it is left untouched)"
    )]
    NotSqlite { url: String },
    #[error("session database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("session store task did not complete")]
    Interrupted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Start,
    Duration,
    Bytes,
}

crate::names::names!(SortKey {
    Start => "start",
    Duration => "duration",
    Bytes => "bytes",
});

/// Filters, sort and page of a history query. Text filters match substrings.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub user: Option<String>,
    pub destination: Option<String>,
    pub status: Option<Status>,
    /// Matches the client address (ip:port) as a substring, e.g. an IP.
    pub client: Option<String>,
    /// Sessions that started at or after / before these times.
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    pub sort: SortKey,
    pub descending: bool,
    /// 1-based.
    pub page: u64,
    pub page_size: u64,
}

impl Default for HistoryQuery {
    fn default() -> Self {
        Self {
            user: None,
            destination: None,
            status: None,
            client: None,
            since: None,
            until: None,
            sort: SortKey::Start,
            descending: true,
            page: 1,
            page_size: 50,
        }
    }
}

/// One page of sessions (history, or active sessions).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = SessionPage)]
pub struct HistoryPage {
    /// Matching sessions in all pages.
    pub total: u64,
    /// 1-based, as requested (a page past the end is empty).
    pub page: u64,
    /// As requested, or the default 50.
    pub page_size: u64,
    pub sessions: Vec<SessionRecord>,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct TopEntry {
    pub name: String,
    pub sessions: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct SessionStats {
    pub total_sessions: u64,
    pub bytes_client_to_upstream: u64,
    pub bytes_upstream_to_client: u64,
    pub by_status: std::collections::BTreeMap<String, u64>,
    pub top_users: Vec<TopEntry>,
    pub top_destinations: Vec<TopEntry>,
}

/// A place to keep session history. Writes come from one writer thread in batches;
/// reads come from the API. Implementations do their own locking.
pub trait SessionStore: Send + Sync + 'static {
    /// Applies the operations in order, atomically (all or none).
    fn apply(&self, ops: &[StoreOp]) -> Result<(), StoreError>;
    /// Deletes sessions that started before `before`; returns how many.
    fn cleanup(&self, before: SystemTime) -> Result<u64, StoreError>;
    fn history(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError>;
    fn get(&self, id: Uuid) -> Result<Option<SessionRecord>, StoreError>;
    /// Totals over sessions that started at or after `since`.
    fn stats(&self, since: SystemTime, top: usize) -> Result<SessionStats, StoreError>;
}
