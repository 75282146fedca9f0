//! The proxy's own addresses, which no client may use as a destination.
//!
//! A CONNECT to the management API's port on loopback would hand any SOCKS client the
//! API (session history, terminate) without its token; a UDP datagram to the relay's
//! own socket loops through the relay, growing each lap. A destination is "own" when
//! its port is one the process listens on and its address reaches this host: any
//! loopback address, the unspecified address (`0.0.0.0` and `::` connect to the local
//! host on Linux), or an address of one of the host's interfaces. IPv4-mapped IPv6
//! spellings (`::ffff:127.0.0.1`) are compared as the IPv4 address they carry.
//!
//! The port is checked first, so the common case costs a few comparisons; the
//! interface list is read only for a destination on one of our ports, and a reading
//! is reused for a second (addresses can change while the process runs).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use crate::connector::{AddressCheck, Refusal};

/// Ports this process listens on (SOCKS, API, and the sockets of every UDP
/// association while it lasts); see the module documentation. Clones share the UDP
/// ports.
#[derive(Debug, Clone, Default)]
pub struct OwnAddresses {
    ports: Vec<u16>,
    /// Addresses of this host that are on no interface: `server.external_address`
    /// behind a NAT, which a connection can reach by hairpinning.
    extra: Vec<IpAddr>,
    /// Ports of UDP sockets open now, with how many sockets hold each: one
    /// association must not be pointed at another's relay (a loop between them).
    udp: Arc<Mutex<HashMap<u16, usize>>>,
}

/// A UDP port counted as the proxy's own until dropped.
#[derive(Debug)]
pub struct HeldPort {
    udp: Arc<Mutex<HashMap<u16, usize>>>,
    port: u16,
}

impl Drop for HeldPort {
    fn drop(&mut self) {
        let mut udp = self.udp.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = udp.get_mut(&self.port) {
            *n -= 1;
            if *n == 0 {
                udp.remove(&self.port);
            }
        }
    }
}

impl OwnAddresses {
    /// `listening`: every address the process accepts on (port 0 is ignored).
    pub fn new(listening: impl IntoIterator<Item = SocketAddr>) -> Self {
        let mut ports: Vec<u16> = listening
            .into_iter()
            .map(|a| a.port())
            .filter(|&p| p != 0)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        Self {
            ports,
            extra: Vec::new(),
            udp: Arc::default(),
        }
    }

    /// Counts the UDP socket on `port` as the proxy's own while the value lives.
    pub fn hold_udp_port(&self, port: u16) -> HeldPort {
        let mut udp = self.udp.lock().unwrap_or_else(PoisonError::into_inner);
        *udp.entry(port).or_insert(0) += 1;
        HeldPort {
            udp: Arc::clone(&self.udp),
            port,
        }
    }

    /// Also counts `ip` as this host's (see `extra`).
    pub fn with_address(mut self, ip: Option<IpAddr>) -> Self {
        self.extra.extend(ip.map(|ip| ip.to_canonical()));
        self
    }

    /// Whether a TCP connection to `dest` reaches one of the process's listeners.
    /// (No lock: UDP sockets do not matter to TCP, and this runs for every dial.)
    pub fn contains(&self, dest: SocketAddr) -> bool {
        self.ports.contains(&dest.port()) && self.reaches_this_host(dest.ip())
    }

    /// Whether a UDP datagram to `dest` reaches one of the process's sockets: its
    /// listeners' ports (where nothing of ours listens for UDP, but the rule is
    /// simple to state) and every UDP association's sockets.
    pub fn contains_udp(&self, dest: SocketAddr) -> bool {
        let port = dest.port();
        let ours = self.ports.contains(&port) || {
            let udp = self.udp.lock().unwrap_or_else(PoisonError::into_inner);
            udp.contains_key(&port)
        };
        ours && self.reaches_this_host(dest.ip())
    }

    fn reaches_this_host(&self, ip: IpAddr) -> bool {
        self.extra.contains(&ip.to_canonical()) || reaches_this_host(ip)
    }
}

impl AddressCheck for OwnAddresses {
    fn check(&self, addr: SocketAddr) -> Result<(), Refusal> {
        match self.contains(addr) {
            true => Err(Refusal {
                label: "own_address",
                reason: "it is one of this proxy's own listening addresses".into(),
            }),
            false => Ok(()),
        }
    }
}

/// Whether a packet sent to `ip` is delivered to this host.
pub fn reaches_this_host(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    // IPv4 0.0.0.0/8 ("this network") also reaches the local host on Linux.
    if let IpAddr::V4(v4) = ip {
        if v4.octets()[0] == 0 {
            return true;
        }
    }
    // When the interfaces cannot be read, assume the worst: the address is ours.
    cached_interface_addresses().is_none_or(|list| list.contains(&ip))
}

/// How long a reading of the interfaces is reused: a UDP client sending to remote
/// hosts on one of our port numbers would otherwise cost a getifaddrs per datagram.
const INTERFACES_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

fn cached_interface_addresses() -> Option<std::sync::Arc<Vec<IpAddr>>> {
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::Instant;
    type Reading = Option<(Instant, Arc<Vec<IpAddr>>)>;
    static CACHE: Mutex<Reading> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((read_at, list)) = cache.as_ref() {
        if read_at.elapsed() < INTERFACES_FRESH {
            return Some(Arc::clone(list));
        }
    }
    let list = Arc::new(interface_addresses()?);
    *cache = Some((Instant::now(), Arc::clone(&list)));
    Some(list)
}

/// The addresses of the host's interfaces, or None if they cannot be read.
#[cfg(unix)]
fn interface_addresses() -> Option<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head through the valid pointer; on success
    // the list is ours until freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut found = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: cursor is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        if !entry.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
            let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: AF_INET addresses are sockaddr_in.
                let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
                found.push(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            } else if family == libc::AF_INET6 {
                // SAFETY: AF_INET6 addresses are sockaddr_in6.
                let sin6 = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in6) };
                found.push(IpAddr::from(sin6.sin6_addr.s6_addr).to_canonical());
            }
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: head came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Some(found)
}

#[cfg(not(unix))]
fn interface_addresses() -> Option<Vec<IpAddr>> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_spelling_of_a_local_listener_is_own() {
        let own = OwnAddresses::new([addr("127.0.0.1:1080"), addr("127.0.0.1:9090")]);
        for dest in [
            "127.0.0.1:9090",
            "127.0.0.2:9090",
            "0.0.0.0:9090",
            "0.1.2.3:1080",
            "[::]:9090",
            "[::1]:9090",
            "[::ffff:127.0.0.1]:9090",
            "[::ffff:0.0.0.0]:1080",
        ] {
            assert!(own.contains(addr(dest)), "{dest} passed");
        }
        for dest in [
            "127.0.0.1:80",
            "[::1]:9091",
            "192.0.2.1:9090",
            "[2001:db8::1]:1080",
        ] {
            assert!(!own.contains(addr(dest)), "{dest} refused");
        }
    }

    #[test]
    fn the_external_address_is_own_too() {
        let public: IpAddr = "203.0.113.7".parse().unwrap();
        let own = OwnAddresses::new([addr("0.0.0.0:1080")]).with_address(Some(public));
        assert!(own.contains(addr("203.0.113.7:1080")));
        assert!(!own.contains(addr("203.0.113.8:1080")));
        assert!(!own.contains(addr("203.0.113.7:443")));
    }

    #[test]
    fn udp_ports_count_while_held_by_every_clone() {
        let own = OwnAddresses::new([addr("127.0.0.1:1080")]);
        let other = own.clone();
        assert!(!own.contains_udp(addr("127.0.0.1:40000")));
        let held = own.hold_udp_port(40000);
        let again = other.hold_udp_port(40000);
        assert!(other.contains_udp(addr("127.0.0.1:40000")));
        assert!(other.contains_udp(addr("[::ffff:127.0.0.1]:40000")));
        assert!(!other.contains_udp(addr("192.0.2.1:40000")));
        assert!(
            !other.contains(addr("127.0.0.1:40000")),
            "TCP has no UDP ports"
        );
        drop(held);
        assert!(own.contains_udp(addr("127.0.0.1:40000")), "still held once");
        drop(again);
        assert!(!own.contains_udp(addr("127.0.0.1:40000")));
    }

    #[test]
    fn the_hosts_interface_addresses_reach_it() {
        let list = interface_addresses().expect("interfaces readable");
        // Every host has loopback, and any address it has is its own.
        assert!(list.iter().any(IpAddr::is_loopback), "{list:?}");
        for ip in list {
            assert!(reaches_this_host(ip), "{ip}");
        }
    }
}
