//! UDP ASSOCIATE and BIND against the real binary on loopback.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::http::get;
use common::socks::{self, read_msg, read_until_closed, LIMIT};
use common::udp::{datagram, echo as udp_echo, round_trip};
use common::{config, metric, Proxy};
use rustsocks::protocol::socks5::{Command, Reply, ReplyCode};
use rustsocks::protocol::TargetAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// Opens an association: returns the control connection and the relay address.
async fn associate(proxy: SocketAddr) -> (TcpStream, SocketAddr) {
    let any = if proxy.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let (control, reply) = socks::socks5(proxy, Command::UdpAssociate, any.into()).await;
    assert_eq!(reply.code, ReplyCode::Succeeded);
    let TargetAddr::Ip(relay) = reply.bind else {
        panic!("relay address is an IP")
    };
    (control, relay)
}

/// Sends BIND naming `peer` (all zeros: anyone); returns the control connection and
/// the address the proxy listens on, from a first reply that must be a success.
async fn bind_request(proxy: SocketAddr, peer: SocketAddr) -> (TcpStream, SocketAddr) {
    let (control, first) = socks::socks5(proxy, Command::Bind, peer.into()).await;
    assert_eq!(first.code, ReplyCode::Succeeded);
    let TargetAddr::Ip(listening) = first.bind else {
        panic!("BIND reported {:?}, not an IP address", first.bind)
    };
    (control, listening)
}

async fn echo_sizes(proxy: SocketAddr, ip: IpAddr, sizes: &[usize]) {
    let echo = udp_echo(ip).await;
    let (_control, relay) = associate(proxy).await;
    let client = UdpSocket::bind((ip, 0)).await.unwrap();
    for (i, &size) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|j| (i + j) as u8).collect();
        let (from, body) = round_trip(&client, relay, echo.into(), &payload, LIMIT)
            .await
            .expect("echo");
        assert_eq!(from, TargetAddr::Ip(echo));
        assert!(body == payload, "size {size}");
    }
}

#[tokio::test]
async fn udp_echo_of_many_sizes_over_ipv4() {
    let proxy = Proxy::start(&config("", ""));
    // 65,497 bytes of payload + a 10-byte header = the largest IPv4 UDP datagram (65,507).
    let mut sizes = vec![
        1, 2, 64, 512, 1400, 1500, 4096, 9000, 32_768, 65_000, 65_497,
    ];
    sizes.extend(std::iter::repeat_n(100, 40));
    echo_sizes(proxy.addr, IpAddr::V4(Ipv4Addr::LOCALHOST), &sizes).await;
}

#[tokio::test]
async fn a_udp_session_records_its_bytes_and_datagrams() {
    let proxy = Proxy::start(&config("", "[sessions]\nbatch_interval_ms = 50\n"));
    echo_sizes(proxy.addr, IpAddr::V4(Ipv4Addr::LOCALHOST), &[10, 20, 30]).await;
    // echo_sizes dropped the control connection: the association ended.
    let api = proxy.api.unwrap();
    let mut record = serde_json::Value::Null;
    for _ in 0..200 {
        let h = get(api, "/api/sessions/history?status=closed", None)
            .await
            .json();
        if h["total"] == 1 {
            record = h["sessions"][0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(record["command"], "udp_associate", "{record}");
    let count = |k: &str| record[k].as_u64();
    assert_eq!(
        (
            count("datagrams_client_to_upstream"),
            count("datagrams_upstream_to_client")
        ),
        (Some(3), Some(3))
    );
    assert_eq!(
        (
            count("bytes_client_to_upstream"),
            count("bytes_upstream_to_client")
        ),
        (Some(60), Some(60))
    );
}

#[tokio::test]
async fn udp_echo_over_ipv6() {
    let proxy = Proxy::start(
        &config("", "").replace("bind_address = \"127.0.0.1\"", "bind_address = \"::1\""),
    );
    echo_sizes(
        proxy.addr,
        "::1".parse().unwrap(),
        &[1, 100, 1400, 9000, 65_000],
    )
    .await;
}

#[tokio::test]
async fn udp_to_a_domain_destination_is_resolved() {
    let proxy = Proxy::start(&config("", ""));
    let first = tokio::net::lookup_host(("localhost", 1))
        .await
        .unwrap()
        .next()
        .unwrap();
    let echo = udp_echo(first.ip()).await;
    let (_control, relay) = associate(proxy.addr).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dest = TargetAddr::Domain("localhost".into(), echo.port());
    let (from, body) = round_trip(&client, relay, dest, b"by name", LIMIT)
        .await
        .expect("echo");
    assert_eq!(
        (from, body.as_slice()),
        (TargetAddr::Ip(echo), &b"by name"[..])
    );
}

#[tokio::test]
async fn foreign_malformed_and_fragmented_datagrams_are_dropped_and_counted() {
    let proxy = Proxy::start(&config("", ""));
    let echo = udp_echo(IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
    let (control, relay) = associate(proxy.addr).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Pin the association to this client's port by sending first.
    assert!(round_trip(&client, relay, echo.into(), b"first", LIMIT)
        .await
        .is_some());

    let mut fragment = datagram(echo.into(), b"part");
    fragment[2] = 1;
    let hostile: [&[u8]; 5] = [
        &[0, 0],
        &[0, 0, 0, 9, 127, 0, 0, 1, 0, 80],
        &[0, 0, 0, 3, 0, 0, 80, 1],
        &[0, 0, 0, 3, 200, b'a'],
        &fragment,
    ];
    for bytes in hostile {
        client.send_to(bytes, relay).await.unwrap();
    }
    let mut none = [0u8; 16];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), client.recv_from(&mut none))
            .await
            .is_err()
    );

    // The association keeps working after all of that.
    assert!(
        round_trip(&client, relay, echo.into(), b"still fine", LIMIT)
            .await
            .is_some()
    );
    let api = proxy.api.unwrap();
    let text = get(api, "/metrics", None).await.text();
    assert_eq!(
        metric(&text, "rustsocks_udp_dropped_total{reason=\"malformed\"}"),
        4,
        "{text}"
    );
    assert_eq!(
        metric(&text, "rustsocks_udp_dropped_total{reason=\"fragmented\"}"),
        1
    );
    assert_eq!(
        metric(
            &text,
            "rustsocks_udp_datagrams_total{direction=\"client_to_upstream\"}"
        ),
        2
    );
    drop(control);
}

#[tokio::test]
async fn datagrams_from_another_source_are_dropped() {
    let proxy = Proxy::start(&config("", ""));
    let echo = udp_echo(IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
    // The request names the client's UDP port: others (same host) are foreign.
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (control, reply) = socks::socks5(
        proxy.addr,
        Command::UdpAssociate,
        client.local_addr().unwrap().into(),
    )
    .await;
    let TargetAddr::Ip(relay) = reply.bind else {
        panic!("IP relay")
    };
    let intruder = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    only_the_owner_is_served(&proxy, relay, &client, &intruder, echo).await;
    drop(control);
}

/// A datagram from `intruder` gets nothing back and is counted as foreign; the
/// association keeps serving `owner`.
async fn only_the_owner_is_served(
    proxy: &Proxy,
    relay: SocketAddr,
    owner: &UdpSocket,
    intruder: &UdpSocket,
    echo: SocketAddr,
) {
    let wait = Duration::from_millis(300);
    let lost = round_trip(intruder, relay, echo.into(), b"let me in", wait).await;
    assert!(lost.is_none(), "the intruder got an answer");
    let answered = round_trip(owner, relay, echo.into(), b"owner", LIMIT).await;
    assert!(answered.is_some(), "the owner got no answer");
    let text = get(proxy.api.unwrap(), "/metrics", None).await.text();
    assert_eq!(
        metric(
            &text,
            "rustsocks_udp_dropped_total{reason=\"foreign_source\"}"
        ),
        1
    );
}

#[tokio::test]
async fn closing_the_control_connection_ends_the_association_and_frees_its_socket() {
    let proxy = Proxy::start(&config("", ""));
    let (control, relay) = associate(proxy.addr).await;
    drop(control);
    let mut freed = false;
    for _ in 0..200 {
        if std::net::UdpSocket::bind(relay).is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        freed,
        "relay socket {relay} still bound after the control connection closed"
    );
}

/// The "server" of an FTP-like exchange connects back to the address BIND
/// reported; both sides then talk through the proxy.
#[tokio::test]
async fn bind_relays_an_inbound_connection_both_ways() {
    let proxy = Proxy::start(&config("", ""));
    let (mut control, listening) =
        bind_request(proxy.addr, SocketAddr::from(([127, 0, 0, 1], 0))).await;
    // Sent while the proxy still waits for the peer: it must reach the peer.
    control.write_all(b"EARLY ").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut server = TcpStream::connect(listening).await.unwrap();
    let second = read_msg::<Reply>(&mut control).await;
    assert_eq!(
        (second.code, second.bind),
        (
            ReplyCode::Succeeded,
            TargetAddr::Ip(server.local_addr().unwrap())
        )
    );
    server
        .write_all(b"150 opening data connection\r\n")
        .await
        .unwrap();
    let mut got = [0u8; 29];
    tokio::time::timeout(LIMIT, control.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"150 opening data connection\r\n");
    control.write_all(b"STOR ok").await.unwrap();
    control.shutdown().await.unwrap();
    let mut upload = Vec::new();
    tokio::time::timeout(LIMIT, server.read_to_end(&mut upload))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(upload, b"EARLY STOR ok");
}

#[tokio::test]
async fn bind_refuses_a_peer_other_than_the_one_named() {
    let proxy = Proxy::start(&config("", ""));
    let expected = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let (mut control, listening) = bind_request(proxy.addr, SocketAddr::new(expected, 0)).await;
    let mut wrong = TcpStream::connect(listening).await.unwrap();
    assert_eq!(
        read_until_closed(&mut wrong).await,
        b"",
        "a wrong peer was not closed"
    );
    let right = TcpSocket::new_v4().unwrap();
    right.bind(SocketAddr::new(expected, 0)).unwrap();
    let right = right.connect(listening).await.unwrap();
    let second = read_msg::<Reply>(&mut control).await;
    assert_eq!(second.bind, TargetAddr::Ip(right.local_addr().unwrap()));
    let text = get(proxy.api.unwrap(), "/metrics", None).await.text();
    assert_eq!(metric(&text, "rustsocks_bind_refused_total"), 1);
}

#[tokio::test]
async fn bind_without_a_peer_times_out_with_a_failure_reply() {
    let proxy = Proxy::start(&config("bind_timeout_secs = 1", ""));
    let (mut control, _) = bind_request(proxy.addr, SocketAddr::from(([0, 0, 0, 0], 0))).await;
    let second = read_msg::<Reply>(&mut control).await;
    assert_eq!(second.code, ReplyCode::GeneralFailure);
    assert_eq!(read_until_closed(&mut control).await, b"");
}

/// An independent client: PySocks (installed by scripts/test.sh) sends a datagram
/// through UDP ASSOCIATE and prints what came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pysocks_udp_client_gets_its_echo() {
    let proxy = Proxy::start(&config("", ""));
    let echo = udp_echo(IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
    let script = format!(
        "import socks, socket\n\
         s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.set_proxy(socks.SOCKS5, '127.0.0.1', {})\n\
         s.settimeout(10)\n\
         s.sendto(b'hello over udp', ('127.0.0.1', {}))\n\
         data, addr = s.recvfrom(1024)\n\
         print(data.decode(), addr[1])\n",
        proxy.addr.port(),
        echo.port()
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .output()
            .expect("python3")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "PySocks failed (is it installed? scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), format!("hello over udp {}", echo.port()));
}

/// A proxy on an IPv6 socket that takes IPv4 clients (as one bound to `::` does)
/// serves them with IPv4 addresses: the IPv4-mapped form (`::ffff:127.0.0.1`) would
/// match no IPv4 peer in BIND and be useless to an IPv4-only client. Bound to the
/// mapped form of 127.0.0.1, which behaves the same and stays on loopback.
#[tokio::test]
async fn a_dual_stack_listener_serves_ipv4_clients_in_ipv4() {
    if std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").is_ok_and(|v| v.trim() == "1") {
        eprintln!("skipped: net.ipv6.bindv6only = 1 (IPv6 sockets take no IPv4 clients)");
        return;
    }
    let proxy = Proxy::start(&config("allow_open_proxy = true", "").replace(
        "bind_address = \"127.0.0.1\"",
        "bind_address = \"::ffff:127.0.0.1\"",
    ));
    let v4 = SocketAddr::from(([127, 0, 0, 1], proxy.addr.port()));

    let (mut control, listening) = bind_request(v4, SocketAddr::from(([127, 0, 0, 1], 0))).await;
    assert!(listening.is_ipv4(), "BIND address {listening}");
    let server = TcpStream::connect(listening).await.unwrap();
    let second = read_msg::<Reply>(&mut control).await;
    assert_eq!(
        (second.code, second.bind),
        (
            ReplyCode::Succeeded,
            TargetAddr::Ip(server.local_addr().unwrap())
        ),
        "the named IPv4 peer must be accepted and reported as IPv4"
    );

    let (_control, relay) = associate(v4).await;
    assert!(relay.is_ipv4(), "relay address {relay}");
    let echo = udp_echo(IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
    let client = UdpSocket::bind(("127.0.0.1", 0)).await.unwrap();
    let (from, body) = round_trip(&client, relay, echo.into(), b"ping", LIMIT)
        .await
        .expect("echo");
    assert_eq!(
        (from, body.as_slice()),
        (TargetAddr::Ip(echo), &b"ping"[..])
    );
}

/// The amplification a hostile run found: a datagram addressed to the relay itself
/// (carrying a second header aimed at a real target) looped through the relay,
/// growing by a header each lap. It is dropped, counted, and nothing is sent.
#[tokio::test]
async fn datagrams_to_the_relay_itself_or_the_proxys_listeners_are_dropped() {
    let proxy = Proxy::start(&config("", ""));
    let api = proxy.api.unwrap();
    let target = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (control, relay) = associate(proxy.addr).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let inner = datagram(target.local_addr().unwrap().into(), b"amplify me");
    let own: Vec<SocketAddr> = vec![
        relay,
        SocketAddr::new("0.0.0.0".parse().unwrap(), relay.port()),
        SocketAddr::new("::ffff:127.0.0.1".parse().unwrap(), relay.port()),
        SocketAddr::new("127.0.0.1".parse().unwrap(), proxy.addr.port()),
        SocketAddr::new("::1".parse().unwrap(), api.port()),
    ];
    for dest in &own {
        client
            .send_to(&datagram((*dest).into(), &inner), relay)
            .await
            .unwrap();
    }
    client
        .send_to(
            &datagram(TargetAddr::Domain("localhost".into(), relay.port()), &inner),
            relay,
        )
        .await
        .unwrap();
    let mut buf = vec![0u8; 70_000];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), target.recv_from(&mut buf))
            .await
            .is_err(),
        "the target received a datagram"
    );
    let text = get(api, "/metrics", None).await.text();
    assert_eq!(
        metric(&text, "rustsocks_udp_dropped_total{reason=\"own_address\"}"),
        own.len() as u64 + 1,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "rustsocks_udp_datagrams_total{direction=\"client_to_upstream\"}"
        ),
        0
    );
    drop(control);
}

/// With port 0 in the request, the first datagram fixes the client's address: a
/// later one from another port of the same host is foreign, and answers keep going
/// to the first.
#[tokio::test]
async fn the_first_datagram_fixes_the_clients_address() {
    let proxy = Proxy::start(&config("", ""));
    let echo = udp_echo(IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
    let (control, relay) = associate(proxy.addr).await;
    let first = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert!(round_trip(&first, relay, echo.into(), b"mine", LIMIT)
        .await
        .is_some());
    let second = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    only_the_owner_is_served(&proxy, relay, &first, &second, echo).await;
    drop(control);
}

/// RFC 1928 does not forbid an empty payload: it is relayed both ways.
#[tokio::test]
async fn an_empty_payload_is_relayed() {
    let proxy = Proxy::start(&config("", ""));
    echo_sizes(proxy.addr, IpAddr::V4(Ipv4Addr::LOCALHOST), &[0, 5, 0]).await;
    let echo = udp_echo(IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
    let (_control, relay) = associate(proxy.addr).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let by_name = TargetAddr::Domain("localhost".into(), echo.port());
    let (from, body) = round_trip(&client, relay, by_name, b"", LIMIT)
        .await
        .expect("an empty answer");
    assert!(body.is_empty());
    assert_eq!(from, TargetAddr::Ip(echo));
    let text = get(proxy.api.unwrap(), "/metrics", None).await.text();
    assert_eq!(
        metric(&text, "rustsocks_udp_dropped_total{reason=\"malformed\"}"),
        0
    );
}

/// Two associations of a client on the proxy's host cannot be pointed at each
/// other's relay sockets (answers would loop between them, growing each lap).
#[tokio::test]
async fn an_association_cannot_send_to_another_associations_relay() {
    let proxy = Proxy::start(&config("", ""));
    let (control_a, relay_a) = associate(proxy.addr).await;
    let (control_b, relay_b) = associate(proxy.addr).await;
    let client_a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let client_b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // B's client fixes B's association to itself first.
    let echo = udp_echo(IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
    assert!(round_trip(&client_b, relay_b, echo.into(), b"b", LIMIT)
        .await
        .is_some());
    client_a
        .send_to(
            &datagram(relay_b.into(), &datagram(echo.into(), b"loop")),
            relay_a,
        )
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let nothing =
        tokio::time::timeout(Duration::from_millis(300), client_b.recv_from(&mut buf)).await;
    assert!(
        nothing.is_err(),
        "B's client got a datagram from A's association"
    );
    let text = get(proxy.api.unwrap(), "/metrics", None).await.text();
    assert_eq!(
        metric(&text, "rustsocks_udp_dropped_total{reason=\"own_address\"}"),
        1
    );
    drop((control_a, control_b));
}
