//! Start-up, configuration errors, the CLI, and graceful shutdown of the binary.

mod common;

use std::time::Duration;

use tokio::io::AsyncReadExt;

use common::socks::{self, assert_echo};
use common::{config, run_cli, upstream, Proxy, TempDir};

#[tokio::test]
async fn sigterm_lets_open_tunnels_finish_then_exits_zero() {
    let echo = upstream::echo();
    let mut proxy = Proxy::start(&config("shutdown_grace_secs = 30", ""));
    let mut tunnel = socks::tunnel(proxy.addr, echo).await;
    proxy.signal(libc::SIGTERM);
    assert!(proxy.wait_for_log("SIGTERM received"));
    // New clients are turned away once the listener is closed...
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(proxy.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "listener still accepting after SIGTERM");
    // ...while the open tunnel keeps working.
    assert_echo(&mut tunnel, b"during shutdown").await;
    drop(tunnel);
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("exited once the tunnel closed");
    assert!(status.success(), "{status:?}");
}

/// A tunnel still transferring when the grace period ends is cut with a reset on the
/// client's side: a clean FIN would make the truncated stream look complete.
#[tokio::test]
async fn grace_period_ends_open_tunnels_with_a_reset() {
    let source = upstream::endless();
    let mut proxy = Proxy::start(&config("shutdown_grace_secs = 1", ""));
    let mut tunnel = socks::tunnel(proxy.addr, source).await;
    // Only reads: a write failing first would take the socket's error, and the read
    // after it would see a plain end of stream whatever the proxy sent.
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tunnel.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.kind()),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.signal(libc::SIGINT);
    let end = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the tunnel was cut")
        .unwrap();
    assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset));
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("exited after the grace period");
    assert!(status.success(), "{status:?}");
    assert!(proxy.log().contains("grace period over"));
}

#[test]
fn invalid_config_exits_nonzero_naming_the_key() {
    let dir = TempDir::new();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nbind_port = 1\nmax_connections = 0\n").unwrap();
    let (status, _, stderr) = run_cli(&["--config", path.to_str().unwrap()], "");
    assert!(!status.success());
    assert!(
        stderr.contains("server.max_connections = 0: expected at least 1"),
        "{stderr}"
    );
    // It failed before binding: port 1 needs no privilege check to be reached.
    assert!(!stderr.contains("listener ready"), "{stderr}");

    std::fs::write(&path, "[server]\nbind_prot = 1080\n").unwrap();
    let (status, _, stderr) = run_cli(&["--config", path.to_str().unwrap()], "");
    assert!(!status.success());
    assert!(stderr.contains("bind_prot"), "{stderr}");

    let (status, _, stderr) = run_cli(&["--config", "/nonexistent/rustsocks.toml"], "");
    assert!(!status.success());
    assert!(
        stderr.contains("cannot read config file /nonexistent/rustsocks.toml"),
        "{stderr}"
    );
}

#[test]
fn open_proxy_is_refused_at_start_up() {
    let (status, _, stderr) = run_cli(&["--bind", "0.0.0.0:0"], "");
    assert!(!status.success());
    assert!(
        stderr.contains("server.bind_address = \"0.0.0.0\""),
        "{stderr}"
    );
    assert!(stderr.contains("allow_open_proxy"), "{stderr}");
}

#[test]
fn check_config_reports_ok_or_every_problem() {
    let (status, stdout, _) = run_cli(
        &[
            "check-config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/rustsocks.toml"),
        ],
        "",
    );
    assert!(status.success());
    assert_eq!(stdout.trim(), "OK");
    let dir = TempDir::new();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[server]\nhandshake_timeout_ms = 0\n[auth]\nsocks_method = \"userpass\"\n",
    )
    .unwrap();
    let (status, _, stderr) = run_cli(&["check-config", path.to_str().unwrap()], "");
    assert!(!status.success());
    assert!(
        stderr.contains("server.handshake_timeout_ms = 0"),
        "{stderr}"
    );
    assert!(stderr.contains("auth.users = []"), "{stderr}");
    // A token file that is not there stops the server, so check-config says so.
    let missing = dir.path().join("no-such-token");
    std::fs::write(
        &path,
        format!("[api]\ntoken_file = \"{}\"\n", missing.display()),
    )
    .unwrap();
    let (status, stdout, stderr) = run_cli(&["check-config", path.to_str().unwrap()], "");
    assert!(!status.success(), "{stdout}");
    assert!(stderr.contains("no-such-token"), "{stderr}");
}

#[tokio::test]
async fn bind_flag_overrides_the_file() {
    let dir = TempDir::new();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[server]\nbind_port = 1\n[api]\nport = 0\n[sessions]\nenabled = false\n[logging]\nformat = \"json\"\n",
    )
    .unwrap();
    let free = upstream::closed_port();
    let mut child = std::process::Command::new(common::binary())
        .args([
            "--config",
            path.to_str().unwrap(),
            "--bind",
            &free.to_string(),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut connected = None;
    for _ in 0..250 {
        if let Ok(s) = tokio::net::TcpStream::connect(free).await {
            connected = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        connected.is_some(),
        "nothing listened on the --bind address"
    );
}

#[test]
fn hash_password_prints_a_verifiable_argon2id_hash() {
    let (status, stdout, _) = run_cli(&["hash-password"], "correct horse\n");
    assert!(status.success());
    let hash = stdout.trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(rustsocks::auth::is_argon2_phc(hash));
    let (status, _, stderr) = run_cli(&["hash-password"], "");
    assert!(!status.success());
    assert!(stderr.contains("empty password"), "{stderr}");
}

#[test]
fn version_and_help() {
    let (status, stdout, _) = run_cli(&["--version"], "");
    assert!(status.success());
    assert!(stdout.starts_with("rustsocks "), "{stdout}");
    let (status, stdout, _) = run_cli(&["--help"], "");
    assert!(status.success());
    for word in ["check-config", "hash-password", "--config", "--bind"] {
        assert!(stdout.contains(word), "{word} missing from --help");
    }
}
