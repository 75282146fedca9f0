//! Stress tests of the pool under concurrency. Ignored by default (they measure,
//! and take tens of seconds); run them on purpose:
//!
//! ```sh
//! cargo test --release --test pool_concurrency -- --ignored --nocapture --test-threads 1
//! ```
//!
//! Each prints operations per second and latency percentiles. They assert
//! correctness (every operation succeeds, counts add up), never speed.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{start_in_process, upstream};
use hdrhistogram::Histogram;
use rustsocks::connector::{ConnectionPool, PoolConfig};
use rustsocks::protocol::socks5::{Command, Reply, ReplyCode, Request};
use rustsocks::protocol::{Encode, TargetAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

/// Upper bound on any one scenario, so a regression cannot hang the run.
const TIME_CAP: Duration = Duration::from_secs(60);

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn report(name: &str, ops: u64, elapsed: Duration, h: &Histogram<u64>) {
    println!(
        "{name}: {ops} ops in {:.2} s = {:.0} ops/s; latency mean {:.0} us, p50 {} us, p99 {} us, max {} us",
        elapsed.as_secs_f64(),
        ops as f64 / elapsed.as_secs_f64(),
        h.mean(),
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.99),
        h.max()
    );
}

/// `workers` tasks each run `per_worker` checkouts of the pool API against one
/// local upstream; every other connection is given back unused (the spec's
/// get_or_connect + return), the rest are dropped as if a session used them.
async fn checkout_storm(workers: usize, per_worker: usize) {
    // The echo upstream closes its side when the pool closes a connection, so
    // descriptors do not pile up over tens of thousands of dials.
    let up = upstream::echo();
    let pool = ConnectionPool::new(PoolConfig {
        max_idle_per_dest: 64,
        max_total_idle: 256,
        ..PoolConfig::default()
    });
    let hist = Arc::new(Mutex::new(histogram()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (pool, hist) = (pool.clone(), Arc::clone(&hist));
        let port = up.port();
        tasks.push(tokio::spawn(async move {
            let mut local = histogram();
            for i in 0..per_worker {
                if start.elapsed() > TIME_CAP {
                    break;
                }
                let t = Instant::now();
                let conn = pool
                    .get_or_connect("127.0.0.1", port)
                    .await
                    .expect("checkout");
                local.record(t.elapsed().as_micros() as u64).unwrap();
                if i % 2 == 0 {
                    pool.recycle(conn);
                }
            }
            hist.lock().await.add(local).unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    let h = hist.lock().await;
    let s = pool.get_stats();
    report(
        &format!("pool checkout, {workers} concurrent"),
        h.len(),
        elapsed,
        &h,
    );
    println!(
        "  hits {} misses {} (hit rate {:.1} %), refreshed {}, dropped_full {}, evicted {}",
        s.hits,
        s.misses,
        100.0 * s.hits as f64 / (s.hits + s.misses).max(1) as f64,
        s.refreshed,
        s.dropped_full,
        s.evicted
    );
    assert_eq!(s.hits + s.misses, h.len());
    assert_eq!(s.in_use, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stress test: run with --ignored --nocapture"]
async fn pool_checkout_one_task() {
    checkout_storm(1, 20_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stress test: run with --ignored --nocapture"]
async fn pool_checkout_200_concurrent() {
    checkout_storm(200, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stress test: run with --ignored --nocapture"]
async fn pool_checkout_500_concurrent() {
    checkout_storm(500, 80).await;
}

/// One SOCKS5 session: greeting, CONNECT, 64-byte echo, close. Returns the
/// CONNECT-to-reply time.
async fn session(proxy: std::net::SocketAddr, dest: &TargetAddr) -> Duration {
    let mut s = common::socks::connect(proxy).await;
    s.set_nodelay(true).unwrap();
    common::socks::greet(&mut s).await;
    let t = Instant::now();
    let request = Request {
        command: Command::Connect,
        dest: dest.clone(),
    };
    s.write_all(&request.to_bytes()).await.unwrap();
    let reply = common::socks::read_msg::<Reply>(&mut s).await;
    let connect_time = t.elapsed();
    assert_eq!(reply.code, ReplyCode::Succeeded);
    let payload = [7u8; 64];
    s.write_all(&payload).await.unwrap();
    let mut back = [0u8; 64];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, payload);
    connect_time
}

async fn socks_storm(pool_on: bool, workers: usize, per_worker: usize) {
    let echo = upstream::echo();
    let toml = format!(
        "[server.pool]\nenabled = {pool_on}\nmax_idle_per_dest = 64\nmax_total_idle = 256\n"
    );
    let server = start_in_process(&toml).await;
    let proxy = server.socks_addr();
    let dest = TargetAddr::from(echo);
    let hist = Arc::new(Mutex::new(histogram()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (hist, dest) = (Arc::clone(&hist), dest.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = histogram();
            for _ in 0..per_worker {
                if start.elapsed() > TIME_CAP {
                    break;
                }
                local
                    .record(session(proxy, &dest).await.as_micros() as u64)
                    .unwrap();
            }
            hist.lock().await.add(local).unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    let h = hist.lock().await;
    report(
        &format!(
            "SOCKS sessions, pool {}, {workers} concurrent (CONNECT-to-reply)",
            if pool_on { "on" } else { "off" }
        ),
        h.len(),
        elapsed,
        &h,
    );
    if let Some(pool) = server.pool() {
        let s = pool.get_stats();
        println!(
            "  hits {} misses {} (hit rate {:.1} %)",
            s.hits,
            s.misses,
            100.0 * s.hits as f64 / (s.hits + s.misses).max(1) as f64
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stress test: run with --ignored --nocapture"]
async fn socks_sessions_200_concurrent_pool_off_then_on() {
    socks_storm(false, 200, 50).await;
    socks_storm(true, 200, 50).await;
}
