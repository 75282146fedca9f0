//! The destination guard (`acl.block_private_destinations`): addresses a client of
//! a proxy should not reach unless a rule says so: loopback, the private ranges,
//! CGNAT, link-local (which holds the cloud metadata address 169.254.169.254),
//! multicast and broadcast (a UDP client must not reach the LAN's multicast groups),
//! and their IPv6 counterparts. IPv4-mapped IPv6 spellings count as the IPv4
//! address, and so do NAT64 addresses (64:ff9b::/96, which a NAT64 gateway turns
//! into the IPv4 address they carry); the local-use NAT64 prefix 64:ff9b:1::/48 is
//! refused whole.

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
        (224..=239, _) => "multicast (224.0.0.0/4)",
        (255, 255) if ip.is_broadcast() => "broadcast",
        _ => return None,
    })
}

fn private_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    // 64:ff9b::/96 carries an IPv4 address in its last 32 bits.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::from((u128::from(ip) & 0xffff_ffff) as u32);
        return private_v4(v4).map(|_| "NAT64 of a private IPv4 address (64:ff9b::/96)");
    }
    Some(match () {
        () if ip.is_loopback() => "loopback",
        () if ip.is_unspecified() => "this host (::)",
        () if s[0] & 0xfe00 == 0xfc00 => "unique local (fc00::/7)",
        () if s[0] & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        () if s[0] & 0xff00 == 0xff00 => "multicast (ff00::/8)",
        () if s[..3] == [0x64, 0xff9b, 1] => "local-use NAT64 (64:ff9b:1::/48)",
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
            "224.0.0.251",
            "239.255.255.250",
            "255.255.255.255",
            "ff02::fb",
            "64:ff9b::a00:5",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::808:808",
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
            "64:ff9b::808:808",
            "240.0.0.1",
        ];
        for ip in public {
            assert_eq!(private_range(ip.parse().unwrap()), None, "{ip}");
        }
    }
}
