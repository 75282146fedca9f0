//! Resolution, the connector's first step: a destination becomes the addresses it
//! stands for. Kept apart from the dial so that every address can be checked
//! (`AddressCheck`) before anything is sent to it.

use std::net::SocketAddr;

use super::ConnectError;
use crate::protocol::TargetAddr;

/// The addresses `dest` stands for, in the resolver's order: an IP destination is
/// its own one address; a name is looked up (the system resolver, as getaddrinfo).
pub async fn resolve(dest: &TargetAddr) -> Result<Vec<SocketAddr>, ConnectError> {
    match dest {
        TargetAddr::Ip(addr) => Ok(vec![*addr]),
        TargetAddr::Domain(host, port) => {
            let found = tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map_err(|source| ConnectError::Resolve {
                    host: host.clone(),
                    source,
                })?;
            let addrs: Vec<SocketAddr> = found.collect();
            if addrs.is_empty() {
                return Err(ConnectError::NoAddress { host: host.clone() });
            }
            Ok(addrs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_is_itself_and_a_name_its_lookup() {
        let ip: SocketAddr = "192.0.2.1:80".parse().unwrap();
        assert_eq!(resolve(&TargetAddr::Ip(ip)).await.unwrap(), [ip]);
        let local = resolve(&TargetAddr::Domain("localhost".into(), 8080))
            .await
            .unwrap();
        assert!(
            local
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 8080),
            "{local:?}"
        );
        let none = resolve(&TargetAddr::Domain("no-such-host.invalid".into(), 1)).await;
        assert!(
            matches!(none, Err(ConnectError::Resolve { .. })),
            "{none:?}"
        );
    }
}
