//! `[api]` and `[telemetry]`: the management HTTP API and the event feed it serves.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Secret, TlsSection};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub enabled: bool,
    pub bind_address: IpAddr,
    /// 0 asks the OS for a free port (tests use this).
    pub port: u16,
    /// Bearer token required on every route but `/health`.
    pub token: Option<Secret>,
    /// File holding the token (trailing newline ignored), instead of `token`.
    pub token_file: Option<PathBuf>,
    /// HTTPS: the API (and the dashboard) over TLS.
    pub tls: TlsSection,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 9090,
            token: None,
            token_file: None,
            tls: TlsSection::default(),
        }
    }
}

impl ApiConfig {
    pub fn bind(&self) -> SocketAddr {
        SocketAddr::new(self.bind_address, self.port)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Events kept in memory; the oldest go first.
    pub max_events: usize,
    /// Events older than this are dropped.
    pub retention_hours: u64,
    /// Repeated failures (an upstream that refuses, a client that keeps failing to
    /// log in) are summed over this interval into one event with a count.
    pub aggregation_interval_secs: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            max_events: 256,
            retention_hours: 6,
            aggregation_interval_secs: 10,
        }
    }
}

impl TelemetryConfig {
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_hours * 3600)
    }

    pub fn aggregation_interval(&self) -> Duration {
        Duration::from_secs(self.aggregation_interval_secs)
    }
}
