//! Operational event feed: a bounded, in-process record of what an operator should
//! know about: pool evictions and drops, failing upstreams, failed logins, the
//! connection limit, configuration warnings.
//!
//! Stages emit typed `Signal`s with `try_send` on a bounded channel, so the data path
//! never waits and never formats anything; one background task turns them into
//! `Event`s, keeps the newest `max_events` of them for at most `retention_hours`, and
//! broadcasts each to live subscribers (the API's event stream). Signals that repeat
//! (an upstream refusing every connection, a client guessing passwords) are summed
//! per subject over `aggregation_interval_secs` into one event with a count. When the
//! channel is full a signal is dropped and counted in `lost`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use crate::config::TelemetryConfig;

/// Signals waiting to be recorded; beyond this they are counted as lost.
const CHANNEL_CAPACITY: usize = 4096;
/// Events buffered per live subscriber; a slower subscriber skips ahead.
const SUBSCRIBER_BUFFER: usize = 256;
/// Subjects summed per interval at most. Each becomes an event at the flush, so a
/// client that makes many distinct ones (blocked requests to unique names) must not
/// push every other event out of the store: past this, new subjects are counted as
/// lost.
const MAX_SUBJECTS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    ConnectionPool,
    Upstream,
    Auth,
    Limits,
    Config,
    Sessions,
    Access,
}

// The names accepted by `FromStr` (and the API's filters).
crate::names::names!(Severity {
    Info => "info",
    Warning => "warning",
    Error => "error",
});
crate::names::names!(Category {
    ConnectionPool => "connection_pool",
    Upstream => "upstream",
    Auth => "auth",
    Limits => "limits",
    Config => "config",
    Sessions => "sessions",
    Access => "access",
});

/// What a stage reports. Typed, so the stage does no formatting.
#[derive(Debug, Clone)]
pub enum Signal {
    /// The global idle limit forced out the least recently used idle connection.
    PoolEvicted { destination: String, limit: usize },
    /// A connection came back to a destination already holding its limit of idle
    /// connections, and was closed.
    PoolDroppedFull { destination: String, limit: usize },
    /// A dial for a client failed (aggregated per destination).
    UpstreamConnectFailed { destination: String, error: String },
    /// A login failed (aggregated per client address).
    AuthFailed { client: IpAddr, user: String },
    /// The listener paused at `max_connections` (aggregated).
    MaxConnectionsReached { limit: usize },
    /// A client address at `server.max_connections_per_ip` had a connection closed
    /// (aggregated per client address).
    PerIpLimitReached { client: IpAddr, limit: usize },
    /// A login from an address with recent failures was held back before its check
    /// (aggregated per client address).
    AuthThrottled {
        client: IpAddr,
        failures: u32,
        delay: Duration,
    },
    /// Something in the configuration worth a look, found at start-up.
    ConfigWarning { message: String },
    /// The session history store failed to write; records wait in memory.
    SessionStoreFailed { error: String, queued: usize },
    /// The session history store writes again after a failure.
    SessionStoreRecovered,
    /// The access rules refused a request (aggregated per user and destination).
    AclBlocked {
        user: String,
        destination: String,
        reason: String,
    },
    /// The access rules were reloaded.
    AclReloaded {
        trigger: String,
        rules: usize,
        sessions_closed: usize,
    },
    /// A reload was refused: the rules in force stay.
    AclReloadFailed {
        trigger: String,
        keys: Vec<String>,
        error: String,
    },
    /// The TLS certificate and key (and client CAs) were loaded again.
    TlsReloaded { trigger: String },
    /// A TLS certificate in force expires soon (or has expired).
    TlsCertificateExpiring { listener: String, days_left: i64 },
    /// New TLS files could not be used: the ones in force stay.
    TlsReloadFailed {
        trigger: String,
        key: String,
        error: String,
    },
}

/// One recorded event, as the API serves it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Event {
    pub id: u64,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: SystemTime,
    pub severity: Severity,
    pub category: Category,
    pub message: String,
    /// The fields of the signal (destination, limit, client, ...).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

/// Which events a reader wants.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub severity: Option<Severity>,
    pub category: Option<Category>,
    pub since: Option<SystemTime>,
}

impl EventFilter {
    pub fn matches(&self, e: &Event) -> bool {
        self.severity.is_none_or(|s| e.severity == s)
            && self.category.is_none_or(|c| e.category == c)
            && self.since.is_none_or(|t| e.timestamp >= t)
    }
}

/// Handle for emitting and reading events; cheap to clone.
#[derive(Clone)]
pub struct Telemetry {
    tx: mpsc::Sender<Signal>,
    store: Arc<Store>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("lost", &self.lost())
            .finish()
    }
}

struct Store {
    events: Mutex<VecDeque<Event>>,
    capacity: usize,
    retention: Duration,
    lost: AtomicU64,
    live: broadcast::Sender<Event>,
}

impl Store {
    fn record(&self, event: Event) {
        let _ = self.live.send(event.clone());
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        if events.len() == self.capacity {
            events.pop_front();
        }
        events.push_back(event);
        let cutoff = SystemTime::now().checked_sub(self.retention);
        while events
            .front()
            .is_some_and(|e| cutoff.is_some_and(|c| e.timestamp < c))
        {
            events.pop_front();
        }
    }
}

impl Telemetry {
    /// Starts the recording task (inside a Tokio runtime); it ends when the last
    /// handle is dropped, after recording what is still aggregated.
    pub fn start(config: &TelemetryConfig) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let store = Arc::new(Store {
            events: Mutex::new(VecDeque::new()),
            capacity: config.max_events.max(1),
            retention: config.retention(),
            lost: AtomicU64::new(0),
            live: broadcast::channel(SUBSCRIBER_BUFFER).0,
        });
        let interval = config.aggregation_interval().max(Duration::from_millis(10));
        tokio::spawn(run(rx, Arc::clone(&store), interval));
        Self { tx, store }
    }

    /// Records `signal` without waiting; drops and counts it if the feed is backed up.
    pub fn emit(&self, signal: Signal) {
        if self.tx.try_send(signal).is_err() {
            self.store.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Up to `limit` matching events, newest first, within the retention period.
    pub fn events(&self, filter: &EventFilter, limit: usize) -> Vec<Event> {
        let cutoff = SystemTime::now().checked_sub(self.store.retention);
        let events = self
            .store
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        events
            .iter()
            .rev()
            .filter(|e| cutoff.is_none_or(|c| e.timestamp >= c) && filter.matches(e))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Up to `limit` events of any kind, newest first.
    pub fn recent(&self, limit: usize) -> Vec<Event> {
        self.events(&EventFilter::default(), limit)
    }

    /// Every event recorded from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.store.live.subscribe()
    }

    /// Signals dropped because the channel was full.
    pub fn lost(&self) -> u64 {
        self.store.lost.load(Ordering::Relaxed)
    }
}

/// Subjects whose signals are summed per interval.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum AggKey {
    Upstream(String),
    Auth(IpAddr),
    MaxConnections,
    PerIp(IpAddr),
    Throttled(IpAddr),
    Acl { user: String, destination: String },
}

/// What was summed for one subject in the current interval.
struct Tally {
    count: u64,
    /// The most recent detail (error text, user name, limit).
    last: String,
}

async fn run(mut rx: mpsc::Receiver<Signal>, store: Arc<Store>, interval: Duration) {
    let mut next_id = 1u64;
    let mut pending: HashMap<AggKey, Tally> = HashMap::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            signal = rx.recv() => match signal {
                Some(signal) => match aggregate_key(&signal) {
                    Some((key, _)) if pending.len() >= MAX_SUBJECTS && !pending.contains_key(&key) => {
                        store.lost.fetch_add(1, Ordering::Relaxed);
                    }
                    Some((key, detail)) => {
                        let t = pending.entry(key).or_insert(Tally { count: 0, last: String::new() });
                        t.count += 1;
                        t.last = detail;
                    }
                    None => store.record(event(&mut next_id, signal)),
                },
                None => break,
            },
            _ = ticker.tick() => flush(&mut pending, &store, &mut next_id, interval),
        }
    }
    flush(&mut pending, &store, &mut next_id, interval);
}

fn aggregate_key(signal: &Signal) -> Option<(AggKey, String)> {
    match signal {
        Signal::UpstreamConnectFailed { destination, error } => {
            Some((AggKey::Upstream(destination.clone()), error.clone()))
        }
        Signal::AuthFailed { client, user } => Some((AggKey::Auth(*client), user.clone())),
        Signal::MaxConnectionsReached { limit } => {
            Some((AggKey::MaxConnections, limit.to_string()))
        }
        Signal::PerIpLimitReached { client, limit } => {
            Some((AggKey::PerIp(*client), limit.to_string()))
        }
        Signal::AuthThrottled {
            client,
            failures,
            delay,
        } => Some((
            AggKey::Throttled(*client),
            format!("{failures} {}", delay.as_millis()),
        )),
        Signal::AclBlocked {
            user,
            destination,
            reason,
        } => Some((
            AggKey::Acl {
                user: user.clone(),
                destination: destination.clone(),
            },
            reason.clone(),
        )),
        _ => None,
    }
}

fn flush(
    pending: &mut HashMap<AggKey, Tally>,
    store: &Store,
    next_id: &mut u64,
    interval: Duration,
) {
    let secs = interval.as_secs_f64();
    for (key, t) in pending.drain() {
        let (severity, category, message, details) = match key {
            AggKey::Upstream(dest) => (
                Severity::Warning,
                Category::Upstream,
                format!("{} connect failure(s) to {dest} in the last {secs} s: {}", t.count, t.last),
                json!({ "destination": dest, "count": t.count, "last_error": t.last, "interval_secs": secs }),
            ),
            AggKey::Auth(client) => (
                Severity::Warning,
                Category::Auth,
                format!("{} failed login(s) from {client} in the last {secs} s (last user {:?})", t.count, t.last),
                json!({ "client": client.to_string(), "count": t.count, "last_user": t.last, "interval_secs": secs }),
            ),
            AggKey::MaxConnections => (
                Severity::Warning,
                Category::Limits,
                format!("max_connections ({}) reached {} time(s) in the last {secs} s; accepting paused until a connection closed", t.last, t.count),
                json!({ "limit": t.last.parse::<u64>().unwrap_or(0), "limit_key": "server.max_connections", "count": t.count, "interval_secs": secs }),
            ),
            AggKey::PerIp(client) => (
                Severity::Warning,
                Category::Limits,
                format!("{} connection(s) from {client} closed at accept in the last {secs} s: max_connections_per_ip ({}) reached", t.count, t.last),
                json!({ "client": client.to_string(), "limit": t.last.parse::<u64>().unwrap_or(0), "limit_key": "server.max_connections_per_ip", "count": t.count, "interval_secs": secs }),
            ),
            AggKey::Acl { user, destination } => (
                Severity::Warning,
                Category::Access,
                format!("{} request(s) by {} to {destination} blocked in the last {secs} s: {}", t.count, if user.is_empty() { "(no user)" } else { &user }, t.last),
                json!({ "user": user, "destination": destination, "count": t.count, "reason": t.last, "interval_secs": secs }),
            ),
            AggKey::Throttled(client) => {
                // `last` is "FAILURES DELAY_MS" (see `aggregate_key`).
                let mut parts = t.last.split(' ').map(|n| n.parse::<u64>().unwrap_or(0));
                let (failures, delay_ms) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
                (
                    Severity::Warning,
                    Category::Auth,
                    format!("{} login(s) from {client} held back in the last {secs} s after {failures} recent failure(s) (last delay {delay_ms} ms)", t.count),
                    json!({ "client": client.to_string(), "count": t.count, "failures": failures, "last_delay_ms": delay_ms, "interval_secs": secs }),
                )
            }
        };
        store.record(new_event(next_id, severity, category, message, details));
    }
}

fn event(next_id: &mut u64, signal: Signal) -> Event {
    let (severity, category, message, details) = match signal {
        Signal::PoolEvicted { destination, limit } => (
            Severity::Warning,
            Category::ConnectionPool,
            format!("evicted the least recently used idle connection (to {destination}): max_total_idle = {limit} reached"),
            json!({ "destination": destination, "limit": limit, "limit_key": "server.pool.max_total_idle" }),
        ),
        Signal::PoolDroppedFull { destination, limit } => (
            Severity::Warning,
            Category::ConnectionPool,
            format!("closed a connection to {destination} arriving at a full pool: max_idle_per_dest = {limit} reached"),
            json!({ "destination": destination, "limit": limit, "limit_key": "server.pool.max_idle_per_dest" }),
        ),
        Signal::ConfigWarning { message } => (Severity::Warning, Category::Config, message, json!({})),
        Signal::SessionStoreFailed { error, queued } => (
            Severity::Error,
            Category::Sessions,
            format!("session history store failed: {error}; {queued} record(s) wait in memory and are retried"),
            json!({ "error": error, "queued": queued }),
        ),
        Signal::SessionStoreRecovered => (
            Severity::Info,
            Category::Sessions,
            "session history store writes again; queued records were written".to_owned(),
            json!({}),
        ),
        Signal::AclReloaded {
            trigger,
            rules,
            sessions_closed,
        } => (
            Severity::Info,
            Category::Access,
            format!("access rules reloaded ({trigger}): {rules} rule(s); {sessions_closed} live session(s) now blocked were closed"),
            json!({ "trigger": trigger, "rules": rules, "sessions_closed": sessions_closed }),
        ),
        Signal::AclReloadFailed {
            trigger,
            keys,
            error,
        } => (
            Severity::Error,
            Category::Access,
            format!("access rules not reloaded ({trigger}); the rules in force stay: {error}"),
            json!({ "trigger": trigger, "keys": keys, "error": error }),
        ),
        Signal::TlsCertificateExpiring {
            listener,
            days_left,
        } => (
            Severity::Warning,
            Category::Config,
            match days_left {
                d if d < 0 => format!("the TLS certificate of the {listener} listener has expired"),
                d => format!("the TLS certificate of the {listener} listener expires in {d} day(s); replace the file (it is reloaded when it changes)"),
            },
            json!({ "listener": listener, "days_left": days_left }),
        ),
        Signal::TlsReloaded { trigger } => (
            Severity::Info,
            Category::Config,
            format!("TLS certificate reloaded ({trigger}); new handshakes use it, open tunnels go on"),
            json!({ "trigger": trigger }),
        ),
        Signal::TlsReloadFailed {
            trigger,
            key,
            error,
        } => (
            Severity::Error,
            Category::Config,
            format!("TLS certificate not reloaded ({trigger}); the one in force stays: {error}"),
            json!({ "trigger": trigger, "key": key, "error": error }),
        ),
        // Aggregated kinds reach here only if a caller bypasses aggregation.
        other => (Severity::Info, Category::Limits, format!("{other:?}"), json!({})),
    };
    new_event(next_id, severity, category, message, details)
}

fn new_event(
    next_id: &mut u64,
    severity: Severity,
    category: Category,
    message: String,
    details: serde_json::Value,
) -> Event {
    let id = *next_id;
    *next_id += 1;
    Event {
        id,
        timestamp: SystemTime::now(),
        severity,
        category,
        message,
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_events: usize) -> TelemetryConfig {
        TelemetryConfig {
            max_events,
            aggregation_interval_secs: 1,
            ..TelemetryConfig::default()
        }
    }

    /// Waits (bounded) until the newest recorded event has id `id`.
    async fn wait_for_id(t: &Telemetry, id: u64) -> Vec<Event> {
        for _ in 0..2000 {
            let events = t.recent(usize::MAX);
            if events.first().map(|e| e.id) == Some(id) {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("event {id} was not recorded");
    }

    #[tokio::test]
    async fn keeps_the_newest_events_up_to_capacity() {
        let t = Telemetry::start(&config(3));
        for i in 0..5 {
            t.emit(Signal::PoolDroppedFull {
                destination: format!("d{i}"),
                limit: 4,
            });
        }
        let events = wait_for_id(&t, 5).await;
        let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
        assert_eq!(ids, [5, 4, 3]);
        let e = &events[0];
        assert_eq!(
            (e.severity, e.category),
            (Severity::Warning, Category::ConnectionPool)
        );
        assert_eq!(e.details["destination"], "d4");
        assert_eq!(e.details["limit"], 4);
        assert_eq!(t.lost(), 0);
    }

    #[tokio::test]
    async fn repeated_failures_become_one_event_with_a_count() {
        let t = Telemetry::start(&config(16));
        let mut live = t.subscribe();
        for _ in 0..50 {
            t.emit(Signal::UpstreamConnectFailed {
                destination: "10.0.0.1:80".into(),
                error: "refused".into(),
            });
        }
        let e = tokio::time::timeout(Duration::from_secs(5), live.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.category, Category::Upstream);
        assert_eq!(e.details["count"], 50);
        assert_eq!(e.details["destination"], "10.0.0.1:80");
        assert_eq!(t.recent(16).len(), 1);
    }

    #[tokio::test]
    async fn filters_select_by_severity_category_and_time() {
        let t = Telemetry::start(&config(16));
        t.emit(Signal::ConfigWarning {
            message: "plain password".into(),
        });
        t.emit(Signal::PoolEvicted {
            destination: "a:1".into(),
            limit: 2,
        });
        wait_for_id(&t, 2).await;
        let only = |f: EventFilter| {
            t.events(&f, 10)
                .into_iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            only(EventFilter {
                category: Some(Category::Config),
                ..Default::default()
            }),
            [1]
        );
        assert_eq!(
            only(EventFilter {
                severity: Some(Severity::Error),
                ..Default::default()
            }),
            Vec::<u64>::new()
        );
        let future = SystemTime::now() + Duration::from_secs(60);
        assert!(only(EventFilter {
            since: Some(future),
            ..Default::default()
        })
        .is_empty());
        assert_eq!(t.events(&EventFilter::default(), 1).len(), 1);
        assert_eq!(
            "connection_pool".parse::<Category>(),
            Ok(Category::ConnectionPool)
        );
        assert!("nope".parse::<Severity>().is_err());
    }
}
