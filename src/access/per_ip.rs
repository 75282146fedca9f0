//! `server.max_connections_per_ip`: how many connections one client address may hold
//! at once, so that one host cannot take every `max_connections` slot (silent clients
//! at the limit made every other client wait up to the handshake timeout).

use hashbrown::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Open connections per client address. Memory is bounded by the connections open:
/// an address is forgotten when its last connection closes. Clones share the counts.
#[derive(Debug, Clone)]
pub struct PerIpLimit {
    limit: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One open connection of an address; gives its place back when dropped.
#[derive(Debug)]
pub struct PerIpSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIpLimit {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            open: Arc::default(),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A place for one more connection from `ip`, or None at the limit. IPv4-mapped
    /// IPv6 addresses count as the IPv4 address they carry; IPv6 addresses count per
    /// /64 (one host usually has a whole /64 and could take a new address per
    /// connection).
    pub fn try_acquire(&self, ip: IpAddr) -> Option<PerIpSlot> {
        let ip = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(PerIpSlot {
            ip,
            open: Arc::clone(&self.open),
        })
    }

    /// Connections `ip` (its /64, for IPv6) holds now.
    #[cfg(test)]
    pub fn open(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&client_key(ip)).copied().unwrap_or(0)
    }
}

/// What a client address counts as, for limits kept per client: IPv4 as itself (also
/// in IPv4-mapped form), IPv6 by its /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        v4 => v4,
    }
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_limit_and_others_are_unaffected() {
        let limit = PerIpLimit::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limit.try_acquire(a).unwrap();
        let _second = limit.try_acquire(mapped).unwrap();
        assert!(
            limit.try_acquire(a).is_none(),
            "third from the same address"
        );
        let _other = limit.try_acquire(b).expect("another address");
        drop(first);
        let _again = limit.try_acquire(a).expect("a freed place");
        assert_eq!(limit.open(a), 2);
    }

    #[test]
    fn ipv6_addresses_count_per_64() {
        let limit = PerIpLimit::new(1);
        let _one = limit
            .try_acquire("2001:db8:1:2::1".parse().unwrap())
            .unwrap();
        assert!(limit
            .try_acquire("2001:db8:1:2::99".parse().unwrap())
            .is_none());
        assert!(limit
            .try_acquire("2001:db8:1:3::1".parse().unwrap())
            .is_some());
    }

    #[test]
    fn a_closed_address_is_forgotten() {
        let limit = PerIpLimit::new(5);
        let ip: IpAddr = "2001:db8::7".parse().unwrap();
        let slots: Vec<_> = (0..5).map(|_| limit.try_acquire(ip).unwrap()).collect();
        drop(slots);
        assert!(limit.open.lock().unwrap().is_empty());
    }
}
