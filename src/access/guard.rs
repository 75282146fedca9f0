//! The destination guard (`acl.block_private_destinations`): addresses a client of
//! a proxy should not reach unless a rule says so: loopback, the private ranges,
//! CGNAT, link-local (which holds the cloud metadata address 169.254.169.254), and
//! their IPv6 counterparts. IPv4-mapped IPv6 spellings count as the IPv4 address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The kind of private range `ip` is in, if it is in one.
pub fn private_range(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => private_v6(v6),
    }
}

fn private_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match (a, b) {
        (127, _) => "loopback",
        // 0.0.0.0/8: "this network"; a connect to it reaches this host on Linux.
        (0, _) => "this host (0.0.0.0/8)",
        (10, _) | (192, 168) => "private (RFC 1918)",
        (172, 16..=31) => "private (RFC 1918)",
        (100, 64..=127) => "shared address space (CGNAT, 100.64.0.0/10)",
        (169, 254) => "link-local (169.254.0.0/16, cloud metadata)",
        _ => return None,
    })
}

fn private_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(match () {
        () if ip.is_loopback() => "loopback",
        () if ip.is_unspecified() => "this host (::)",
        () if first & 0xfe00 == 0xfc00 => "unique local (fc00::/7)",
        () if first & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        () => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_private_range_in_every_spelling() {
        let private = [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
        ];
        for ip in private {
            assert!(private_range(ip.parse().unwrap()).is_some(), "{ip}");
        }
        let public = [
            "8.8.8.8",
            "172.15.0.1",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "192.169.0.1",
            "11.0.0.1",
            "2001:db8::1",
            "fec0::1",
            "::ffff:8.8.8.8",
        ];
        for ip in public {
            assert_eq!(private_range(ip.parse().unwrap()), None, "{ip}");
        }
    }
}
