//! Start-up, configuration errors, the CLI, and graceful shutdown of the binary.

mod common;

use std::time::Duration;

use tokio::io::AsyncReadExt;

use common::socks::{self, assert_echo};
use common::{config, run_cli, upstream, Proxy, TempDir};

/// Both ways of running connections (`server.runtime`): with per-core runtimes
/// each tunnel lives on the thread whose listener accepted it, and shutdown has to
/// wait for every thread's tunnels, not only its own runtime's.
const RUNTIMES: [&str; 2] = ["per-core", "shared"];

#[tokio::test]
async fn sigterm_lets_open_tunnels_finish_then_exits_zero() {
    let echo = upstream::echo();
    for runtime in RUNTIMES {
        let mut proxy = Proxy::start(&config(
            &format!("shutdown_grace_secs = 30\nworker_threads = 2\nruntime = \"{runtime}\""),
            "",
        ));
        // Eight tunnels: the kernel spreads them over both per-core listeners
        // (by a hash of the client port, so not evenly, but all on one thread
        // only once in 128 runs).
        let mut tunnels = Vec::new();
        for _ in 0..8 {
            tunnels.push(socks::tunnel(proxy.addr, echo).await);
        }
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
        assert!(refused, "{runtime}: listener still accepting after SIGTERM");
        // ...while the open tunnels keep working.
        for tunnel in &mut tunnels {
            assert_echo(tunnel, b"during shutdown").await;
        }
        drop(tunnels);
        let status = proxy
            .wait_exit(Duration::from_secs(10))
            .expect("exited once the tunnels closed");
        assert!(status.success(), "{runtime}: {status:?}");
    }
}

/// Per-core runtimes listen with `SO_REUSEPORT`, which would let a second process
/// of the same user join the port and take a share of the clients unnoticed. A
/// second start on a port in use must fail as it does without it.
#[test]
fn a_second_server_on_a_port_in_use_is_refused() {
    let first = Proxy::start(&config(
        "worker_threads = 2\nruntime = \"per-core\"",
        "[api]\nenabled = false\n[sessions]\nenabled = false\n",
    ));
    let dir = TempDir::new();
    let path = dir.path().join("second.toml");
    let text = format!(
        "[server]\nbind_port = {}\nworker_threads = 2\nruntime = \"per-core\"\n[api]\nenabled = false\n[sessions]\nenabled = false\n",
        first.addr.port()
    );
    std::fs::write(&path, text).unwrap();
    let mut second = std::process::Command::new(common::binary())
        .current_dir(dir.path())
        .arg("--config")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    for _ in 0..200 {
        status = second.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(status) = status else {
        let _ = second.kill();
        panic!("a second server started on port {}", first.addr.port());
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Address already in use"), "{stderr}");
}

/// A tunnel still transferring when the grace period ends is cut with a reset on the
/// client's side: a clean FIN would make the truncated stream look complete.
#[tokio::test]
async fn grace_period_ends_open_tunnels_with_a_reset() {
    let source = upstream::endless();
    for runtime in RUNTIMES {
        let mut proxy = Proxy::start(&config(
            &format!("shutdown_grace_secs = 1\nworker_threads = 2\nruntime = \"{runtime}\""),
            "",
        ));
        let mut tunnel = socks::tunnel(proxy.addr, source).await;
        // Only reads: a write failing first would take the socket's error, and the
        // read after it would see a plain end of stream whatever the proxy sent.
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
        assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset), "{runtime}");
        let status = proxy
            .wait_exit(Duration::from_secs(10))
            .expect("exited after the grace period");
        assert!(status.success(), "{runtime}: {status:?}");
        assert!(proxy.log().contains("grace period over"), "{runtime}");
    }
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
    let dir = TempDir::new();
    let path = dir.path().join("c.toml");
    // The example as shipped, on ports nothing on this machine can hold (check-config
    // also reports a port already in use).
    let example = include_str!("../config/rustsocks.toml")
        .replace("bind_port = 1080", "bind_port = 0")
        .replace("port = 9090", "port = 0");
    std::fs::write(&path, example).unwrap();
    let (status, stdout, _) = run_cli(&["check-config", path.to_str().unwrap()], "");
    assert!(status.success(), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("OK"), "{stdout}");
    // Which access rules apply, and whether the destination guard does.
    assert!(
        stdout.contains(
            "private destinations are not blocked (the default for a loopback-only listener)"
        ),
        "{stdout}"
    );
    std::fs::write(
        &path,
        "[server]\nbind_address = \"0.0.0.0\"\nbind_port = 0\n[auth]\nsocks_method = \"userpass\"\n\
         [[auth.users]]\nusername = \"u\"\npassword = \"p\"\n[api]\nport = 0\n\
         [[acl.rules]]\naction = \"block\"\ndestinations = [\"10.0.0.0/8\"]\n",
    )
    .unwrap();
    let (status, stdout, _) = run_cli(&["check-config", path.to_str().unwrap()], "");
    assert!(status.success(), "{stdout}");
    assert!(
        stdout.contains("access: 1 rule(s), default_policy = \"allow\"; private destinations are blocked (the default for a listener that is not loopback-only)"),
        "{stdout}"
    );
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

/// Runs `check-config` and then the server on `toml`; both must fail, with every
/// one of `needles` in the message. The server must fail before it is ready.
fn check_and_start_fail(toml: &str, needles: &[&str]) {
    let dir = TempDir::new();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    let path = path.to_str().unwrap();
    for args in [&["check-config", path][..], &["--config", path][..]] {
        let (status, stdout, stderr) = run_cli(args, "");
        assert!(!status.success(), "{args:?} succeeded: {stdout}{stderr}");
        assert!(!stdout.contains("OK"), "{args:?}: {stdout}");
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{args:?}: no {needle:?} in {stderr}"
            );
        }
        assert!(!stderr.contains("listener ready"), "{stderr}");
    }
}

#[test]
fn bad_access_rules_are_named_by_rule_and_key_and_stop_the_start() {
    check_and_start_fail(
        "[server]\nbind_port = 0\n[api]\nport = 0\n\
         [[acl.rules]]\naction = \"allow\"\n\
         [[acl.rules]]\naction = \"block\"\ndestinations = [\"db.internal\", \"10.0.0.1/8\"]\nports = [\"9000-8000\"]\n",
        &[
            "acl.rules[1].destinations[1] = \"10.0.0.1/8\"",
            "did you mean 10.0.0.0/8?",
            "acl.rules[1].ports[0] = \"9000-8000\"",
        ],
    );
    // An unknown key is toml's error, naming the key and the line.
    check_and_start_fail(
        "[server]\nbind_port = 0\n[api]\nport = 0\n[[acl.rules]]\naction = \"block\"\ndestination = [\"x\"]\n",
        &["destination", "line 7"],
    );
}

#[test]
fn a_token_file_that_cannot_be_read_is_named_with_its_key_and_cause() {
    let dir = TempDir::new();
    let missing = dir.path().join("no-such-token");
    check_and_start_fail(
        &format!(
            "[server]\nbind_port = 0\n[api]\nport = 0\ntoken_file = \"{}\"\n",
            missing.display()
        ),
        &[
            &format!("api.token_file = \"{}\"", missing.display()),
            "(it does not exist)",
        ],
    );
    check_and_start_fail(
        &format!(
            "[server]\nbind_port = 0\n[api]\nport = 0\ntoken_file = \"{}\"\n",
            dir.path().display()
        ),
        &[
            &format!("api.token_file = \"{}\"", dir.path().display()),
            "(it is a directory)",
        ],
    );
}

#[test]
fn socks_and_api_on_one_port_are_refused_when_their_addresses_overlap() {
    let port = upstream::closed_port().port();
    for (socks, api) in [
        ("127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1"),
        ("127.0.0.1", "::"),
    ] {
        check_and_start_fail(
            &format!(
                "[server]\nbind_address = \"{socks}\"\nbind_port = {port}\nallow_open_proxy = true\n\
                 [api]\nbind_address = \"{api}\"\nport = {port}\ntoken = \"t\"\n\
                 [sessions]\nenabled = false\n"
            ),
            &[&format!("api.port = {port}: expected a port other than server.bind_port")],
        );
    }
    // Different loopback addresses may share a port number.
    let dir = TempDir::new();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nbind_address = \"127.0.0.1\"\nbind_port = {port}\n\
             [api]\nbind_address = \"127.0.0.2\"\nport = {port}\n[sessions]\nenabled = false\n"
        ),
    )
    .unwrap();
    let (status, stdout, stderr) = run_cli(&["check-config", path.to_str().unwrap()], "");
    assert!(status.success(), "{stdout}{stderr}");
}

#[test]
fn a_database_in_a_missing_directory_is_refused_naming_the_key() {
    let dir = TempDir::new();
    let db = dir.path().join("no-such-dir").join("history.db");
    check_and_start_fail(
        &format!(
            "[server]\nbind_port = 0\n[api]\nport = 0\n[sessions]\ndatabase_url = \"sqlite://{}\"\n",
            db.display()
        ),
        &[
            &format!("sessions.database_url = \"sqlite://{}\"", db.display()),
            "expected a file in an existing directory",
            "no-such-dir: it does not exist",
        ],
    );
    assert!(!db.parent().unwrap().exists(), "the directory was created");
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_as_it_was() {
    let dir = TempDir::new();
    for (name, bytes) in [
        ("one-byte.db", &b"x"[..]),
        ("notes.txt", b"meeting notes\n"),
    ] {
        let db = dir.path().join(name);
        std::fs::write(&db, bytes).unwrap();
        check_and_start_fail(
            &format!(
                "[server]\nbind_port = 0\n[api]\nport = 0\n[sessions]\ndatabase_url = \"sqlite://{}\"\n",
                db.display()
            ),
            &[
                &format!("sessions.database_url = \"sqlite://{}\"", db.display()),
                "is not a SQLite database",
            ],
        );
        assert_eq!(std::fs::read(&db).unwrap(), bytes, "{name} was modified");
        for suffix in ["-wal", "-shm", "-journal"] {
            let side = dir.path().join(format!("{name}{suffix}"));
            assert!(!side.exists(), "{} was created", side.display());
        }
    }
}

#[test]
fn check_config_reports_a_port_already_in_use() {
    if std::fs::metadata("/proc/net/tcp").is_err() {
        // Without the kernel's socket table the check says it could not look.
        let (status, stdout, _) = run_cli(
            &[
                "check-config",
                concat!(env!("CARGO_MANIFEST_DIR"), "/config/rustsocks.toml"),
            ],
            "",
        );
        assert!(status.success());
        assert!(stdout.contains("note: could not check whether"), "{stdout}");
        return;
    }
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let dir = TempDir::new();
    let path = dir.path().join("c.toml");
    for (toml, key) in [
        (format!("[server]\nbind_port = {port}\n[api]\nport = 0\n"), "server.bind_port"),
        (format!("[server]\nbind_port = 0\n[api]\nport = {port}\n"), "api.port"),
        // The unspecified address collides with a listener on loopback.
        (
            format!("[server]\nbind_port = 0\n[api]\nbind_address = \"0.0.0.0\"\nport = {port}\ntoken = \"t\"\n"),
            "api.port",
        ),
    ] {
        std::fs::write(&path, &toml).unwrap();
        let (status, stdout, stderr) = run_cli(&["check-config", path.to_str().unwrap()], "");
        assert!(!status.success(), "{toml}: {stdout}");
        assert!(
            stderr.contains(&format!("{key} = {port}: expected a free port"))
                && stderr.contains(&format!("already listens on 127.0.0.1:{port}")),
            "{toml}: {stderr}"
        );
    }
    drop(held);
    std::fs::write(
        &path,
        format!("[server]\nbind_port = {port}\n[api]\nport = 0\n"),
    )
    .unwrap();
    let (status, stdout, _) = run_cli(&["check-config", path.to_str().unwrap()], "");
    assert!(status.success(), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("OK"), "{stdout}");
}

/// Runs the binary with `args` and backtraces asked for in every way (anyhow reads
/// `RUST_LIB_BACKTRACE` first, then `RUST_BACKTRACE`); returns (status, stderr).
fn run_asking_for_backtraces(args: &[&str]) -> (std::process::ExitStatus, String) {
    let cwd = TempDir::new();
    let out = std::process::Command::new(common::binary())
        .current_dir(cwd.path())
        .args(args)
        .env("RUST_BACKTRACE", "full")
        .env("RUST_LIB_BACKTRACE", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run rustsocks");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_start_up_error_is_one_line_without_a_backtrace() {
    let dir = TempDir::new();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nmax_connections = 0\n").unwrap();
    let missing = dir.path().join("missing.toml");
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let busy = dir.path().join("busy.toml");
    std::fs::write(
        &busy,
        format!("[server]\nbind_port = {port}\n[api]\nport = 0\n[sessions]\nenabled = false\n"),
    )
    .unwrap();
    let (bad, missing, busy) = (
        bad.to_str().unwrap(),
        missing.to_str().unwrap(),
        busy.to_str().unwrap(),
    );
    let problem = "error: invalid configuration: server.max_connections = 0: expected at least 1";
    let cases: [(&[&str], String, &str); 4] = [
        (&["--config", bad], problem.into(), ""),
        (&["check-config", bad], problem.into(), ""),
        (
            &["--config", missing],
            format!("error: cannot read config file {missing}: "),
            "No such file or directory",
        ),
        (
            &["--config", busy],
            format!("error: cannot listen on 127.0.0.1:{port}: "),
            "Address already in use",
        ),
    ];
    for (args, start, cause) in cases {
        let (status, stderr) = run_asking_for_backtraces(args);
        assert_eq!(status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{args:?}: not one line:\n{stderr}"
        );
        assert!(stderr.starts_with(&start), "{args:?}: {stderr}");
        // The cause is given once, not repeated by the error chain.
        if !cause.is_empty() {
            assert_eq!(stderr.matches(cause).count(), 1, "{args:?}: {stderr}");
        }
        assert!(!stderr.contains("acktrace"), "{args:?}: {stderr}");
    }
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
