//! Resolution, the connector's first step: a destination becomes the addresses it
//! stands for. Kept apart from the dial so that every address can be checked
//! (`AddressCheck`, `DestinationCheck`) before anything is sent to it.
//!
//! Two resolvers (`[dns] resolver`): the built-in one (hickory-resolver, reading
//! `/etc/resolv.conf` and `/etc/hosts`) with a cache that keeps each answer for its
//! TTL (at most `dns.max_ttl_secs`) and failures for `dns.negative_ttl_secs`, so a
//! name asked for again costs a map lookup instead of a thread hop and a file read
//! or a DNS round trip; or the C library's getaddrinfo on the blocking pool for
//! every lookup (which follows `/etc/nsswitch.conf`: LDAP, mDNS and such).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::config::{LookupIpStrategy, ResolveHosts};
use hickory_resolver::TokioResolver;
use prometheus_client::metrics::histogram::Histogram;

use super::answers::Answers;
use super::ConnectError;
use crate::config::{DnsConfig, ResolverKind};
use crate::protocol::TargetAddr;

/// Turns names into addresses; cheap to clone (clones share the cache).
#[derive(Clone, Default)]
pub struct Resolver {
    /// None: the system resolver.
    cached: Option<Arc<TokioResolver>>,
    /// Valid answers of `cached`, looked up first.
    answers: Option<Arc<Answers>>,
    /// Where the time of each lookup is observed, when metrics are kept.
    timing: Option<Histogram>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.cached.is_some() {
            "cached"
        } else {
            "system"
        };
        f.debug_struct("Resolver").field("kind", &kind).finish()
    }
}

impl Resolver {
    /// The resolver `config` asks for. When the system's resolver configuration
    /// cannot be read for the built-in one, the system resolver is used (and the
    /// reason returned, for a warning).
    pub fn new(config: &DnsConfig) -> (Self, Option<String>) {
        if config.resolver == ResolverKind::System || config.cache_size == 0 {
            return (Self::default(), None);
        }
        let mut builder = match TokioResolver::builder_tokio() {
            Ok(b) => b,
            Err(e) => {
                return (
                    Self::default(),
                    Some(format!(
                        "dns.resolver = \"cached\": cannot read the system's resolver \
                         configuration ({e}); using the system resolver without a cache"
                    )),
                )
            }
        };
        let opts = builder.options_mut();
        opts.cache_size = config.cache_size;
        opts.positive_max_ttl = Some(config.max_ttl());
        opts.negative_max_ttl = Some(config.negative_ttl());
        // Both families, queried together: the dial races them (Happy Eyeballs).
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.use_hosts_file = ResolveHosts::Always;
        (
            Self {
                cached: Some(Arc::new(builder.build())),
                answers: Some(Arc::new(Answers::new(config.cache_size, config.max_ttl()))),
                timing: None,
            },
            None,
        )
    }

    /// The same resolver (and cache) without the timing: for lookups that are not a
    /// request's (`POST /api/acl/test`).
    pub fn untimed(&self) -> Self {
        Self {
            timing: None,
            ..self.clone()
        }
    }

    /// Observes the time of every lookup in `histogram`.
    pub fn timed(self, histogram: Histogram) -> Self {
        Self {
            timing: Some(histogram),
            ..self
        }
    }

    /// The addresses `dest` stands for: an IP destination is its own one address;
    /// a name is looked up.
    pub async fn resolve(&self, dest: &TargetAddr) -> Result<Vec<SocketAddr>, ConnectError> {
        let (host, port) = match dest {
            TargetAddr::Ip(addr) => return Ok(vec![*addr]),
            TargetAddr::Domain(host, port) => (host, *port),
        };
        let started = std::time::Instant::now();
        let found = self.lookup(host, port).await;
        if let Some(h) = &self.timing {
            h.observe(started.elapsed().as_secs_f64());
        }
        found
    }

    async fn lookup(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
        let addrs: Vec<SocketAddr> = match &self.cached {
            None => tokio::net::lookup_host((host, port))
                .await
                .map_err(|source| ConnectError::Resolve {
                    host: host.to_owned(),
                    source,
                })?
                .collect(),
            Some(resolver) => {
                let now = std::time::Instant::now();
                if let Some(ips) = self.answers.as_ref().and_then(|a| a.get(host, now)) {
                    return Ok(ips.iter().map(|&ip| SocketAddr::new(ip, port)).collect());
                }
                match resolver.lookup_ip(host).await {
                    Ok(found) => {
                        let ips: Arc<[IpAddr]> = found.iter().collect();
                        if let (Some(answers), false) = (&self.answers, ips.is_empty()) {
                            answers.put(host, Arc::clone(&ips), found.valid_until(), now);
                        }
                        ips.iter().map(|&ip| SocketAddr::new(ip, port)).collect()
                    }
                    Err(e) if e.is_no_records_found() || e.is_nx_domain() => Vec::new(),
                    Err(e) => {
                        return Err(ConnectError::Resolve {
                            host: host.to_owned(),
                            source: io::Error::other(e.to_string()),
                        })
                    }
                }
            }
        };
        if addrs.is_empty() {
            return Err(ConnectError::NoAddress {
                host: host.to_owned(),
            });
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached() -> Resolver {
        let (r, warning) = Resolver::new(&DnsConfig::default());
        assert!(warning.is_none(), "{warning:?}");
        assert!(r.cached.is_some());
        r
    }

    #[tokio::test]
    async fn an_address_is_itself_and_a_name_its_lookup() {
        let ip: SocketAddr = "192.0.2.1:80".parse().unwrap();
        for r in [Resolver::default(), cached()] {
            assert_eq!(r.resolve(&TargetAddr::Ip(ip)).await.unwrap(), [ip]);
            let local = r
                .resolve(&TargetAddr::Domain("localhost".into(), 8080))
                .await
                .unwrap();
            assert!(
                !local.is_empty()
                    && local
                        .iter()
                        .all(|a| a.ip().is_loopback() && a.port() == 8080),
                "{r:?}: {local:?}"
            );
            let none = r
                .resolve(&TargetAddr::Domain("no-such-host.invalid".into(), 1))
                .await;
            assert!(
                matches!(
                    none,
                    Err(ConnectError::Resolve { .. } | ConnectError::NoAddress { .. })
                ),
                "{r:?}: {none:?}"
            );
        }
    }

    #[test]
    fn the_system_resolver_is_chosen_by_name_or_by_a_cache_of_zero() {
        for config in [
            DnsConfig {
                resolver: ResolverKind::System,
                ..DnsConfig::default()
            },
            DnsConfig {
                cache_size: 0,
                ..DnsConfig::default()
            },
        ] {
            assert!(Resolver::new(&config).0.cached.is_none());
        }
    }
}
