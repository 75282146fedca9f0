//! The real server driven by curl, an independent SOCKS client, fetching a file from
//! a local HTTP server through every protocol variant.

mod common;

use std::net::SocketAddr;

use common::curl::{fetch, Fetch};
use common::{config, upstream, Proxy};

/// 1 MiB of deterministic pseudo-random bytes (xorshift), so a corrupted or truncated
/// transfer cannot compare equal by accident.
fn payload() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Runs curl through the proxy with `proxy_args`, fetching `url`.
async fn curl(proxy_args: Vec<String>, url: String) -> Fetch {
    fetch(proxy_args, url).await
}

fn args(flag: &str, proxy: SocketAddr, user: Option<&str>) -> Vec<String> {
    let mut v = vec![flag.to_owned(), proxy.to_string()];
    if let Some(u) = user {
        v.extend(["--proxy-user".to_owned(), u.to_owned()]);
    }
    v
}

#[tokio::test]
async fn curl_fetches_file_through_every_protocol_variant() {
    let body = payload();
    let http = upstream::http_file(body.clone());
    let proxy = Proxy::start(&config("", ""));
    let by_ip = format!("http://{http}/file");
    let by_name = format!("http://localhost:{}/file", http.port());
    for (flag, url) in [
        ("--socks5", &by_ip),
        ("--socks5-hostname", &by_name),
        ("--socks4", &by_ip),
        ("--socks4a", &by_name),
    ] {
        let r = curl(args(flag, proxy.addr, None), url.clone()).await;
        assert_eq!(r.exit, 0, "{flag}: {}", r.stderr);
        assert!(
            r.body == body,
            "{flag}: body differs ({} bytes)",
            r.body.len()
        );
    }
}

#[tokio::test]
async fn curl_with_username_and_password() {
    let body = payload();
    let http = upstream::http_file(body.clone());
    let (status, hash, _) = common::run_cli(&["hash-password"], "b0b-pass\n");
    assert!(status.success());
    let users = format!(
        "[auth]\nsocks_method = \"userpass\"\n\
         [[auth.users]]\nusername = \"alice\"\npassword = \"s3cret-alice\"\n\
         [[auth.users]]\nusername = \"bob\"\npassword_hash = \"{}\"\n",
        hash.trim()
    );
    let proxy = Proxy::start(&config("", &users));
    let url = format!("http://{http}/file");

    for user in ["alice:s3cret-alice", "bob:b0b-pass"] {
        let r = curl(args("--socks5", proxy.addr, Some(user)), url.clone()).await;
        assert_eq!(r.exit, 0, "{user}: {}", r.stderr);
        assert!(r.body == body, "{user}: body differs");
    }
    for user in ["alice:wrong-password", "bob:s3cret-alice", "mallory:x"] {
        let r = curl(args("--socks5", proxy.addr, Some(user)), url.clone()).await;
        assert_ne!(r.exit, 0, "{user} was let in");
        assert!(r.body.is_empty(), "{user} received data");
    }
    let r = curl(args("--socks5", proxy.addr, None), url.clone()).await;
    assert_ne!(r.exit, 0, "no credentials, but let in");
    // SOCKS4 cannot carry a password, so it must not bypass authentication.
    let r = curl(args("--socks4", proxy.addr, None), url.clone()).await;
    assert_ne!(r.exit, 0, "SOCKS4 bypassed authentication");
    assert!(r.body.is_empty());

    assert!(proxy.wait_for_log("authentication failed"));
    let log = proxy.log();
    let failure = log
        .lines()
        .find(|l| l.contains("authentication failed") && l.contains("alice"))
        .expect("failure logged with user");
    assert!(
        failure.contains("127.0.0.1:"),
        "client address missing: {failure}"
    );
    assert!(
        !log.contains("wrong-password")
            && !log.contains("s3cret-alice")
            && !log.contains("b0b-pass"),
        "a password reached the log"
    );
}
