//! The dashboard in a real browser: Debian's chromium, driven by playwright-core
//! (tests/browser/dashboard.mjs), against the real server with live SOCKS traffic.
//! scripts/test.sh installs chromium and the Node package and sets
//! RUSTSOCKS_BROWSER_TESTS=1, which makes their absence a failure; a plain
//! `cargo test` without them skips this test and says so.

mod common;

use std::path::Path;
use std::time::Duration;

use common::http::get;
use common::socks::{self, assert_echo, read_until_closed};
use common::{config, upstream, Proxy};
use rustsocks::protocol::socks5::Command;
use rustsocks::protocol::TargetAddr;

const TOKEN: &str = "dashboard-test-token";

/// Access rules for the ACL page: the browser checks the rows and tests a request
/// that rule 1 blocks (SSH to 192.0.2.0/24). Its description is HTML, which the
/// page must show as text. The tunnels below go to 127.0.0.1, which no rule names
/// (and the guard is off: the listener is loopback-only).
const ACL: &str = r#"
[[acl.groups]]
name = "ops"
members = ["alice", "dan"]

[[acl.rules]]
action = "allow"
groups = ["ops"]
destinations = ["10.20.0.0/16"]
commands = ["connect"]
description = "ops reach the management network"

[[acl.rules]]
action = "block"
destinations = ["192.0.2.0/24"]
ports = [22, "8000-9000"]
description = "no SSH to the lab <img src=x onerror=alert(1)>"
"#;

fn browser_available() -> bool {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let node_modules =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/playwright-core");
    Path::new(&chromium).exists() && node_modules.exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_pages_match_the_api_in_a_real_browser() {
    if !browser_available() {
        assert!(
            std::env::var_os("RUSTSOCKS_BROWSER_TESTS").is_none(),
            "chromium or tests/browser/node_modules missing (scripts/test.sh installs them)"
        );
        eprintln!("skipped: no chromium or playwright-core; run scripts/test.sh");
        return;
    }
    let rest = format!(
        "[api]\nport = 0\ntoken = \"{TOKEN}\"\n[server.pool]\nenabled = true\n\
         [sessions]\nbatch_interval_ms = 50\n[telemetry]\naggregation_interval_secs = 1\n\
         {ACL}"
    );
    let proxy = Proxy::start(&config("", &rest));
    let api = proxy.api.unwrap();
    let echo = upstream::echo();
    for _ in 0..3 {
        let mut s = socks::tunnel(proxy.addr, echo).await;
        assert_echo(&mut s, b"traffic").await;
    }
    // A session whose destination is HTML: the page must show it as text.
    let hostile = TargetAddr::Domain("<img src=x onerror=alert(1)>".into(), 80);
    let (_s, reply) = socks::socks5(proxy.addr, Command::Connect, hostile).await;
    assert_ne!(
        reply.code,
        rustsocks::protocol::socks5::ReplyCode::Succeeded
    );
    // One long-running session, to be terminated from the page.
    let mut long = socks::tunnel(proxy.addr, echo).await;
    assert_echo(&mut long, b"still here").await;
    for _ in 0..100 {
        let h = get(api, "/api/sessions/history?status=failed", Some(TOKEN))
            .await
            .json();
        if h["total"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.mjs");
    let args = [
        script.display().to_string(),
        format!("http://{api}"),
        TOKEN.into(),
        proxy.addr.to_string(),
        shots.display().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .args(&args)
            .output()
            .expect("node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The page's terminate button closed the long session's connection.
    assert_eq!(read_until_closed(&mut long).await, b"");
}
