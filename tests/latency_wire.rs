//! The latency emulator (`rustsocks-bench wire` behind `scripts/netns-latency.sh`)
//! and what it is for: a target a real round trip away, where the pool's worth shows.
//! Needs root (a network namespace and TUN devices), as in CI; the namespace and its
//! addresses are the script's own.

mod common;

use std::process::Command;
use std::sync::Mutex;

use common::Proxy;
use serde_json::Value;

/// Round trip the tests set up, in milliseconds: long enough that no processing on
/// this machine comes near it, so the assertions are about the wire, not speed.
const RTT_MS: u64 = 20;

/// The tests share one namespace, so they take turns.
static WIRE: Mutex<()> = Mutex::new(());

fn bench() -> &'static str {
    env!("CARGO_BIN_EXE_rustsocks-bench")
}

/// `scripts/netns-latency.sh ARGS`, with this build's bench binary.
fn netns(args: &[&str]) {
    let status = Command::new("scripts/netns-latency.sh")
        .args(args)
        .env("BENCH", bench())
        .status()
        .expect("running scripts/netns-latency.sh");
    assert!(status.success(), "netns-latency.sh {args:?} failed");
}

/// Sets the wire up for the life of the value; tears it down (restoring the sysctl
/// it changed) when dropped, also when a test fails.
struct Wire;

impl Wire {
    fn up() -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: the latency wire needs root");
            return None;
        }
        // The guard exists before the set-up, so a failed set-up is torn down too.
        let wire = Wire;
        netns(&["up", &RTT_MS.to_string()]);
        Some(wire)
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        netns(&["down"]);
    }
}

/// Runs the bench with `args` and returns its JSON result line.
fn run_bench(args: &[&str]) -> Value {
    let out = Command::new(bench())
        .args(args)
        .output()
        .expect("running rustsocks-bench");
    assert!(
        out.status.success(),
        "rustsocks-bench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let line = stdout.lines().last().expect("a JSON result line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn us(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn every_tcp_handshake_across_the_wire_takes_the_round_trip() {
    let _turn = WIRE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_wire) = Wire::up() else { return };
    let r = run_bench(&[
        "--direct",
        "--target",
        "10.203.0.2:7000",
        "latency",
        "--count",
        "10",
    ]);
    assert_eq!(r["errors"], 0, "{r}");
    // A connect is SYN out and SYN-ACK back: each waits half the round trip.
    let connect = &r["connect_reply_us"];
    assert!(us(&connect["p50"]) >= RTT_MS * 1000, "{r}");
    // The session adds the echo's round trip.
    assert!(us(&r["session_us"]["p50"]) >= 2 * RTT_MS * 1000, "{r}");
}

#[test]
fn the_pool_answers_connects_without_waiting_a_round_trip() {
    let _turn = WIRE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_wire) = Wire::up() else { return };
    let proxy = Proxy::start(&common::config(
        "",
        "[server.pool]\nenabled = true\nmax_idle_per_dest = 4\n",
    ));
    let r = run_bench(&[
        "--proxy",
        &proxy.addr.to_string(),
        "--target",
        "10.203.0.2:7010",
        "pool",
        "--concurrency",
        "1",
        "--count",
        "40",
        "--api",
        &proxy.api.expect("API enabled").to_string(),
    ]);
    assert_eq!(r["errors"], 0, "{r}");
    // The first two CONNECTs miss (the second starts a spare); then each hit's
    // replacement lands during the session's own round trip.
    let hit_rate = r["pool"]["hit_rate"].as_f64().unwrap();
    assert!(hit_rate >= 0.9, "{r}");
    assert!(
        us(&r["connect_reply_us"]["p50"]) < RTT_MS * 1000 / 2,
        "a hit waited for the wire: {r}"
    );
    // And nothing was dialled for nobody.
    assert!(r["pool"]["unused_dials"].as_u64().unwrap() <= 1, "{r}");
}
