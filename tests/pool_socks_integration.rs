//! Full SOCKS5 flows through the server with the pool on.

mod common;

use common::socks::{self, assert_echo};
use common::{eventually, start_in_process, upstream};
use rustsocks::protocol::socks5::{Command, ReplyCode};
use rustsocks::protocol::TargetAddr;
use rustsocks::Running;
use tokio::io::AsyncWriteExt;

const POOL_ON: &str = "[server.pool]\nenabled = true\nconnect_timeout_ms = 300\n";

fn stats(server: &Running) -> rustsocks::connector::PoolStats {
    server.pool().expect("pool enabled").get_stats()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_connects_are_served_from_the_pool() {
    let echo = upstream::echo();
    let server = start_in_process(POOL_ON).await;
    for i in 0..20u8 {
        let mut s = socks::tunnel(server.socks_addr(), echo).await;
        assert_echo(&mut s, &[i; 100]).await;
        // Let the refill started by this checkout land before the next one.
        eventually("refill landed", || stats(&server).dialing == 0).await;
    }
    eventually("sessions ended", || stats(&server).in_use == 0).await;
    let s = stats(&server);
    assert_eq!(s.hits + s.misses, 20);
    // The first two are misses (the second starts the first refill); then all hits.
    assert_eq!((s.misses, s.hits), (2, 18), "{s:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_moved_no_bytes_returns_its_connection() {
    let up = upstream::holding();
    let server = start_in_process(POOL_ON).await;
    let (mut s, first) = socks::socks5(server.socks_addr(), Command::Connect, up.addr.into()).await;
    assert_eq!(first.code, ReplyCode::Succeeded);
    s.shutdown().await.unwrap();
    drop(s);
    eventually("connection returned", || stats(&server).returned == 1).await;
    let (again, second) =
        socks::socks5(server.socks_addr(), Command::Connect, up.addr.into()).await;
    // BND.ADDR is the upstream socket's local address: the same socket again.
    assert_eq!(second.bind, first.bind);
    let s = stats(&server);
    assert_eq!((s.hits, s.new_connections), (1, 1));
    drop(again);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_moved_bytes_never_returns_its_connection() {
    let echo = upstream::echo();
    let server = start_in_process(POOL_ON).await;
    let (mut s, first) = socks::socks5(server.socks_addr(), Command::Connect, echo.into()).await;
    assert_echo(&mut s, b"x").await;
    drop(s);
    eventually("session ended", || stats(&server).in_use == 0).await;
    let (again, second) = socks::socks5(server.socks_addr(), Command::Connect, echo.into()).await;
    assert_ne!(second.bind, first.bind);
    assert_eq!(stats(&server).returned, 0);
    drop(again);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_get_their_reply_codes_with_the_pool_on() {
    let server = start_in_process(POOL_ON).await;
    let code = |dest: TargetAddr| {
        let addr = server.socks_addr();
        async move { socks::socks5(addr, Command::Connect, dest).await.1.code }
    };
    assert_eq!(
        code(upstream::closed_port().into()).await,
        ReplyCode::ConnectionRefused
    );
    assert_eq!(
        code(TargetAddr::Domain("no-such-host.invalid".into(), 80)).await,
        ReplyCode::HostUnreachable
    );
    let hole = upstream::blackhole();
    assert_eq!(code(hole.addr.into()).await, ReplyCode::HostUnreachable);
    let s = stats(&server);
    assert_eq!(
        (s.misses, s.new_connections, s.total_idle, s.in_use),
        (3, 0, 0, 0)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_reflect_open_tunnels_and_destinations() {
    let echo = upstream::echo();
    let server = start_in_process(POOL_ON).await;
    let by_name = TargetAddr::Domain("localhost".into(), echo.port());
    let mut a = socks::tunnel(server.socks_addr(), by_name.clone()).await;
    let mut b = socks::tunnel(server.socks_addr(), echo).await;
    assert_echo(&mut a, b"a").await;
    assert_echo(&mut b, b"b").await;
    let s = stats(&server);
    assert_eq!(s.in_use, 2);
    let names: Vec<_> = s
        .per_destination
        .iter()
        .map(|d| d.destination.clone())
        .collect();
    assert_eq!(
        names,
        [echo.to_string(), format!("localhost:{}", echo.port())]
    );
    drop((a, b));
    eventually("in_use back to zero", || stats(&server).in_use == 0).await;
    let report = server.shutdown().await;
    assert_eq!(report.forced, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_pooled_connections() {
    let up = upstream::holding();
    let server = start_in_process(POOL_ON).await;
    let pool = server.pool().unwrap().clone();
    for _ in 0..2 {
        let (s, reply) = socks::socks5(server.socks_addr(), Command::Connect, up.addr.into()).await;
        assert_eq!(reply.code, ReplyCode::Succeeded);
        drop(s);
    }
    eventually("idle connections pooled", || {
        pool.get_stats().total_idle > 0
    })
    .await;
    server.shutdown().await;
    assert_eq!(pool.get_stats().total_idle, 0);
}
