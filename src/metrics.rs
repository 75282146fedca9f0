//! Prometheus metrics, fed by the stages and read by `GET /metrics`.
//!
//! Stages update counters with one atomic add per connection or session (never per
//! read); pool figures and live session counts are read from their owners when the
//! metrics are scraped. Names follow Prometheus conventions and are listed with
//! their labels in `docs/metrics.md`. No label takes unbounded values.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::connector::ConnectionPool;
use crate::tls::Tls;

/// A label set of one `&'static str` pair: values come from fixed lists.
pub type Label = [(&'static str, &'static str); 1];

/// Every label value each family can take, created at start-up so that every
/// series exists (at 0) before its first event: rates and alerts need no special case.
const REJECT_REASONS: &[&str] = &[
    "auth_failed",
    "no_acceptable_method",
    "socks4_needs_auth",
    "command_not_supported",
    "per_ip_limit",
    "own_address",
    "auth_throttled",
    "acl",
    "private_destination",
];
const HANDSHAKE_REASONS: &[&str] = &["timeout", "malformed", "client_closed", "io_error", "tls"];
const DIRECTIONS: &[&str] = &["client_to_upstream", "upstream_to_client"];
const UDP_DROPS: &[&str] = &[
    "foreign_source",
    "own_address",
    "malformed",
    "fragmented",
    "unresolved",
    "no_route",
    "send_failed",
    "too_many_destinations",
    "acl",
];
const REPLIES: &[&str] = &[
    "connection_refused",
    "network_unreachable",
    "host_unreachable",
    "general_failure",
];

type HistogramFamily = Family<Label, Histogram, fn() -> Histogram>;

fn connect_histogram() -> Histogram {
    // 10 µs to about 20 s: a pool hit, a loopback dial, a dial across the world.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 22))
}

/// Time spent in each phase of getting an upstream connection:
/// `upstream_phase_seconds{phase="resolve"|"dial"}`. Made before the connector (which
/// observes them) and registered by `Metrics::new`.
#[derive(Clone)]
pub struct Phases {
    family: HistogramFamily,
    /// Looking a name up (the cache or the system resolver); none for an address.
    pub resolve: Histogram,
    /// Connecting to the addresses, from the first attempt to the one that answered.
    pub dial: Histogram,
}

impl Phases {
    pub fn new() -> Self {
        let family: HistogramFamily = Family::new_with_constructor(connect_histogram);
        // One statement each (see `Metrics::new`).
        let resolve = family.get_or_create(&[("phase", "resolve")]).clone();
        let dial = family.get_or_create(&[("phase", "dial")]).clone();
        Self {
            family,
            resolve,
            dial,
        }
    }
}

impl Default for Phases {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Phases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Phases").finish_non_exhaustive()
    }
}

pub struct Metrics {
    registry: Registry,
    pub connections_accepted: Counter,
    pub connections_active: Gauge,
    /// Requests the server refused: reason = auth_failed | no_acceptable_method |
    /// socks4_needs_auth | command_not_supported | per_ip_limit | own_address |
    /// auth_throttled.
    pub connections_rejected: Family<Label, Counter>,
    /// reason = timeout | malformed | client_closed | io_error | tls.
    pub handshake_failures: Family<Label, Counter>,
    pub auth_failures: Counter,
    /// Logins from addresses with recent failures that were held back before their
    /// check: outcome = delayed | refused (the turn was too far: held for
    /// `auth.login_backoff_max_ms`, then refused without a check).
    pub auth_throttled: Family<Label, Counter>,
    /// Bytes of finished tunnels, the two series of `relay_bytes{direction}`. Held as
    /// handles so that a session end costs two atomic adds, not a family lookup.
    pub bytes_client_to_upstream: Counter,
    pub bytes_upstream_to_client: Counter,
    /// The two series of `upstream_connect_seconds{source}`, held likewise.
    pub connect_pool_hit: Histogram,
    pub connect_new_dial: Histogram,
    /// reply = the SOCKS reply the client got (connection_refused, host_unreachable, ...).
    pub upstream_connect_failures: Family<Label, Counter>,
    pub sessions_active: Gauge,
    /// Session records dropped because the writer's queue was full.
    pub sessions_dropped: Counter,
    /// Failed writes to the session history store.
    pub session_store_errors: Counter,
    /// UDP datagrams relayed; direction = client_to_upstream | upstream_to_client.
    pub udp_datagrams: Family<Label, Counter>,
    /// UDP datagrams dropped; reason = foreign_source | own_address | malformed | fragmented |
    /// unresolved | no_route | send_failed | too_many_destinations.
    pub udp_dropped: Family<Label, Counter>,
    /// Inbound BIND connections refused because they came from another host.
    pub bind_refused: Counter,
    /// Access decisions: decision = allow | block, by = rule | default |
    /// private_destination | own_address.
    pub acl_decisions: Family<[(&'static str, &'static str); 2], Counter>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(pool: Option<ConnectionPool>, phases: &Phases) -> Self {
        let mut registry = Registry::with_prefix("rustsocks");
        let relay_bytes: Family<Label, Counter> = Family::default();
        let connect_seconds: HistogramFamily = Family::new_with_constructor(connect_histogram);
        // One statement each: `get_or_create` returns a read guard, and a guard still
        // alive when the next label is created (a write) would deadlock.
        let bytes_client_to_upstream = relay_bytes
            .get_or_create(&[("direction", "client_to_upstream")])
            .clone();
        let bytes_upstream_to_client = relay_bytes
            .get_or_create(&[("direction", "upstream_to_client")])
            .clone();
        let connect_pool_hit = connect_seconds
            .get_or_create(&[("source", "pool_hit")])
            .clone();
        let connect_new_dial = connect_seconds
            .get_or_create(&[("source", "new_dial")])
            .clone();
        let m = Self {
            connections_accepted: Counter::default(),
            connections_active: Gauge::default(),
            connections_rejected: Family::default(),
            handshake_failures: Family::default(),
            auth_failures: Counter::default(),
            auth_throttled: Family::default(),
            bytes_client_to_upstream,
            bytes_upstream_to_client,
            connect_pool_hit,
            connect_new_dial,
            upstream_connect_failures: Family::default(),
            sessions_active: Gauge::default(),
            sessions_dropped: Counter::default(),
            session_store_errors: Counter::default(),
            udp_datagrams: Family::default(),
            udp_dropped: Family::default(),
            bind_refused: Counter::default(),
            acl_decisions: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections_accepted",
            "Client connections accepted",
            m.connections_accepted.clone(),
        );
        registry.register(
            "connections_active",
            "Client connections open now, handshakes included",
            m.connections_active.clone(),
        );
        registry.register(
            "connections_rejected",
            "Requests refused by the server, by reason",
            m.connections_rejected.clone(),
        );
        registry.register(
            "handshake_failures",
            "Handshakes that did not complete, by reason",
            m.handshake_failures.clone(),
        );
        registry.register(
            "auth_failures",
            "Failed username/password logins",
            m.auth_failures.clone(),
        );
        registry.register(
            "auth_throttled",
            "Logins held back because their address failed recently, by outcome",
            m.auth_throttled.clone(),
        );
        registry.register_with_unit(
            "relay",
            "Bytes relayed by finished tunnels, by direction",
            Unit::Bytes,
            relay_bytes,
        );
        registry.register_with_unit(
            "upstream_connect",
            "Time to get an upstream connection, by source (pool_hit or new_dial)",
            Unit::Seconds,
            connect_seconds,
        );
        registry.register_with_unit(
            "upstream_phase",
            "Time in each phase of getting an upstream connection: resolve (names only), dial",
            Unit::Seconds,
            phases.family.clone(),
        );
        registry.register(
            "upstream_connect_failures",
            "Upstream connects that failed, by the reply sent",
            m.upstream_connect_failures.clone(),
        );
        registry.register(
            "sessions_active",
            "Tunnels relaying now",
            m.sessions_active.clone(),
        );
        registry.register(
            "sessions_dropped",
            "Session records dropped because the writer's queue was full",
            m.sessions_dropped.clone(),
        );
        registry.register(
            "session_store_errors",
            "Failed writes to the session history store",
            m.session_store_errors.clone(),
        );
        registry.register(
            "udp_datagrams",
            "UDP datagrams relayed, by direction",
            m.udp_datagrams.clone(),
        );
        registry.register(
            "udp_dropped",
            "UDP datagrams dropped, by reason",
            m.udp_dropped.clone(),
        );
        registry.register(
            "bind_refused",
            "BIND inbound connections refused (unexpected host)",
            m.bind_refused.clone(),
        );
        registry.register(
            "acl_decisions",
            "Access decisions on destinations (CONNECT, BIND peers, UDP datagrams), by decision and what decided",
            m.acl_decisions.clone(),
        );
        registry.register_collector(Box::new(PoolCollector { pool }));
        for r in REJECT_REASONS {
            let _ = m.connections_rejected.get_or_create(&[("reason", r)]);
        }
        for r in HANDSHAKE_REASONS {
            let _ = m.handshake_failures.get_or_create(&[("reason", r)]);
        }
        for o in ["delayed", "refused"] {
            let _ = m.auth_throttled.get_or_create(&[("outcome", o)]);
        }
        for d in DIRECTIONS {
            let _ = m.udp_datagrams.get_or_create(&[("direction", d)]);
        }
        for r in UDP_DROPS {
            let _ = m.udp_dropped.get_or_create(&[("reason", r)]);
        }
        for (decision, by) in [
            ("allow", "rule"),
            ("allow", "default"),
            ("block", "rule"),
            ("block", "default"),
            ("block", "private_destination"),
            ("block", "own_address"),
            ("block", "invalid_name"),
        ] {
            let _ = m
                .acl_decisions
                .get_or_create(&[("decision", decision), ("by", by)]);
        }
        for r in REPLIES {
            let _ = m.upstream_connect_failures.get_or_create(&[("reply", r)]);
        }
        Self { registry, ..m }
    }

    /// The text exposition format (OpenMetrics text, which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Metrics {
    /// Adds `tls_certificate_expiry_seconds{listener}` for each TLS configuration,
    /// read at scrape time (a reload changes it).
    pub fn report_tls(&mut self, tls: Vec<Arc<Tls>>) {
        if !tls.is_empty() {
            self.registry
                .register_collector(Box::new(TlsCollector { tls }));
        }
    }
}

#[derive(Debug)]
struct TlsCollector {
    tls: Vec<Arc<Tls>>,
}

impl Collector for TlsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "tls_certificate_expiry_seconds",
            "When the certificate in force expires (Unix time), by listener (server, api).",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for tls in &self.tls {
            let labels = [("listener", tls.listener())];
            let g = ConstGauge::new(tls.expires());
            g.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Reads the pool's statistics at scrape time, so the pool keeps no metric state.
#[derive(Debug)]
struct PoolCollector {
    pool: Option<ConnectionPool>,
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        let s = pool.get_stats();
        let gauges = [
            (
                "pool_idle_connections",
                "Idle pooled connections.",
                s.total_idle as i64,
            ),
            (
                "pool_in_use_connections",
                "Pooled-path connections serving a client.",
                s.in_use as i64,
            ),
            (
                "pool_dialing_connections",
                "Pool refill dials in flight.",
                s.dialing as i64,
            ),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let counters = [
            (
                "pool_hits",
                "Checkouts served by a pooled connection.",
                s.hits,
            ),
            ("pool_misses", "Checkouts that had to dial.", s.misses),
            (
                "pool_evictions",
                "Idle connections closed for max_total_idle.",
                s.evicted,
            ),
            (
                "pool_drops",
                "Connections closed for max_idle_per_dest.",
                s.dropped_full,
            ),
            (
                "pool_refreshes",
                "Refill dials that joined the pool.",
                s.refreshed,
            ),
            (
                "pool_expired",
                "Idle connections closed at idle_timeout_secs.",
                s.expired,
            ),
            (
                "pool_stale",
                "Idle connections found closed by the peer.",
                s.stale_on_checkout,
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        Ok(())
    }
}
