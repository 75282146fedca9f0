//! UDP helpers: an echo server, SOCKS UDP datagrams, and a round trip through a
//! relay.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rustsocks::protocol::udp::UdpHeader;
use rustsocks::protocol::TargetAddr;
use tokio::net::UdpSocket;

/// A UDP echo server on `ip`.
pub async fn echo(ip: IpAddr) -> SocketAddr {
    let s = UdpSocket::bind((ip, 0)).await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(&buf[..n], from).await;
        }
    });
    addr
}

/// A SOCKS UDP datagram: header for `dest`, then `payload`.
pub fn datagram(dest: TargetAddr, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    UdpHeader { frag: 0, dest }.encode(&mut d);
    d.extend_from_slice(payload);
    d
}

/// Sends `payload` to `dest` through the relay and returns the answer's sender
/// and payload, or None if nothing came back within `wait`.
pub async fn round_trip(
    client: &UdpSocket,
    relay: SocketAddr,
    dest: TargetAddr,
    payload: &[u8],
    wait: Duration,
) -> Option<(TargetAddr, Vec<u8>)> {
    client
        .send_to(&datagram(dest, payload), relay)
        .await
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, from) = tokio::time::timeout(wait, client.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    assert_eq!(from, relay, "answers come from the relay socket");
    let (header, body) = UdpHeader::decode(&buf[..n]).expect("a well-formed header");
    assert_eq!(header.frag, 0);
    Some((header.dest, body.to_vec()))
}
