//! Reply codes and malformed input, byte by byte against the real server. After
//! every bad client the server must still serve a good one.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::socks::{self, assert_echo, read_msg, read_until_closed};
use common::{config, upstream, Proxy};
use rustsocks::protocol::socks5::{Command, Method, MethodSelection, Reply, ReplyCode};
use rustsocks::protocol::{socks4, Encode, TargetAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A proxy with a short handshake and connect timeout, and an echo upstream.
async fn setup() -> (Proxy, SocketAddr) {
    let echo = upstream::echo();
    let proxy = Proxy::start(&config(
        "handshake_timeout_ms = 500\n[server.pool]\nconnect_timeout_ms = 500\n",
        "",
    ));
    (proxy, echo)
}

async fn still_serves(proxy: &Proxy, echo: SocketAddr) {
    let mut s = socks::tunnel(proxy.addr, echo).await;
    assert_echo(&mut s, b"still here").await;
}

async fn reply_code(proxy: &Proxy, command: Command, dest: TargetAddr) -> ReplyCode {
    socks::socks5(proxy.addr, command, dest).await.1.code
}

#[tokio::test]
async fn connect_to_ipv4_ipv6_and_domain() {
    let (proxy, echo) = setup().await;
    let mut s = socks::tunnel(proxy.addr, echo).await;
    assert_echo(&mut s, b"ipv4").await;
    let mut s = socks::tunnel(
        proxy.addr,
        TargetAddr::Domain("localhost".into(), echo.port()),
    )
    .await;
    assert_echo(&mut s, b"domain").await;
    let listener6 = tokio::net::TcpListener::bind("[::1]:0")
        .await
        .expect("IPv6 loopback");
    let addr6 = listener6.local_addr().unwrap();
    let mut s = socks::tunnel(proxy.addr, addr6).await;
    let (mut up, _) = listener6.accept().await.unwrap();
    s.write_all(b"ipv6").await.unwrap();
    let mut got = [0u8; 4];
    up.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ipv6");
}

#[tokio::test]
async fn reply_bind_address_is_the_upstream_socket() {
    let (proxy, _) = setup().await;
    let reporter = upstream::peer_reporter();
    let (mut s, reply) = socks::socks5(proxy.addr, Command::Connect, reporter.into()).await;
    assert_eq!(reply.code, ReplyCode::Succeeded);
    let seen = String::from_utf8(read_until_closed(&mut s).await).unwrap();
    assert_eq!(reply.bind, TargetAddr::Ip(seen.parse().unwrap()));
}

#[tokio::test]
async fn upstream_failures_get_their_reply_codes() {
    let (proxy, echo) = setup().await;
    let refused = upstream::closed_port();
    assert_eq!(
        reply_code(&proxy, Command::Connect, refused.into()).await,
        ReplyCode::ConnectionRefused
    );
    let unknown = TargetAddr::Domain("no-such-host.invalid".into(), 80);
    assert_eq!(
        reply_code(&proxy, Command::Connect, unknown).await,
        ReplyCode::HostUnreachable
    );
    let hole = upstream::blackhole();
    assert_eq!(
        reply_code(&proxy, Command::Connect, hole.addr.into()).await,
        ReplyCode::HostUnreachable
    );
    still_serves(&proxy, echo).await;
}

/// A SOCKS4 BIND request naming the application server `peer`.
fn socks4_bind(peer: std::net::SocketAddrV4) -> Vec<u8> {
    let mut req = vec![4, 2];
    req.extend_from_slice(&peer.port().to_be_bytes());
    req.extend_from_slice(&peer.ip().octets());
    req.extend_from_slice(b"ftp\0");
    req
}

async fn socks4_reply(s: &mut tokio::net::TcpStream) -> socks4::Reply {
    read_msg::<socks4::Reply>(s).await
}

/// SOCKS4 BIND as active-mode FTP uses it (and as tokio-socks' SOCKS4 tests drive
/// it): a first reply with where the proxy listens, the named server connects
/// there, a second reply with who connected, then bytes both ways.
#[tokio::test]
async fn socks4_bind_relays_the_named_servers_connection() {
    let (proxy, echo) = setup().await;
    let mut control = socks::connect(proxy.addr).await;
    let server_ip = std::net::Ipv4Addr::LOCALHOST;
    control
        .write_all(&socks4_bind(std::net::SocketAddrV4::new(server_ip, 21)))
        .await
        .unwrap();
    let first = socks4_reply(&mut control).await;
    assert!(first.granted, "first reply");
    assert_ne!(first.bind.port(), 0, "the port the proxy listens on");
    let listening = std::net::SocketAddr::V4(first.bind);
    let mut server = tokio::net::TcpStream::connect(listening).await.unwrap();
    let second = socks4_reply(&mut control).await;
    assert!(second.granted, "second reply");
    assert_eq!(
        std::net::SocketAddr::V4(second.bind),
        server.local_addr().unwrap()
    );
    server.write_all(b"220 data\r\n").await.unwrap();
    let mut got = [0u8; 10];
    tokio::time::timeout(socks::LIMIT, control.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"220 data\r\n");
    control.write_all(b"upload").await.unwrap();
    control.shutdown().await.unwrap();
    let mut upload = Vec::new();
    tokio::time::timeout(socks::LIMIT, server.read_to_end(&mut upload))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(upload, b"upload");
    still_serves(&proxy, echo).await;
}

/// Only the server the request named may connect; anyone else is turned away and
/// the BIND goes on waiting for the right one.
#[tokio::test]
async fn socks4_bind_refuses_another_host() {
    let (proxy, echo) = setup().await;
    let mut control = socks::connect(proxy.addr).await;
    let named = std::net::Ipv4Addr::new(127, 0, 0, 2);
    control
        .write_all(&socks4_bind(std::net::SocketAddrV4::new(named, 21)))
        .await
        .unwrap();
    let first = socks4_reply(&mut control).await;
    assert!(first.granted);
    let mut intruder = tokio::net::TcpStream::connect(std::net::SocketAddr::V4(first.bind))
        .await
        .unwrap();
    assert_eq!(read_until_closed(&mut intruder).await, b"");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((named, 0).into()).unwrap();
    let mut server = socket
        .connect(std::net::SocketAddr::V4(first.bind))
        .await
        .unwrap();
    let second = socks4_reply(&mut control).await;
    assert!(second.granted);
    assert_eq!(
        std::net::SocketAddr::V4(second.bind),
        server.local_addr().unwrap()
    );
    server.write_all(b"hello").await.unwrap();
    let mut got = [0u8; 5];
    tokio::time::timeout(socks::LIMIT, control.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"hello");
    still_serves(&proxy, echo).await;
}

/// Sends a no-auth greeting, then `request` raw; returns what the proxy sent back
/// after the method selection, up to its close.
async fn raw_request(proxy: &Proxy, request: &[u8]) -> Vec<u8> {
    let mut s = socks::connect(proxy.addr).await;
    s.write_all(&[5, 1, 0]).await.unwrap();
    assert_eq!(
        read_msg::<MethodSelection>(&mut s).await,
        MethodSelection(Method::NO_AUTH)
    );
    s.write_all(request).await.unwrap();
    read_until_closed(&mut s).await
}

#[tokio::test]
async fn malformed_requests_get_the_right_reply_then_close() {
    let (proxy, echo) = setup().await;
    let failure = |code: ReplyCode| Reply::failure(code).to_bytes();
    let cases: [(&str, &[u8], Vec<u8>); 4] = [
        (
            "unknown command",
            &[5, 9, 0, 1, 127, 0, 0, 1, 0, 80],
            failure(ReplyCode::CommandNotSupported),
        ),
        (
            "unknown ATYP",
            &[5, 1, 0, 9, 127, 0, 0, 1, 0, 80],
            failure(ReplyCode::AddressTypeNotSupported),
        ),
        (
            "domain length 0",
            &[5, 1, 0, 3, 0, 0, 80],
            failure(ReplyCode::GeneralFailure),
        ),
        (
            "RSV != 0",
            &[5, 1, 1, 1, 127, 0, 0, 1, 0, 80],
            failure(ReplyCode::GeneralFailure),
        ),
    ];
    for (name, request, expected) in cases {
        assert_eq!(raw_request(&proxy, request).await, expected, "{name}");
    }
    // Wrong version in the request: nothing to reply with, just a close.
    assert_eq!(
        raw_request(&proxy, &[4, 1, 0, 1, 127, 0, 0, 1, 0, 80]).await,
        b""
    );
    still_serves(&proxy, echo).await;
}

#[tokio::test]
async fn malformed_greetings_are_closed() {
    let (proxy, echo) = setup().await;
    let cases: [(&str, &[u8], &[u8]); 4] = [
        ("wrong version byte", &[6, 1, 0], b""),
        ("NMETHODS = 0", &[5, 0], &[5, 0xFF]),
        ("no acceptable method", &[5, 1, 2], &[5, 0xFF]),
        ("truncated greeting", &[5, 3, 0], b""),
    ];
    for (name, bytes, expected) in cases {
        let mut s = socks::connect(proxy.addr).await;
        s.write_all(bytes).await.unwrap();
        s.shutdown().await.unwrap();
        assert_eq!(read_until_closed(&mut s).await, expected, "{name}");
    }
    // Truncated request: the client gives up half way.
    let mut s = socks::connect(proxy.addr).await;
    s.write_all(&[5, 1, 0]).await.unwrap();
    assert_eq!(
        read_msg::<MethodSelection>(&mut s).await,
        MethodSelection(Method::NO_AUTH)
    );
    s.write_all(&[5, 1, 0, 1, 127, 0]).await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(read_until_closed(&mut s).await, b"");
    still_serves(&proxy, echo).await;
}

#[tokio::test]
async fn silence_after_greeting_is_closed_after_the_handshake_timeout() {
    let (proxy, echo) = setup().await;
    let mut s = socks::connect(proxy.addr).await;
    socks::greet(&mut s).await;
    // The client keeps its side open and says nothing; the server must hang up.
    assert_eq!(read_until_closed(&mut s).await, b"");
    let mut silent = socks::connect(proxy.addr).await;
    assert_eq!(read_until_closed(&mut silent).await, b"");
    still_serves(&proxy, echo).await;
}

#[tokio::test]
async fn bad_credentials_messages_fail_and_close() {
    let echo = upstream::echo();
    let users =
        "[auth]\nsocks_method = \"userpass\"\n[[auth.users]]\nusername = \"u\"\npassword = \"p\"\n";
    let proxy = Proxy::start(&config("handshake_timeout_ms = 500", users));
    let long = vec![b'x'; 255];
    let mut overlong = vec![1, 255];
    overlong.extend_from_slice(&long);
    overlong.push(255);
    overlong.extend_from_slice(&long);
    let cases: [(&str, Vec<u8>, bool); 4] = [
        ("ULEN = 0", vec![1, 0, 1, b'p'], false),
        (
            "wrong sub-negotiation version",
            vec![5, 1, b'u', 1, b'p'],
            false,
        ),
        ("255-byte credentials", overlong, false),
        ("ULEN beyond the data", vec![1, 200, b'u', 1, b'p'], true),
    ];
    for (name, bytes, truncated) in cases {
        let mut s = socks::connect(proxy.addr).await;
        s.write_all(&[5, 1, 2]).await.unwrap();
        assert_eq!(
            read_msg::<MethodSelection>(&mut s).await,
            MethodSelection(Method::USER_PASS)
        );
        s.write_all(&bytes).await.unwrap();
        let expected: &[u8] = if truncated {
            // The server waits for the rest, then the handshake timeout closes it.
            b""
        } else {
            &[1, 1]
        };
        assert_eq!(read_until_closed(&mut s).await, expected, "{name}");
    }
    let mut s = socks::login(proxy.addr, "u", "p")
        .await
        .expect("good login");
    s.write_all(
        &rustsocks::protocol::socks5::Request {
            command: Command::Connect,
            dest: echo.into(),
        }
        .to_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(read_msg::<Reply>(&mut s).await.code, ReplyCode::Succeeded);
    assert_echo(&mut s, b"after bad logins").await;
}

#[tokio::test]
async fn request_and_data_in_one_write_reach_upstream() {
    let (proxy, echo) = setup().await;
    let mut s = socks::connect(proxy.addr).await;
    let mut bytes = vec![5, 1, 0];
    let request = rustsocks::protocol::socks5::Request {
        command: Command::Connect,
        dest: echo.into(),
    };
    request.encode(&mut bytes);
    bytes.extend_from_slice(b"optimistic data");
    s.write_all(&bytes).await.unwrap();
    assert_eq!(
        read_msg::<MethodSelection>(&mut s).await,
        MethodSelection(Method::NO_AUTH)
    );
    assert_eq!(read_msg::<Reply>(&mut s).await.code, ReplyCode::Succeeded);
    let mut back = [0u8; 15];
    tokio::time::timeout(socks::LIMIT, s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"optimistic data");
}

#[tokio::test]
async fn socks4_errors_get_rejected_reply() {
    let (proxy, echo) = setup().await;
    let refused = upstream::closed_port();
    let mut s = socks::connect(proxy.addr).await;
    let mut req = vec![4, 1];
    req.extend_from_slice(&refused.port().to_be_bytes());
    req.extend_from_slice(&[127, 0, 0, 1, 0]);
    s.write_all(&req).await.unwrap();
    assert_eq!(read_until_closed(&mut s).await, [0, 0x5B, 0, 0, 0, 0, 0, 0]);
    // Unknown SOCKS4 command.
    let mut s = socks::connect(proxy.addr).await;
    s.write_all(&[4, 9, 0, 80, 127, 0, 0, 1, 0]).await.unwrap();
    assert_eq!(read_until_closed(&mut s).await, [0, 0x5B, 0, 0, 0, 0, 0, 0]);
    still_serves(&proxy, echo).await;
}

/// ENETUNREACH needs a destination with no route, which this machine's own network
/// may not have; so the proxy and the client run in a fresh network namespace that
/// holds only a loopback interface. Needs root (CAP_SYS_ADMIN), as in CI.
#[test]
fn network_unreachable_gets_0x03() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: creating a network namespace needs root");
        return;
    }
    let result = std::thread::spawn(|| {
        // Only this thread (and processes it spawns) moves to the new namespace.
        assert_eq!(
            unsafe { libc::unshare(libc::CLONE_NEWNET) },
            0,
            "unshare(CLONE_NEWNET)"
        );
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        assert!(up.expect("ip (iproute2) is installed").success());
        let proxy = Proxy::start(&config("", ""));
        let mut s = std::net::TcpStream::connect(proxy.addr).expect("proxy in namespace");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        use std::io::{Read, Write};
        let dest = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), 80);
        let mut bytes = vec![5, 1, 0];
        rustsocks::protocol::socks5::Request {
            command: Command::Connect,
            dest: dest.into(),
        }
        .encode(&mut bytes);
        s.write_all(&bytes).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    })
    .join()
    .expect("namespace thread");
    let mut expected = vec![5, 0];
    expected.extend(Reply::failure(ReplyCode::NetworkUnreachable).to_bytes());
    assert_eq!(result, expected);
}
