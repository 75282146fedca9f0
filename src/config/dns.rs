//! `[dns]`: how destination names are resolved.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// "cached": the built-in resolver (the system's `/etc/resolv.conf` and
    /// `/etc/hosts`) with a cache that keeps each answer for its TTL; "system": the
    /// C library's getaddrinfo for every lookup (follows `/etc/nsswitch.conf`, no
    /// cache).
    pub resolver: ResolverKind,
    /// Names whose answers are kept at most (the least recently used go first).
    pub cache_size: usize,
    /// The longest an answer is kept, whatever its TTL.
    pub max_ttl_secs: u64,
    /// How long a failed lookup (no such name, no address) is remembered.
    pub negative_ttl_secs: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            resolver: ResolverKind::Cached,
            cache_size: 4096,
            max_ttl_secs: 300,
            negative_ttl_secs: 5,
        }
    }
}

impl DnsConfig {
    pub fn max_ttl(&self) -> Duration {
        Duration::from_secs(self.max_ttl_secs)
    }

    pub fn negative_ttl(&self) -> Duration {
        Duration::from_secs(self.negative_ttl_secs)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolverKind {
    #[default]
    Cached,
    System,
}
