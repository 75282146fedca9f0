//! The measurements: latency, rate, throughput, idle.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{Client, Tunnel};
use crate::report::{self, describe, histogram, record, summary, Progress};

/// Bytes echoed per session: a small request and its answer.
const ECHO_BYTES: usize = 64;

/// One session: open a tunnel, echo 64 bytes, close. Returns the CONNECT-to-reply time.
async fn session(client: &Client, echo: SocketAddr) -> anyhow::Result<Duration> {
    let (mut s, connect) = client.open(echo).await?;
    let out = [0xA5u8; ECHO_BYTES];
    s.write_all(&out).await?;
    s.flush().await?;
    let mut back = [0u8; ECHO_BYTES];
    tokio::time::timeout(client.timeout, s.read_exact(&mut back))
        .await
        .context("echo timed out")??;
    if back != out {
        bail!("echo returned different bytes");
    }
    Ok(connect)
}

pub async fn latency(
    client: &Client,
    echo: SocketAddr,
    count: u64,
    max: Duration,
) -> (Value, Vec<String>) {
    let (mut whole, mut connect) = (histogram(), histogram());
    let mut errors = 0u64;
    let mut last_error = None;
    let mut progress = Progress::new("latency");
    let started = Instant::now();
    let mut done = 0;
    while done < count && started.elapsed() < max {
        let t = Instant::now();
        match session(client, echo).await {
            Ok(c) => {
                record(&mut whole, t.elapsed());
                record(&mut connect, c);
            }
            Err(e) => {
                errors += 1;
                last_error = Some(e.to_string());
            }
        }
        done += 1;
        progress.tick(done, count);
    }
    progress.finish();
    let elapsed = started.elapsed().as_secs_f64();
    // Failed attempts are not sessions: the rate counts completed ones only.
    let ok = whole.len();
    let result = json!({
        "sessions": ok, "attempts": done, "errors": errors, "last_error": last_error, "elapsed_s": elapsed,
        "sessions_per_s": ok as f64 / elapsed,
        "session_us": summary(&whole), "connect_reply_us": summary(&connect),
    });
    let lines = vec![
        format!("latency: {ok} sequential sessions in {elapsed:.2} s = {:.0} sessions/s, {errors} errors", ok as f64 / elapsed),
        format!("  whole session:    {}", describe(&whole)),
        format!("  CONNECT-to-reply: {}", describe(&connect)),
    ];
    (result, lines)
}

pub async fn rate(
    client: &Client,
    echo: SocketAddr,
    concurrency: u64,
    count: u64,
    max: Duration,
) -> (Value, Vec<String>) {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let last_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, next, errors) = (client.clone(), Arc::clone(&next), Arc::clone(&errors));
        let last_error = Arc::clone(&last_error);
        workers.push(tokio::spawn(async move {
            let (mut whole, mut connect) = (histogram(), histogram());
            while next.fetch_add(1, Ordering::Relaxed) < count && started.elapsed() < max {
                let t = Instant::now();
                match session(&client, echo).await {
                    Ok(c) => {
                        record(&mut whole, t.elapsed());
                        record(&mut connect, c);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        *last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(format!("{e:#}"));
                    }
                }
            }
            (whole, connect, Instant::now())
        }));
    }
    let mut progress = Progress::new("rate");
    while !workers.iter().all(|w| w.is_finished()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        progress.tick(next.load(Ordering::Relaxed).min(count), count);
    }
    progress.finish();
    let (mut whole, mut connect) = (histogram(), histogram());
    // The run ends when its last worker does, not when the progress loop (which
    // polls every 100 ms) notices: on a 0.5 s run that would be up to 20 % off.
    let mut last = started;
    for w in workers {
        if let Ok((a, b, finished)) = w.await {
            let _ = whole.add(a);
            let _ = connect.add(b);
            last = last.max(finished);
        }
    }
    let elapsed = (last - started).as_secs_f64();
    let errors = errors.load(Ordering::Relaxed);
    let ok = whole.len();
    let result = json!({
        "concurrency": concurrency, "sessions": ok, "errors": errors, "elapsed_s": elapsed,
        "last_error": last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        "sessions_per_s": ok as f64 / elapsed,
        "session_us": summary(&whole), "connect_reply_us": summary(&connect),
    });
    let lines = vec![
        format!("rate: {ok} sessions with {concurrency} concurrent in {elapsed:.2} s = {:.0} sessions/s, {errors} errors", ok as f64 / elapsed),
        format!("  whole session:    {}", report::describe(&whole)),
        format!("  CONNECT-to-reply: {}", report::describe(&connect)),
    ];
    (result, lines)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Direction {
    /// Client to target (through the proxy's client-to-upstream path).
    Up,
    /// Target to client.
    Down,
}

pub async fn throughput(
    client: &Client,
    sink: SocketAddr,
    source: SocketAddr,
    streams: u64,
    direction: Direction,
    secs: f64,
) -> anyhow::Result<(Value, Vec<String>)> {
    let target = if direction == Direction::Up {
        sink
    } else {
        source
    };
    let mut tunnels = Vec::new();
    for _ in 0..streams {
        tunnels.push(client.open(target).await?.0);
    }
    let duration = Duration::from_secs_f64(secs);
    let started = Instant::now();
    let stall = client.timeout;
    let tasks: Vec<_> = tunnels
        .into_iter()
        .map(|s| tokio::spawn(stream_for(s, direction, started + duration, stall)))
        .collect();
    let mut total = 0u64;
    for t in tasks {
        total += t.await.context("stream task")??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mbps = total as f64 / elapsed / 1e6;
    let result = json!({ "streams": streams, "direction": format!("{direction:?}").to_lowercase(), "bytes": total, "elapsed_s": elapsed, "mb_per_s": mbps });
    let lines = vec![format!("throughput: {streams} stream(s) {direction:?}: {total} bytes in {elapsed:.2} s = {mbps:.0} MB/s")];
    Ok((result, lines))
}

/// Moves data until `until`; an operation that makes no progress for `stall` ends
/// the run with an error instead of hanging it.
async fn stream_for(
    mut s: Tunnel,
    direction: Direction,
    until: Instant,
    stall: Duration,
) -> anyhow::Result<u64> {
    let mut buf = vec![0x5Au8; 256 * 1024];
    let mut moved = 0u64;
    while Instant::now() < until {
        let op = async {
            match direction {
                Direction::Up => s.write(&buf).await,
                Direction::Down => s.read(&mut buf).await,
            }
        };
        let n = tokio::time::timeout(stall, op)
            .await
            .context("the tunnel stopped moving data")??;
        if n == 0 {
            bail!("tunnel closed during the transfer");
        }
        moved += n as u64;
    }
    Ok(moved)
}

/// Resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS line")?;
    Ok(kb * 1024)
}

pub async fn idle(
    client: &Client,
    echo: SocketAddr,
    tunnels: u64,
    pid: u32,
    hold: Duration,
) -> anyhow::Result<(Value, Vec<String>)> {
    // Warm up, so allocator pools and the runtime are already grown.
    for _ in 0..50 {
        session(client, echo).await?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss(pid)?;
    let mut open = Vec::new();
    let mut progress = Progress::new("idle");
    for i in 0..tunnels {
        let (mut s, _) = client.open(echo).await?;
        // One echo, so the tunnel is fully relaying before it goes quiet.
        s.write_all(b"x").await?;
        s.flush().await?;
        let mut b = [0u8; 1];
        tokio::time::timeout(client.timeout, s.read_exact(&mut b))
            .await
            .context("the echo through an idle-test tunnel timed out")??;
        open.push(s);
        progress.tick(i + 1, tunnels);
    }
    progress.finish();
    tokio::time::sleep(hold).await;
    let after = rss(pid)?;
    drop(open);
    let per_tunnel = after.saturating_sub(before) as f64 / tunnels as f64;
    let result = json!({ "tunnels": tunnels, "pid": pid, "rss_before": before, "rss_after": after, "bytes_per_tunnel": per_tunnel });
    let lines = vec![format!(
        "idle: {tunnels} open tunnels: RSS {:.1} MB -> {:.1} MB = {:.0} bytes ({:.1} kB) per tunnel",
        before as f64 / 1e6,
        after as f64 / 1e6,
        per_tunnel,
        per_tunnel / 1e3
    )];
    Ok((result, lines))
}

/// GET `path` from a RustSocks management API, as JSON.
async fn api_get(api: SocketAddr, path: &str) -> anyhow::Result<Value> {
    let request = async {
        let mut s = TcpStream::connect(api)
            .await
            .with_context(|| format!("connecting to the API at {api}"))?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .with_context(|| format!("the API at {api} did not answer {path} within 10 s"))??;
    let start = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP response")?
        + 4;
    serde_json::from_slice(&raw[start..]).context("the API did not answer JSON (chunked?)")
}

/// Pool counters: where each session's connection came from, and connections the
/// pool closed without handing them to anybody (dropped at the per-destination
/// limit, expired, evicted, or found closed by the peer).
async fn pool_counters(api: SocketAddr) -> anyhow::Result<[u64; 5]> {
    let v = api_get(api, "/api/pool/stats").await?;
    let s = &v["stats"];
    if s.is_null() {
        return Ok([0; 5]);
    }
    let get = |k: &str| s[k].as_u64().unwrap_or(0);
    let closed_unused =
        get("dropped_full") + get("expired") + get("evicted") + get("stale_on_checkout");
    Ok([
        get("hits"),
        get("misses"),
        get("new_connections"),
        get("refreshed"),
        closed_unused,
    ])
}

/// `rate` against a target a real round trip away, with the proxy's pool
/// statistics before and after: hit rate, and dials that never carried a byte.
pub async fn pool(
    client: &Client,
    echo: SocketAddr,
    api: SocketAddr,
    concurrency: u64,
    count: u64,
    max: Duration,
) -> anyhow::Result<(Value, Vec<String>)> {
    let before = pool_counters(api).await?;
    let (mut result, mut lines) = if concurrency <= 1 {
        latency(client, echo, count, max).await
    } else {
        rate(client, echo, concurrency, count, max).await
    };
    // Let refills started by the last sessions land, so they are counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = pool_counters(api).await?;
    let [hits, misses, new, refreshed, unused] =
        [0, 1, 2, 3, 4].map(|i| after[i].saturating_sub(before[i]));
    let sessions = hits + misses;
    let hit_rate = if sessions > 0 {
        hits as f64 / sessions as f64
    } else {
        0.0
    };
    // Spares still idle at the end are not counted: the next run may use them.
    let unused_share = if sessions > 0 {
        unused as f64 / sessions as f64
    } else {
        0.0
    };
    result["pool"] = json!({ "hits": hits, "misses": misses, "new_connections": new, "refreshed": refreshed,
                             "hit_rate": hit_rate, "unused_dials": unused, "unused_dials_per_session": unused_share });
    lines.push(format!(
        "  pool: hit rate {:.1} % ({hits} hits, {misses} misses); {refreshed} refill dials, {unused} closed unused ({:.1} % of sessions)",
        hit_rate * 100.0,
        unused_share * 100.0
    ));
    Ok((result, lines))
}
