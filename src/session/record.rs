//! What is recorded about a session, and the operations the store applies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    Closed,
    Failed,
    Rejected,
    Terminated,
}

crate::names::names!(Status {
    Active => "active",
    Closed => "closed",
    Failed => "failed",
    Rejected => "rejected",
    Terminated => "terminated",
});

/// One session: a SOCKS request, accepted or refused. The API serves it as it is
/// (with live counts while active), so its schema is derived from these fields.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[schema(as = Session)]
pub struct SessionRecord {
    pub id: Uuid,
    pub user: Option<String>,
    /// Client address as ip:port.
    pub client: String,
    /// The destination as requested (host name or address, with port); none when
    /// the session was refused before a request was read.
    pub destination: Option<String>,
    /// The upstream address actually connected to.
    pub resolved: Option<String>,
    /// connect | bind | udp_associate.
    pub command: Option<String>,
    /// socks4 | socks5.
    pub protocol: String,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: SystemTime,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<SystemTime>,
    pub duration_ms: Option<u64>,
    pub bytes_client_to_upstream: u64,
    pub bytes_upstream_to_client: u64,
    /// UDP ASSOCIATE: datagrams relayed each way (0 for TCP sessions).
    pub datagrams_client_to_upstream: u64,
    pub datagrams_upstream_to_client: u64,
    pub status: Status,
    pub close_reason: Option<String>,
    /// The upstream connection came from the pool (a hit).
    pub from_pool: bool,
}

/// How a session ended, applied to its stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub id: Uuid,
    pub ended_at: SystemTime,
    pub duration_ms: u64,
    pub bytes_client_to_upstream: u64,
    pub bytes_upstream_to_client: u64,
    pub datagrams_client_to_upstream: u64,
    pub datagrams_upstream_to_client: u64,
    pub status: Status,
    pub close_reason: String,
}

/// A change to the history store.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    /// A new record: an opening session (status active) or a refused one (final).
    Insert(SessionRecord),
    Finish(Finish),
}

pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// 9999-12-31T23:59:59.999Z, the last instant RFC 3339 can write.
const LAST_RFC3339_MS: i64 = 253_402_300_799_999;

/// A stored time; values outside what RFC 3339 can write (a row edited by hand, a
/// clock gone wild) are clamped, so that serialising the record cannot fail.
pub(crate) fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.clamp(0, LAST_RFC3339_MS) as u64)
}

pub(crate) fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

fn rfc3339_opt<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_stored_time_serialises() {
        // Formatting a time past year 9999 fails, and `to_string` panics on that.
        for ms in [
            i64::MIN,
            -1,
            0,
            1_700_000_000_000,
            LAST_RFC3339_MS + 1,
            i64::MAX,
        ] {
            let text = humantime::format_rfc3339_millis(from_unix_ms(ms)).to_string();
            assert!(text.ends_with('Z'), "{ms}: {text}");
        }
        assert_eq!(
            humantime::format_rfc3339_millis(from_unix_ms(i64::MAX)).to_string(),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(from_unix_ms(-5), UNIX_EPOCH);
    }
}
