//! `[server]`: the SOCKS listener, its limits and timeouts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::TlsSection;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub bind_address: IpAddr,
    /// 0 asks the OS for a free port (tests use this).
    pub bind_port: u16,
    /// Open client connections, handshakes included. At the limit the listener stops
    /// accepting until one closes.
    pub max_connections: usize,
    /// Open connections one client address may hold, so that one host cannot take
    /// every slot; default (unset): a quarter of `max_connections`, at least 64
    /// (or `max_connections` if smaller).
    pub max_connections_per_ip: Option<usize>,
    /// Bound on the greeting, authentication and request. (The upstream connect has
    /// `pool.connect_timeout_ms`; the wait for a BIND peer, `bind_timeout_secs`.)
    pub handshake_timeout_ms: u64,
    /// Close a tunnel after this long with no byte in either direction; 0 = never.
    pub relay_idle_timeout_secs: u64,
    /// On SIGINT/SIGTERM, how long open tunnels may go on before they are closed.
    pub shutdown_grace_secs: u64,
    /// Permit a non-loopback bind with no authentication (an open proxy).
    pub allow_open_proxy: bool,
    /// Address BIND listens on and reports; default: the address the client
    /// connected to.
    pub external_address: Option<IpAddr>,
    /// How long BIND waits for its one inbound connection.
    pub bind_timeout_secs: u64,
    /// A UDP association with no datagram either way for this long is ended.
    pub udp_idle_timeout_secs: u64,
    /// TCP keepalive on client and upstream sockets: the first probe after this many
    /// idle seconds, then every 30 s (or this, if shorter), 4 probes; 0 = off. Without
    /// it a peer that vanishes (a NAT timeout, a laptop closed) leaves its tunnel open
    /// for ever when `relay_idle_timeout_secs` is 0.
    pub tcp_keepalive_secs: u64,
    /// Threads running connections; 0 = one per CPU. On a machine shared with
    /// other busy processes, fewer threads mean fewer cross-thread wake-ups.
    pub worker_threads: usize,
    /// How connections are spread over those threads (see `Runtime`).
    pub runtime: Runtime,
    pub pool: PoolSection,
    /// SOCKS over TLS on `bind_address:bind_port`.
    pub tls: TlsSection,
    /// With TLS on: a second, plain SOCKS listener, loopback only (local clients
    /// and health checks that do not speak TLS).
    pub plain_bind: Option<SocketAddr>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            bind_port: 1080,
            max_connections: 10_000,
            max_connections_per_ip: None,
            handshake_timeout_ms: 10_000,
            relay_idle_timeout_secs: 0,
            shutdown_grace_secs: 10,
            allow_open_proxy: false,
            external_address: None,
            bind_timeout_secs: 60,
            udp_idle_timeout_secs: 120,
            tcp_keepalive_secs: 300,
            worker_threads: 0,
            runtime: Runtime::Shared,
            pool: PoolSection::default(),
            tls: TlsSection::default(),
            plain_bind: None,
        }
    }
}

/// `server.runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    /// One single-threaded runtime per worker thread, each with its own listening
    /// socket (`SO_REUSEPORT`: the kernel spreads clients over them): a
    /// connection's whole life, both sockets and its timers, stays on one thread,
    /// with no hand-off between threads. No thread takes over another's clients,
    /// so one that the OS preempts delays its whole queue (BENCHMARKS.md: 3-4 %
    /// more sessions/s than `Shared` under load, but a 1.5x worse p99 at 200
    /// concurrent clients, on a 2-core machine shared with the load generator).
    PerCore,
    /// One work-stealing runtime whose threads share one listener and pass tasks
    /// between them; the default.
    Shared,
}

impl ServerConfig {
    /// The threads that run connections: `worker_threads`, or one per CPU.
    pub fn threads(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    pub fn tcp_keepalive(&self) -> Option<Duration> {
        (self.tcp_keepalive_secs > 0).then(|| Duration::from_secs(self.tcp_keepalive_secs))
    }

    pub fn bind(&self) -> SocketAddr {
        SocketAddr::new(self.bind_address, self.bind_port)
    }

    /// `max_connections_per_ip`, or its default: a quarter of `max_connections`, but
    /// not below 64 (or `max_connections`, if that is smaller), so that a small
    /// limit still lets one host open a browser's worth of connections.
    pub fn per_ip_limit(&self) -> usize {
        self.max_connections_per_ip
            .unwrap_or_else(|| (self.max_connections / 4).max(self.max_connections.min(64)))
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    pub fn relay_idle_timeout(&self) -> Option<Duration> {
        (self.relay_idle_timeout_secs > 0)
            .then(|| Duration::from_secs(self.relay_idle_timeout_secs))
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn bind_timeout(&self) -> Duration {
        Duration::from_secs(self.bind_timeout_secs)
    }

    pub fn udp_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.udp_idle_timeout_secs)
    }
}

/// `[server.pool]`: the upstream connection pool (docs/connection-pool.md).
/// `connect_timeout_ms` bounds every upstream dial, pooled or not.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolSection {
    pub enabled: bool,
    /// Idle connections kept per destination.
    pub max_idle_per_dest: usize,
    /// Idle connections kept across all destinations; at the limit the least
    /// recently used one is evicted.
    pub max_total_idle: usize,
    /// An idle connection older than this is closed, never handed out.
    pub idle_timeout_secs: u64,
    pub connect_timeout_ms: u64,
}

impl Default for PoolSection {
    fn default() -> Self {
        Self {
            enabled: false,
            max_idle_per_dest: 4,
            max_total_idle: 100,
            idle_timeout_secs: 90,
            connect_timeout_ms: 5_000,
        }
    }
}

impl PoolSection {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
}
