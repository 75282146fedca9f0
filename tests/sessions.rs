//! Session tracking and history against the real binary.

mod common;

use std::net::SocketAddr;
use std::process::Command as Process;
use std::time::Duration;

use common::http::{self, get};
use common::socks::{self, assert_echo, read_until_closed};
use common::{config, upstream, Proxy, TempDir};
use rustsocks::protocol::socks5::{Command, ReplyCode};
use rustsocks::protocol::TargetAddr;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn api(p: &Proxy) -> SocketAddr {
    p.api.expect("API enabled")
}

/// Polls the history until `query` matches at least `n` sessions (bounded).
async fn wait_history(p: &Proxy, query: &str, n: u64) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        last = get(api(p), &format!("/api/sessions/history?{query}"), None)
            .await
            .json();
        if last["total"].as_u64().unwrap_or(0) >= n {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("history never reached {n} sessions for {query:?}: {last}");
}

fn curl(proxy: SocketAddr, extra: &[&str], url: &str) -> std::process::Output {
    Process::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            "--socks5",
            &proxy.to_string(),
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_counts_equal_what_the_upstream_saw_for_real_curl_transfers() {
    let body: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
    let (http, seen) = upstream::http_counting(body.clone());
    let proxy = Proxy::start(&config("", "[sessions]\nbatch_interval_ms = 50\n"));
    let dir = TempDir::new();
    let upload = dir.path().join("upload.bin");
    std::fs::write(&upload, vec![7u8; 300_000]).unwrap();
    let (p, url) = (proxy.addr, format!("http://{http}/file"));
    let up_arg = format!("@{}", upload.display());
    let out = tokio::task::spawn_blocking(move || curl(p, &[], &url))
        .await
        .unwrap();
    assert!(
        out.status.success() && out.stdout == body,
        "download failed"
    );
    let url = format!("http://{http}/upload");
    let out = tokio::task::spawn_blocking(move || curl(p, &["--data-binary", &up_arg], &url))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "received 300000 bytes\n"
    );

    let history = wait_history(&proxy, "status=closed&sort=start&order=asc", 2).await;
    let sessions = history["sessions"].as_array().unwrap();
    let truth = seen.lock().unwrap().clone();
    assert_eq!(truth.len(), 2);
    for (record, counted) in sessions.iter().zip(&truth) {
        assert_eq!(record["bytes_client_to_upstream"], counted.read, "{record}");
        assert_eq!(
            record["bytes_upstream_to_client"], counted.written,
            "{record}"
        );
        assert_eq!(record["destination"], http.to_string());
        assert_eq!(record["resolved"], http.to_string());
        assert_eq!(record["command"], "connect");
        assert_eq!(record["protocol"], "socks5");
        assert!(record["ended_at"].is_string() && record["duration_ms"].is_u64());
    }
    assert!(truth[0].written > 700_000 && truth[1].read > 300_000);
}

#[tokio::test]
async fn refused_and_failed_requests_are_recorded_with_their_reason() {
    let users = "[auth]\nsocks_method = \"userpass\"\n[[auth.users]]\nusername = \"alice\"\npassword = \"pw\"\n\
                 [sessions]\nbatch_interval_ms = 50\n";
    let proxy = Proxy::start(&config("", users));
    assert!(socks::login(proxy.addr, "mallory", "guess").await.is_none());
    // SOCKS4 cannot authenticate, so with userpass it is refused.
    let mut s4 = socks::connect(proxy.addr).await;
    s4.write_all(&[4, 1, 0, 80, 127, 0, 0, 1, 0]).await.unwrap();
    read_until_closed(&mut s4).await;
    let refused = upstream::closed_port();
    let mut s = socks::login(proxy.addr, "alice", "pw").await.unwrap();
    use rustsocks::protocol::Encode;
    let req = rustsocks::protocol::socks5::Request {
        command: Command::Connect,
        dest: refused.into(),
    };
    s.write_all(&req.to_bytes()).await.unwrap();
    read_until_closed(&mut s).await;
    let rejected = wait_history(&proxy, "status=rejected", 2).await;
    let list = rejected["sessions"].as_array().unwrap();
    // Each is recorded by its own connection's task once its reply is sent, so
    // their order in time is not the order the client made them.
    let by = |protocol: &str| {
        list.iter()
            .find(|r| r["protocol"] == protocol)
            .unwrap_or_else(|| panic!("no {protocol} record in {rejected}"))
    };
    let (auth, socks4) = (by("socks5"), by("socks4"));
    assert_eq!(auth["user"], "mallory");
    assert_eq!(auth["close_reason"], "authentication failed");
    assert!(auth["destination"].is_null());
    assert_eq!(
        socks4["close_reason"],
        "SOCKS4 refused: username/password required"
    );
    let failed = wait_history(&proxy, "status=failed", 1).await;
    let f = &failed["sessions"][0];
    assert_eq!(f["destination"], refused.to_string());
    assert!(
        f["close_reason"].as_str().unwrap().contains("refused"),
        "{f}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_filters_pages_sorts_and_stats_add_up() {
    let users = "[auth]\nsocks_method = \"userpass\"\n\
                 [[auth.users]]\nusername = \"alice\"\npassword = \"a\"\n\
                 [[auth.users]]\nusername = \"bob\"\npassword = \"b\"\n\
                 [sessions]\nbatch_interval_ms = 50\n";
    let proxy = Proxy::start(&config("", users));
    let echo = upstream::echo();
    // alice: 3 sessions of 100, 200, 300 bytes each way; bob: 1 of 50 by host name.
    for (user, pw, size, dest) in [
        ("alice", "a", 100, TargetAddr::from(echo)),
        ("alice", "a", 200, TargetAddr::from(echo)),
        ("alice", "a", 300, TargetAddr::from(echo)),
        (
            "bob",
            "b",
            50,
            TargetAddr::Domain("localhost".into(), echo.port()),
        ),
    ] {
        let mut s = socks::login(proxy.addr, user, pw).await.unwrap();
        use rustsocks::protocol::Encode;
        let req = rustsocks::protocol::socks5::Request {
            command: Command::Connect,
            dest,
        };
        s.write_all(&req.to_bytes()).await.unwrap();
        let reply = socks::read_msg::<rustsocks::protocol::socks5::Reply>(&mut s).await;
        assert_eq!(reply.code, ReplyCode::Succeeded);
        assert_echo(&mut s, &vec![1u8; size]).await;
        drop(s);
    }
    let all = wait_history(&proxy, "status=closed", 4).await;
    assert_eq!(all["total"], 4);
    let total = |q: &str| {
        let addr = api(&proxy);
        let q = q.to_owned();
        async move {
            get(addr, &format!("/api/sessions/history?{q}"), None)
                .await
                .json()["total"]
                .as_u64()
                .unwrap()
        }
    };
    assert_eq!(total("user=alice").await, 3);
    assert_eq!(total("user=bob&destination=localhost").await, 1);
    assert_eq!(total("destination=localhost").await, 1);
    assert_eq!(total("client=127.0.0.1").await, 4);
    assert_eq!(total("status=failed").await, 0);
    assert_eq!(total("since=2999-01-01T00:00:00Z").await, 0);
    assert_eq!(total("until=2999-01-01T00:00:00Z").await, 4);

    let page = get(
        api(&proxy),
        "/api/sessions/history?page_size=3&page=2&sort=start&order=asc",
        None,
    )
    .await
    .json();
    assert_eq!(
        (
            page["total"].as_u64(),
            page["sessions"].as_array().unwrap().len()
        ),
        (Some(4), 1)
    );
    assert_eq!(page["sessions"][0]["user"], "bob");
    let by_bytes = get(
        api(&proxy),
        "/api/sessions/history?sort=bytes&order=desc",
        None,
    )
    .await
    .json();
    let bytes: Vec<u64> = by_bytes["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["bytes_client_to_upstream"].as_u64().unwrap()
                + s["bytes_upstream_to_client"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(bytes, [600, 400, 200, 100]);
    for (q, param) in [
        ("sort=size", "sort"),
        ("order=up", "order"),
        ("page_size=0", "page_size"),
        ("status=gone", "status"),
        ("usr=a", "usr"),
    ] {
        let r = get(api(&proxy), &format!("/api/sessions/history?{q}"), None).await;
        assert_eq!(
            (r.status, r.json()["parameter"].as_str()),
            (400, Some(param)),
            "{q}"
        );
    }

    let stats = get(api(&proxy), "/api/sessions/stats?window_hours=1", None)
        .await
        .json();
    assert_eq!(stats["total_sessions"], 4);
    assert_eq!(stats["bytes_client_to_upstream"], 650);
    assert_eq!(stats["bytes_upstream_to_client"], 650);
    assert_eq!(stats["by_status"]["closed"], 4);
    assert_eq!(stats["top_users"][0]["name"], "alice");
    assert_eq!(stats["top_users"][0]["sessions"], 3);
    assert_eq!(stats["top_users"][0]["bytes"], 1200);
    assert_eq!(stats["top_destinations"][0]["name"], echo.to_string());
    assert_eq!(
        get(api(&proxy), "/api/sessions/stats?window_hours=0", None)
            .await
            .status,
        400
    );
}

/// Active sessions are paged like history: a default page of 50, at most 1000,
/// the total of all, oldest first across pages; bad values name the parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_sessions_are_paged_like_history() {
    let proxy = Proxy::start(&config("", ""));
    let addr = api(&proxy);
    let echo = upstream::echo();
    let mut open = Vec::new();
    for _ in 0..53 {
        let mut s = socks::tunnel(proxy.addr, echo).await;
        assert_echo(&mut s, b"x").await;
        open.push(s);
    }
    let first = get(addr, "/api/sessions/active", None).await.json();
    assert_eq!(
        (&first["total"], &first["page"], &first["page_size"]),
        (&53.into(), &1.into(), &50.into()),
        "{first}"
    );
    assert_eq!(first["sessions"].as_array().unwrap().len(), 50);
    let mut ids = Vec::new();
    let mut starts = Vec::new();
    for page in 1..=6 {
        let r = get(
            addr,
            &format!("/api/sessions/active?page={page}&page_size=10"),
            None,
        )
        .await
        .json();
        assert_eq!((&r["total"], &r["page_size"]), (&53.into(), &10.into()));
        let list = r["sessions"].as_array().unwrap();
        assert_eq!(list.len(), if page < 6 { 10 } else { 3 }, "page {page}");
        for s in list {
            assert_eq!(s["status"], "active");
            ids.push(s["id"].as_str().unwrap().to_owned());
            starts.push(s["started_at"].as_str().unwrap().to_owned());
        }
    }
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 53, "pages overlap");
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "not oldest first");
    let past = get(addr, "/api/sessions/active?page=7&page_size=10", None)
        .await
        .json();
    assert_eq!(
        (
            past["total"].as_u64(),
            past["sessions"].as_array().map(Vec::len)
        ),
        (Some(53), Some(0))
    );
    let all = get(addr, "/api/sessions/active?page_size=1000", None)
        .await
        .json();
    assert_eq!(all["sessions"].as_array().unwrap().len(), 53);
    for (query, param) in [
        ("page_size=0", "page_size"),
        ("page_size=1001", "page_size"),
        ("page_size=ten", "page_size"),
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=1&page=2", "page"),
        ("limit=5", "limit"),
    ] {
        let r = get(addr, &format!("/api/sessions/active?{query}"), None).await;
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        assert_eq!(r.json()["parameter"], param, "{query}: {}", r.text());
    }
    drop(open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_ends_a_long_transfer_and_is_recorded() {
    let proxy = Proxy::start(&config("", "[sessions]\nbatch_interval_ms = 50\n"));
    assert!(
        proxy.dir().join("rustsocks-sessions.db").exists(),
        "the default database is in the working directory"
    );
    let echo = upstream::echo();
    let mut s = socks::tunnel(proxy.addr, echo).await;
    assert_echo(&mut s, b"start").await;
    let active = get(api(&proxy), "/api/sessions/active", None).await.json();
    assert_eq!(active["total"], 1);
    let record = &active["sessions"][0];
    assert_eq!(record["status"], "active");
    assert_eq!(record["bytes_client_to_upstream"], 5);
    let id = record["id"].as_str().unwrap().to_owned();
    assert_eq!(
        get(api(&proxy), &format!("/api/sessions/{id}"), None)
            .await
            .json()["status"],
        "active"
    );

    // A transfer that goes on until the test stops it, echoed back and read.
    let (mut r, mut w) = s.into_split();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_writing = std::sync::Arc::clone(&stop);
    let writer = tokio::spawn(async move {
        let chunk = vec![0u8; 16 * 1024];
        for _ in 0..100_000 {
            if stop_writing.load(std::sync::atomic::Ordering::Relaxed)
                || w.write_all(&chunk).await.is_err()
            {
                break;
            }
        }
        w // kept open: the proxy's cut must be what ends the tunnel
    });
    // Only the reader sees how the tunnel ended: a write failing first would take the
    // socket's error, and the read after it would see a plain end of stream.
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.kind()),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _write_half = tokio::time::timeout(socks::LIMIT, writer)
        .await
        .expect("writer stopped")
        .unwrap();
    let r = http::request(
        api(&proxy),
        "POST",
        &format!("/api/sessions/{id}/terminate"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Cut by the proxy: a reset, so the client cannot take it for a complete stream.
    let end = tokio::time::timeout(socks::LIMIT, reader)
        .await
        .expect("client saw the close")
        .unwrap();
    assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset));

    let done = wait_history(&proxy, "status=terminated", 1).await;
    let t = &done["sessions"][0];
    assert_eq!(t["id"], id.as_str());
    assert!(
        t["bytes_client_to_upstream"].as_u64().unwrap() > 16 * 1024,
        "{t}"
    );
    let again = http::request(
        api(&proxy),
        "POST",
        &format!("/api/sessions/{id}/terminate"),
        None,
    )
    .await;
    assert_eq!(
        (again.status, again.json()["error"].as_str()),
        (409, Some("not_active"))
    );
    let unknown = http::request(
        api(&proxy),
        "POST",
        "/api/sessions/00000000-0000-4000-8000-000000000000/terminate",
        None,
    )
    .await;
    assert_eq!(unknown.status, 404);
    let bad = get(api(&proxy), "/api/sessions/not-a-uuid", None).await;
    assert_eq!(bad.status, 400);
    // Not even UTF-8: still the API's JSON error, not the framework's plain text.
    for (method, path) in [
        ("GET", "/api/sessions/%FF"),
        ("POST", "/api/sessions/%FF/terminate"),
    ] {
        let r = http::request(api(&proxy), method, path, None).await;
        assert_eq!(r.status, 400, "{method} {path}");
        assert_eq!(
            r.json()["error"],
            "bad_request",
            "{method} {path}: {}",
            r.text()
        );
    }
}

/// Sessions that end are written within `batch_interval_ms`; a SIGKILL after that
/// loses none of them, and a session open at the kill is closed as interrupted at
/// the next start. A graceful restart keeps everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_restart_and_sigkill_after_the_batch_interval() {
    let dir = TempDir::new();
    let db = dir.path().join("history.db");
    let cfg = config(
        "",
        &format!(
            "[sessions]\ndatabase_url = \"sqlite://{}\"\nbatch_interval_ms = 200\n",
            db.display()
        ),
    );
    let echo = upstream::echo();

    let mut proxy = Proxy::start(&cfg);
    for _ in 0..5 {
        let mut s = socks::tunnel(proxy.addr, echo).await;
        assert_echo(&mut s, b"graceful").await;
    }
    proxy.signal(libc::SIGTERM);
    assert!(proxy
        .wait_exit(Duration::from_secs(15))
        .expect("exited")
        .success());

    let mut proxy = Proxy::start(&cfg);
    assert_eq!(
        wait_history(&proxy, "", 5).await["total"],
        5,
        "graceful restart lost history"
    );
    for _ in 0..7 {
        let mut s = socks::tunnel(proxy.addr, echo).await;
        assert_echo(&mut s, b"before the kill").await;
    }
    let _open = socks::tunnel(proxy.addr, echo).await;
    // The documented bound: batch_interval_ms (200) plus the write; wait well past it.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    proxy.signal(libc::SIGKILL);
    proxy.wait_exit(Duration::from_secs(10)).expect("killed");

    let proxy = Proxy::start(&cfg);
    let closed = wait_history(&proxy, "status=closed&page_size=100", 13).await;
    assert_eq!(closed["total"], 13, "{closed}");
    let interrupted = closed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["close_reason"]
                .as_str()
                .unwrap_or("")
                .starts_with("interrupted")
        })
        .count();
    assert_eq!(interrupted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_is_reported_and_records_wait_until_it_is_free() {
    let dir = TempDir::new();
    let db = dir.path().join("locked.db");
    let cfg = config(
        "",
        &format!("[sessions]\ndatabase_url = \"sqlite://{}\"\nbatch_interval_ms = 50\n[telemetry]\naggregation_interval_secs = 1\n", db.display()),
    );
    let proxy = Proxy::start(&cfg);
    let echo = upstream::echo();
    let blocker = rusqlite::Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for _ in 0..3 {
        let mut s = socks::tunnel(proxy.addr, echo).await;
        assert_echo(&mut s, b"still serving").await;
    }
    let mut error_event = None;
    for _ in 0..200 {
        let events = get(
            api(&proxy),
            "/api/telemetry/events?category=sessions&severity=error",
            None,
        )
        .await
        .json();
        if events["count"].as_u64() > Some(0) {
            error_event = Some(events["events"][0].clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let error_event = error_event.expect("a telemetry error for the failing store");
    assert!(
        error_event["message"].as_str().unwrap().contains("locked"),
        "{error_event}"
    );
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    assert_eq!(wait_history(&proxy, "status=closed", 3).await["total"], 3);
    let recovered = get(
        api(&proxy),
        "/api/telemetry/events?category=sessions&severity=info",
        None,
    )
    .await
    .json();
    assert!(recovered["count"].as_u64() > Some(0), "{recovered}");
}

#[tokio::test]
async fn with_sessions_off_nothing_is_kept_and_the_api_says_so() {
    let proxy = Proxy::start(&config("", "[sessions]\nenabled = false\n"));
    let mut s = socks::tunnel(proxy.addr, upstream::echo()).await;
    assert_echo(&mut s, b"untracked").await;
    let r = get(api(&proxy), "/api/sessions/active", None).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (404, Some("sessions_disabled"))
    );
    assert!(
        !proxy.dir().join("rustsocks-sessions.db").exists(),
        "a database was created"
    );
}

#[test]
fn a_database_that_cannot_be_opened_stops_start_up_naming_the_url() {
    let dir = TempDir::new();
    let path = dir.path().join("c.toml");
    // A SQLite header over garbage: the file looks like a database (so validation
    // lets it through) but SQLite cannot open it.
    let db = dir.path().join("broken.db");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend([0xAB; 200]);
    std::fs::write(&db, &bytes).unwrap();
    let url = format!("sqlite://{}", db.display());
    std::fs::write(
        &path,
        format!("[server]\nbind_port = 0\n[api]\nport = 0\n[sessions]\ndatabase_url = \"{url}\"\n"),
    )
    .unwrap();
    let (status, _, stderr) = common::run_cli(&["--config", path.to_str().unwrap()], "");
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("cannot open session database {url}")),
        "{stderr}"
    );
}
