//! SQLite history store: the embedded default. One connection for the writer
//! thread, one for API reads; WAL mode lets reads run while a batch is written.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use uuid::Uuid;

use super::db_file::{inspect_database_file, DatabaseFile};
use super::record::{from_unix_ms, unix_ms, SessionRecord, Status, StoreOp};
use super::store::{
    HistoryPage, HistoryQuery, SessionStats, SessionStore, SortKey, StoreError, TopEntry,
};

/// Schema versions, applied in order; `PRAGMA user_version` records the last one.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user TEXT,
        client TEXT NOT NULL,
        destination TEXT,
        resolved TEXT,
        command TEXT,
        protocol TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        ended_at INTEGER,
        duration_ms INTEGER,
        bytes_up INTEGER NOT NULL DEFAULT 0,
        bytes_down INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL,
        close_reason TEXT,
        from_pool INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX sessions_started ON sessions(started_at);
    CREATE INDEX sessions_user ON sessions(user);",
    // 2: datagram counts of UDP ASSOCIATE sessions.
    "ALTER TABLE sessions ADD COLUMN datagrams_up INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN datagrams_down INTEGER NOT NULL DEFAULT 0;",
];

/// How long a write waits for a lock held by another process before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_millis(1000);

pub struct SqliteStore {
    write: Mutex<Connection>,
    read: Mutex<Connection>,
}

fn lock(c: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    c.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`. `url` is
    /// only for error messages. An existing file that is not a SQLite database is
    /// refused and left as it is (config validation says so first, with the key).
    pub fn open(path: &str, url: &str) -> Result<Self, StoreError> {
        if let Ok(DatabaseFile::NotSqlite) = inspect_database_file(Path::new(path)) {
            return Err(StoreError::NotSqlite {
                url: url.to_owned(),
            });
        }
        let open_err = |source| StoreError::Open {
            url: url.to_owned(),
            source,
        };
        let write = Connection::open(path).map_err(open_err)?;
        write.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        write
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        write
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        migrate(&write).map_err(open_err)?;
        let read = Connection::open(path).map_err(open_err)?;
        read.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        Ok(Self {
            write: Mutex::new(write),
            read: Mutex::new(read),
        })
    }

    /// Marks sessions left active by a previous run (a crash) as closed. Their end
    /// time is unknown and stays empty. Returns how many.
    pub fn close_interrupted(&self) -> Result<u64, StoreError> {
        let n = lock(&self.write).execute(
            "UPDATE sessions SET status = 'closed', close_reason = 'interrupted: the server stopped before the session ended' WHERE status = 'active'",
            [],
        )?;
        Ok(n as u64)
    }
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        conn.execute_batch(&format!(
            "BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;",
            i + 1
        ))?;
    }
    Ok(())
}

const COLUMNS: &str = "id, user, client, destination, resolved, command, protocol, started_at, \
                       ended_at, duration_ms, bytes_up, bytes_down, status, close_reason, from_pool, \
                       datagrams_up, datagrams_down";

fn record(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    let id: String = row.get(0)?;
    let status: String = row.get(12)?;
    Ok(SessionRecord {
        id: Uuid::parse_str(&id).unwrap_or_default(),
        user: row.get(1)?,
        client: row.get(2)?,
        destination: row.get(3)?,
        resolved: row.get(4)?,
        command: row.get(5)?,
        protocol: row.get(6)?,
        started_at: from_unix_ms(row.get(7)?),
        ended_at: row.get::<_, Option<i64>>(8)?.map(from_unix_ms),
        duration_ms: row.get::<_, Option<i64>>(9)?.map(|d| d.max(0) as u64),
        bytes_client_to_upstream: row.get::<_, i64>(10)?.max(0) as u64,
        bytes_upstream_to_client: row.get::<_, i64>(11)?.max(0) as u64,
        status: status.parse().unwrap_or(Status::Closed),
        close_reason: row.get(13)?,
        from_pool: row.get(14)?,
        datagrams_client_to_upstream: row.get::<_, i64>(15)?.max(0) as u64,
        datagrams_upstream_to_client: row.get::<_, i64>(16)?.max(0) as u64,
    })
}

fn insert(tx: &rusqlite::Transaction<'_>, r: &SessionRecord) -> rusqlite::Result<()> {
    tx.prepare_cached(&format!("INSERT OR REPLACE INTO sessions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"))?
        .execute(params![
            r.id.to_string(),
            r.user,
            r.client,
            r.destination,
            r.resolved,
            r.command,
            r.protocol,
            unix_ms(r.started_at),
            r.ended_at.map(unix_ms),
            r.duration_ms.map(|d| d as i64),
            r.bytes_client_to_upstream as i64,
            r.bytes_upstream_to_client as i64,
            r.status.as_str(),
            r.close_reason,
            r.from_pool,
            r.datagrams_client_to_upstream as i64,
            r.datagrams_upstream_to_client as i64,
        ])?;
    Ok(())
}

/// WHERE clause and parameters for the history filters.
fn filters(q: &HistoryQuery) -> (String, Vec<Value>) {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    let mut like = |column: &str, v: &Option<String>| {
        if let Some(v) = v {
            clauses.push(format!("{column} LIKE ? ESCAPE '\\'"));
            let escaped = v
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            values.push(Value::Text(format!("%{escaped}%")));
        }
    };
    like("user", &q.user);
    like("destination", &q.destination);
    like("client", &q.client);
    if let Some(s) = q.status {
        clauses.push("status = ?".into());
        values.push(Value::Text(s.as_str().into()));
    }
    if let Some(t) = q.since {
        clauses.push("started_at >= ?".into());
        values.push(Value::Integer(unix_ms(t)));
    }
    if let Some(t) = q.until {
        clauses.push("started_at < ?".into());
        values.push(Value::Integer(unix_ms(t)));
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (sql, values)
}

impl SessionStore for SqliteStore {
    fn apply(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let mut conn = lock(&self.write);
        let tx = conn.transaction()?;
        for op in ops {
            match op {
                StoreOp::Insert(r) => insert(&tx, r)?,
                StoreOp::Finish(f) => {
                    tx.prepare_cached(
                        "UPDATE sessions SET ended_at = ?2, duration_ms = ?3, bytes_up = ?4, bytes_down = ?5, status = ?6, close_reason = ?7, datagrams_up = ?8, datagrams_down = ?9 WHERE id = ?1",
                    )?
                    .execute(params![
                        f.id.to_string(),
                        unix_ms(f.ended_at),
                        f.duration_ms as i64,
                        f.bytes_client_to_upstream as i64,
                        f.bytes_upstream_to_client as i64,
                        f.status.as_str(),
                        f.close_reason,
                        f.datagrams_client_to_upstream as i64,
                        f.datagrams_upstream_to_client as i64,
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn cleanup(&self, before: SystemTime) -> Result<u64, StoreError> {
        let n = lock(&self.write).execute(
            "DELETE FROM sessions WHERE started_at < ?1 AND status != 'active'",
            params![unix_ms(before)],
        )?;
        Ok(n as u64)
    }

    fn history(&self, q: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        let (where_sql, values) = filters(q);
        let conn = lock(&self.read);
        let total: i64 = conn.query_row(
            &format!("SELECT COUNT(*) FROM sessions {where_sql}"),
            params_from_iter(values.iter()),
            |r| r.get(0),
        )?;
        let order = match q.sort {
            SortKey::Start => "started_at",
            SortKey::Duration => "COALESCE(duration_ms, 0)",
            SortKey::Bytes => "(bytes_up + bytes_down)",
        };
        let dir = if q.descending { "DESC" } else { "ASC" };
        let offset = (q.page.saturating_sub(1)).saturating_mul(q.page_size);
        let sql = format!(
            "SELECT {COLUMNS} FROM sessions {where_sql} ORDER BY {order} {dir}, id {dir} LIMIT {} OFFSET {}",
            q.page_size, offset
        );
        let mut stmt = conn.prepare(&sql)?;
        let sessions = stmt
            .query_map(params_from_iter(values.iter()), record)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HistoryPage {
            total: total.max(0) as u64,
            page: q.page,
            page_size: q.page_size,
            sessions,
        })
    }

    fn get(&self, id: Uuid) -> Result<Option<SessionRecord>, StoreError> {
        let conn = lock(&self.read);
        let sql = format!("SELECT {COLUMNS} FROM sessions WHERE id = ?1");
        Ok(conn
            .query_row(&sql, params![id.to_string()], record)
            .optional()?)
    }

    fn stats(&self, since: SystemTime, top: usize) -> Result<SessionStats, StoreError> {
        let conn = lock(&self.read);
        let since = unix_ms(since);
        let (total, up, down): (i64, i64, i64) = conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(bytes_up), 0), COALESCE(SUM(bytes_down), 0) FROM sessions WHERE started_at >= ?1",
            params![since],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let mut by_status = BTreeMap::new();
        let mut stmt = conn.prepare(
            "SELECT status, COUNT(*) FROM sessions WHERE started_at >= ?1 GROUP BY status",
        )?;
        for row in stmt.query_map(params![since], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })? {
            let (status, n) = row?;
            by_status.insert(status, n.max(0) as u64);
        }
        let top_by = |column: &str| -> Result<Vec<TopEntry>, StoreError> {
            let sql = format!(
                "SELECT {column}, COUNT(*) AS n, COALESCE(SUM(bytes_up + bytes_down), 0) FROM sessions \
                 WHERE started_at >= ?1 AND {column} IS NOT NULL GROUP BY {column} ORDER BY n DESC, {column} LIMIT ?2"
            );
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(params![since, top as i64], |r| {
                Ok(TopEntry {
                    name: r.get(0)?,
                    sessions: r.get::<_, i64>(1)?.max(0) as u64,
                    bytes: r.get::<_, i64>(2)?.max(0) as u64,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        };
        Ok(SessionStats {
            total_sessions: total.max(0) as u64,
            bytes_client_to_upstream: up.max(0) as u64,
            bytes_upstream_to_client: down.max(0) as u64,
            by_status,
            top_users: top_by("user")?,
            top_destinations: top_by("destination")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_database_is_migrated_and_keeps_its_rows() {
        let path =
            std::env::temp_dir().join(format!("rustsocks-migrate-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let path_str = path.to_str().unwrap();
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(&format!("{}; PRAGMA user_version = 1;", MIGRATIONS[0]))
                .unwrap();
            old.execute(
                "INSERT INTO sessions (id, client, protocol, started_at, status) VALUES (?1, '127.0.0.1:1', 'socks5', 1000, 'closed')",
                params![Uuid::nil().to_string()],
            )
            .unwrap();
        }
        let store = SqliteStore::open(path_str, "sqlite://test").unwrap();
        let version: usize = lock(&store.read)
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());
        let row = store
            .get(Uuid::nil())
            .unwrap()
            .expect("the old row survived");
        assert_eq!(
            (row.client.as_str(), row.datagrams_client_to_upstream),
            ("127.0.0.1:1", 0)
        );
        drop(store);
        let _ = std::fs::remove_file(&path);
    }
}
