//! RustSocks: a SOCKS5 (RFC 1928, RFC 1929) and SOCKS4/4a proxy server.
//!
//! A connection flows through the modules in this order:
//! `server::listener` (accept, limits) → `server::handshake` (greeting, `auth`,
//! request, decoded by `protocol`) → `connector` (resolve, check, pooled connection or dial) →
//! `server::relay` (both directions, half-close, byte counts).
//! `config` holds the typed configuration every stage is built from; `telemetry` is
//! the operational event feed the stages report into, `metrics` the Prometheus
//! counters; `api` serves both, and the pool's statistics, over HTTP.

pub mod access;
pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod connector;
pub mod counters;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod metrics;
mod names;
pub mod protocol;
pub mod server;
pub mod session;
pub mod telemetry;
pub mod tls;

pub use app::{App, Running, StartError};
pub use config::Config;
pub use server::ShutdownReport;
