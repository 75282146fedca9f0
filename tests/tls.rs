//! SOCKS over TLS (`[server.tls]`): the binary on loopback with a throw-away PKI
//! (tests/common/certs.rs), a Rust TLS client and `openssl s_client`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use common::certs::Pki;
use common::{config, run_cli, upstream, Proxy};

/// The `[server.tls]` section for `pki`, plus `extra` lines.
fn tls_section(pki: &Pki, extra: &str) -> String {
    format!(
        "[server.tls]\nenabled = true\ncertificate = \"{}\"\nprivate_key = \"{}\"\n{extra}\n",
        pki.path("server.pem").display(),
        pki.path("server.key").display()
    )
}

/// A TLS connection to `addr` that trusts the test CA, presenting the client
/// certificate `NAME.pem` when `client` names one.
async fn tls_connect(
    addr: SocketAddr,
    pki: &Pki,
    client: Option<&str>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    tls_connect_trusting(addr, pki, "ca", client).await
}

/// `tls_connect` trusting only the CA `ca` (`ca` or `rogue`).
async fn tls_connect_trusting(
    addr: SocketAddr,
    pki: &Pki,
    ca: &str,
    client: Option<&str>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.path(&format!("{ca}.pem"))).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let chain = CertificateDer::pem_file_iter(pki.path(&format!("{name}.pem")))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(pki.path(&format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// A SOCKS5 CONNECT to `dest` (no authentication) over `s`, then one echo.
async fn socks_echo<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    dest: SocketAddr,
    data: &[u8],
) -> std::io::Result<Vec<u8>> {
    s.write_all(&[5, 1, 0]).await?;
    s.flush().await?;
    let mut method = [0u8; 2];
    s.read_exact(&mut method).await?;
    if method != [5, 0] {
        return Err(std::io::Error::other(format!("method reply {method:?}")));
    }
    let SocketAddr::V4(v4) = dest else {
        panic!("IPv4 upstreams only")
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&v4.ip().octets());
    req.extend_from_slice(&v4.port().to_be_bytes());
    s.write_all(&req).await?;
    s.flush().await?;
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await?;
    if reply[1] != 0 {
        return Err(std::io::Error::other(format!("reply code {}", reply[1])));
    }
    s.write_all(data).await?;
    s.flush().await?;
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).await?;
    Ok(back)
}

/// `socks_echo` bounded in time: a refused client may be left waiting.
async fn echo_within(
    s: &mut (impl AsyncRead + AsyncWrite + Unpin),
    dest: SocketAddr,
) -> std::io::Result<Vec<u8>> {
    tokio::time::timeout(Duration::from_secs(10), socks_echo(s, dest, b"over tls"))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

#[tokio::test]
async fn a_socks5_connect_inside_tls_reaches_the_upstream_and_plain_socks_does_not() {
    let pki = Pki::new();
    let echo = upstream::echo();
    let proxy = Proxy::start(&config("", &tls_section(&pki, "")));
    let mut tls = tls_connect(proxy.addr, &pki, None).await.unwrap();
    assert_eq!(echo_within(&mut tls, echo).await.unwrap(), b"over tls");
    // The same request in clear text is not a TLS ClientHello: no SOCKS answer.
    let mut plain = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(echo_within(&mut plain, echo).await.is_err());
    assert!(proxy.wait_for_log("TLS handshake"), "{}", proxy.log());
}

#[tokio::test]
async fn openssl_s_client_carries_a_raw_socks_request() {
    use std::io::{Read, Write};
    let pki = Pki::new();
    let echo = upstream::echo();
    let proxy = Proxy::start(&config("", &tls_section(&pki, "")));
    let SocketAddr::V4(v4) = echo else {
        unreachable!()
    };
    let mut bytes = vec![5, 1, 0, 5, 1, 0, 1];
    bytes.extend_from_slice(&v4.ip().octets());
    bytes.extend_from_slice(&v4.port().to_be_bytes());
    bytes.extend_from_slice(b"ping-through-openssl");
    let mut child = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-servername",
            "localhost",
        ])
        .arg("-connect")
        .arg(proxy.addr.to_string())
        .arg("-CAfile")
        .arg(pki.path("ca.pem"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl runs");
    child.stdin.as_mut().unwrap().write_all(&bytes).unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // Method reply (2), CONNECT reply (10), then the echo.
    let want = 2 + 10 + b"ping-through-openssl".len();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while got.len() < want {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        got
    });
    // Bounded: if the bytes never come, killing openssl ends the reader.
    let mut got = None;
    for _ in 0..200 {
        if reader.is_finished() {
            got = Some(reader.join().unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let got = got.expect("openssl s_client got the whole answer within 10 s");
    assert_eq!(&got[..2], &[5, 0]);
    assert_eq!(&got[2..4], &[5, 0], "CONNECT reply: {got:?}");
    assert_eq!(&got[12..], b"ping-through-openssl");
}

#[tokio::test]
async fn client_certificates_from_the_configured_ca_are_required() {
    let pki = Pki::new();
    let echo = upstream::echo();
    let extra = format!(
        "client_ca = \"{}\"\nrequire_client_certificate = true",
        pki.path("ca.pem").display()
    );
    let proxy = Proxy::start(&config("", &tls_section(&pki, &extra)));
    let mut alice = tls_connect(proxy.addr, &pki, Some("alice")).await.unwrap();
    assert_eq!(echo_within(&mut alice, echo).await.unwrap(), b"over tls");
    // With TLS 1.3 the client's handshake can complete before the server has
    // judged its certificate; the refusal shows on the first read at the latest.
    for who in [None, Some("mallory")] {
        let refused = match tls_connect(proxy.addr, &pki, who).await {
            Err(_) => true,
            Ok(mut s) => echo_within(&mut s, echo).await.is_err(),
        };
        assert!(refused, "{who:?} got through");
    }
}

#[tokio::test]
async fn a_client_certificate_is_optional_unless_required() {
    let pki = Pki::new();
    let echo = upstream::echo();
    let extra = format!("client_ca = \"{}\"", pki.path("ca.pem").display());
    let proxy = Proxy::start(&config("", &tls_section(&pki, &extra)));
    let mut anonymous = tls_connect(proxy.addr, &pki, None).await.unwrap();
    assert_eq!(
        echo_within(&mut anonymous, echo).await.unwrap(),
        b"over tls"
    );
    // A certificate that is presented is still checked.
    let refused = match tls_connect(proxy.addr, &pki, Some("mallory")).await {
        Err(_) => true,
        Ok(mut s) => echo_within(&mut s, echo).await.is_err(),
    };
    assert!(refused, "a certificate from another CA was accepted");
}

#[tokio::test]
async fn plain_bind_serves_plain_socks_beside_the_tls_listener() {
    let pki = Pki::new();
    let echo = upstream::echo();
    let plain_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let proxy = Proxy::start(&config(
        &format!("plain_bind = \"127.0.0.1:{plain_port}\""),
        &tls_section(&pki, ""),
    ));
    let plain_addr: SocketAddr = format!("127.0.0.1:{plain_port}").parse().unwrap();
    let mut plain = TcpStream::connect(plain_addr).await.unwrap();
    assert_eq!(echo_within(&mut plain, echo).await.unwrap(), b"over tls");
    let mut tls = tls_connect(proxy.addr, &pki, None).await.unwrap();
    assert_eq!(echo_within(&mut tls, echo).await.unwrap(), b"over tls");
}

/// UDP ASSOCIATE with its control connection inside TLS: the reply comes through
/// TLS, the datagrams go beside it, and closing the TLS connection ends the
/// association.
#[tokio::test]
async fn udp_associate_works_with_a_tls_control_connection() {
    let pki = Pki::new();
    let proxy = Proxy::start(&config("", &tls_section(&pki, "")));
    let echo = common::udp::echo("127.0.0.1".parse().unwrap()).await;
    let mut control = tls_connect(proxy.addr, &pki, None).await.unwrap();
    control.write_all(&[5, 1, 0]).await.unwrap();
    let mut method = [0u8; 2];
    control.read_exact(&mut method).await.unwrap();
    assert_eq!(method, [5, 0]);
    control
        .write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut reply = [0u8; 10];
    control.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[1], 0, "UDP ASSOCIATE refused: {reply:?}");
    let relay = SocketAddr::from((
        [reply[4], reply[5], reply[6], reply[7]],
        u16::from_be_bytes([reply[8], reply[9]]),
    ));
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let answer = common::udp::round_trip(
        &client,
        relay,
        echo.into(),
        b"datagram",
        Duration::from_secs(5),
    )
    .await
    .expect("an answer through the relay");
    assert_eq!(answer.1, b"datagram");
    drop(control);
    // The association ends with its control connection: nothing comes back now.
    let mut gone = false;
    for _ in 0..50 {
        let back = common::udp::round_trip(
            &client,
            relay,
            echo.into(),
            b"late",
            Duration::from_millis(100),
        )
        .await;
        if back.is_none() {
            gone = true;
            break;
        }
    }
    assert!(gone, "the relay outlived its TLS control connection");
}

/// Hostile clients of the TLS listener: garbage, a truncated ClientHello, and one
/// that says nothing. Each is closed (the silent one at the handshake timeout),
/// and a proper client is served afterwards.
#[tokio::test]
async fn garbage_truncated_and_silent_tls_clients_are_closed() {
    let pki = Pki::new();
    let echo = upstream::echo();
    let proxy = Proxy::start(&config(
        "handshake_timeout_ms = 300",
        &tls_section(&pki, ""),
    ));
    // A ClientHello record header that promises 512 bytes, and then 3 of them.
    let truncated: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01];
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    for bytes in [truncated, &garbage[..], &[][..]] {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        let _ = s.write_all(bytes).await;
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    // A TLS alert may come before the close.
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "not closed after {} bytes", bytes.len());
    }
    let mut tls = tls_connect(proxy.addr, &pki, None).await.unwrap();
    assert_eq!(echo_within(&mut tls, echo).await.unwrap(), b"over tls");
}

/// A certificate replaced on disk is used for new handshakes within the poll
/// interval while an open tunnel goes on; a broken replacement keeps the one in
/// force.
#[tokio::test]
async fn a_replaced_certificate_is_reloaded_without_dropping_tunnels() {
    let pki = Pki::new();
    let echo = upstream::echo();
    let live = pki.dir().join("live");
    std::fs::create_dir(&live).unwrap();
    for (from, to) in [("server.pem", "cert.pem"), ("server.key", "key.pem")] {
        std::fs::copy(pki.path(from), live.join(to)).unwrap();
    }
    let section = format!(
        "[server.tls]\nenabled = true\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
        live.join("cert.pem").display(),
        live.join("key.pem").display()
    );
    let proxy = Proxy::start(&config("", &section));
    let mut tunnel = tls_connect(proxy.addr, &pki, None).await.unwrap();
    assert_eq!(echo_within(&mut tunnel, echo).await.unwrap(), b"over tls");

    // Swapped for a certificate from the other CA. Written to temporary names
    // and renamed, as deployment tools do, so no half-written pair is read.
    for (from, to) in [("server2.pem", "cert.pem"), ("server2.key", "key.pem")] {
        std::fs::copy(pki.path(from), live.join("tmp")).unwrap();
        std::fs::rename(live.join("tmp"), live.join(to)).unwrap();
    }
    assert!(
        proxy.wait_for_log("TLS certificate reloaded"),
        "{}",
        proxy.log()
    );
    let mut new = tls_connect_trusting(proxy.addr, &pki, "rogue", None)
        .await
        .unwrap();
    assert_eq!(echo_within(&mut new, echo).await.unwrap(), b"over tls");
    assert!(
        tls_connect(proxy.addr, &pki, None).await.is_err(),
        "old certificate still served"
    );
    tunnel.write_all(b"still here").await.unwrap();
    let mut back = [0u8; 10];
    tunnel.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"still here");

    // A broken certificate file: reported, and the one in force stays.
    std::fs::write(live.join("tmp"), "not a certificate\n").unwrap();
    std::fs::rename(live.join("tmp"), live.join("cert.pem")).unwrap();
    assert!(
        proxy.wait_for_log("TLS certificate not reloaded"),
        "{}",
        proxy.log()
    );
    let mut after = tls_connect_trusting(proxy.addr, &pki, "rogue", None)
        .await
        .unwrap();
    assert_eq!(echo_within(&mut after, echo).await.unwrap(), b"over tls");
}

/// `[api.tls]`: the management API and the dashboard over HTTPS, checked with
/// curl trusting the test CA; plain HTTP to that port gets no answer.
#[tokio::test]
async fn the_api_and_dashboard_are_served_over_https() {
    let pki = Pki::new();
    let api_tls = format!(
        "[api.tls]\nenabled = true\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
        pki.path("server.pem").display(),
        pki.path("server.key").display()
    );
    let proxy = Proxy::start(&config("", &api_tls));
    let api = proxy.api.expect("the API is on");
    let resolve = format!("localhost:{}:127.0.0.1", api.port());
    let https = |path: &str| format!("https://localhost:{}{path}", api.port());
    let ca = pki.path("ca.pem").display().to_string();
    let args = || {
        vec![
            "--cacert".to_owned(),
            ca.clone(),
            "--resolve".to_owned(),
            resolve.clone(),
        ]
    };
    let health = common::curl::fetch(args(), https("/health")).await;
    assert_eq!(health.exit, 0, "{}", health.stderr);
    assert!(
        String::from_utf8_lossy(&health.body).contains("ok"),
        "{health:?}"
    );
    let dashboard = common::curl::fetch(args(), https("/")).await;
    assert_eq!(dashboard.exit, 0, "{}", dashboard.stderr);
    assert!(
        String::from_utf8_lossy(&dashboard.body).contains("<html"),
        "{dashboard:?}"
    );
    // Without the CA curl does not trust the certificate; over plain HTTP there is
    // no HTTP answer at all.
    let untrusted = common::curl::fetch(
        vec!["--resolve".to_owned(), resolve.clone()],
        https("/health"),
    )
    .await;
    assert_ne!(untrusted.exit, 0);
    let plain = common::curl::fetch(vec![], format!("http://{api}/health")).await;
    assert_ne!(plain.exit, 0, "plain HTTP answered: {plain:?}");
}

/// `auth.socks_method = "certificate"`: the client certificate's CN is the user the
/// access rules see. Rules allow alice only; bob, from the same CA, is refused
/// by the rules (reply 2), not by TLS.
#[tokio::test]
async fn the_client_certificate_names_the_user() {
    let pki = Pki::new();
    let echo = upstream::echo();
    let extra = format!(
        "client_ca = \"{}\"\nrequire_client_certificate = true\n\
         [auth]\nsocks_method = \"certificate\"\n\
         [acl]\ndefault_policy = \"block\"\n\
         [[acl.rules]]\naction = \"allow\"\nusers = [\"alice\"]\n",
        pki.path("ca.pem").display()
    );
    let proxy = Proxy::start(&config("", &tls_section(&pki, &extra)));
    let mut alice = tls_connect(proxy.addr, &pki, Some("alice")).await.unwrap();
    assert_eq!(echo_within(&mut alice, echo).await.unwrap(), b"over tls");
    let mut bob = tls_connect(proxy.addr, &pki, Some("bob")).await.unwrap();
    let refused = echo_within(&mut bob, echo).await.unwrap_err();
    assert!(refused.to_string().contains("reply code 2"), "{refused}");
    assert!(
        proxy.wait_for_log(r#""user":"Some(\"alice\")""#),
        "{}",
        proxy.log()
    );
}

/// A certificate without the configured name (alice's has no e-mail SAN) gets
/// "no acceptable method", not a session as nobody.
#[tokio::test]
async fn a_certificate_without_the_configured_name_gets_no_method() {
    let pki = Pki::new();
    let echo = upstream::echo();
    let extra = format!(
        "client_ca = \"{}\"\nrequire_client_certificate = true\n\
         [auth]\nsocks_method = \"certificate\"\ncertificate_user = \"san_email\"\n",
        pki.path("ca.pem").display()
    );
    let proxy = Proxy::start(&config("", &tls_section(&pki, &extra)));
    let mut alice = tls_connect(proxy.addr, &pki, Some("alice")).await.unwrap();
    let refused = echo_within(&mut alice, echo).await.unwrap_err();
    assert!(
        refused.to_string().contains("method reply [5, 255]"),
        "{refused}"
    );
}

/// The certificate's expiry is a metric, and one within 14 days (the test
/// certificates last 2) is a warning event at start.
#[tokio::test]
async fn certificate_expiry_is_a_metric_and_a_warning() {
    let pki = Pki::new();
    let proxy = Proxy::start(&config("", &tls_section(&pki, "")));
    assert!(
        proxy.wait_for_log("TLS certificate expires soon"),
        "{}",
        proxy.log()
    );
    let metrics = common::http::get(proxy.api.unwrap(), "/metrics", None).await;
    let text = metrics.text();
    let line = text
        .lines()
        .find(|l| l.starts_with("rustsocks_tls_certificate_expiry_seconds{listener=\"server\"}"))
        .unwrap_or_else(|| panic!("no expiry metric:\n{text}"))
        .to_owned();
    let expires: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // `openssl -days 2`: two days from when the test made it, give or take.
    let left = expires - now;
    assert!(
        (86_400..=2 * 86_400 + 60).contains(&left),
        "{line}: {left} s left"
    );
    let events = common::http::get(proxy.api.unwrap(), "/api/telemetry/events", None).await;
    let events = events.json();
    let warning = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["details"]["listener"] == "server")
        .unwrap_or_else(|| panic!("no expiry event: {events}"));
    assert_eq!(warning["severity"], "warning");
    // Rounded down to whole days: 1, or 2 when openssl's notAfter rounds up.
    let days = warning["details"]["days_left"].as_i64().unwrap();
    assert!((1..=2).contains(&days), "{warning}");
}

#[test]
fn tls_files_that_cannot_be_used_are_named_by_key_before_start() {
    let pki = Pki::new();
    let write = |name: &str, text: String| {
        let path = pki.dir().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let section = |cert: &str, key: &str| {
        format!(
            "[server]\nbind_port = 0\n[server.tls]\nenabled = true\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
            pki.path(cert).display(),
            pki.path(key).display()
        )
    };
    let cases = [
        (
            section("missing.pem", "server.key"),
            "server.tls.certificate",
            "does not exist",
        ),
        (
            section("server.key", "server.key"),
            "server.tls.certificate",
            "expected PEM certificates",
        ),
        (
            section("server.pem", "alice.key"),
            "server.tls.private_key",
            "does not go with",
        ),
        (
            "[server]\nbind_port = 0\n[server.tls]\nenabled = true\n".to_owned(),
            "server.tls.certificate",
            "required",
        ),
    ];
    for (i, (text, key, why)) in cases.into_iter().enumerate() {
        let path = write(&format!("case{i}.toml"), text);
        let (status, stdout, stderr) = run_cli(&["check-config", path.to_str().unwrap()], "");
        assert!(!status.success(), "case {i}: {stdout}");
        assert!(
            stderr.contains(key) && stderr.contains(why),
            "case {i}: {stderr}"
        );
    }
    let plain = format!(
        "[server]\nbind_port = 0\nplain_bind = \"0.0.0.0:1081\"\n[server.tls]\nenabled = true\n\
         certificate = \"{}\"\nprivate_key = \"{}\"\n",
        pki.path("server.pem").display(),
        pki.path("server.key").display()
    );
    let path = write("plain.toml", plain);
    let (status, _, stderr) = run_cli(&["check-config", path.to_str().unwrap()], "");
    assert!(!status.success());
    assert!(
        stderr.contains("server.plain_bind") && stderr.contains("loopback"),
        "{stderr}"
    );
}
