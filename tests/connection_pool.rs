//! The pool's basic contract: reuse, idle timeout, disabled mode.

mod common;

use std::time::Duration;

use common::{eventually, start_in_process, upstream};
use rustsocks::config::PoolSection;
use rustsocks::connector::{ConnectionPool, Connector, PoolConfig};
use rustsocks::telemetry::Telemetry;

#[tokio::test]
async fn returned_unused_connection_is_reused() {
    let up = upstream::holding();
    let pool = ConnectionPool::new(PoolConfig::default());
    let port = up.addr.port();
    let first = pool.get_or_connect("127.0.0.1", port).await.unwrap();
    assert!(!first.from_pool());
    let local = first.stream().local_addr().unwrap();
    pool.recycle(first);
    let second = pool.get_or_connect("127.0.0.1", port).await.unwrap();
    assert!(second.from_pool());
    assert_eq!(
        second.stream().local_addr().unwrap(),
        local,
        "not the same connection"
    );
    let stats = pool.get_stats();
    assert_eq!(
        (
            stats.reused_connections,
            stats.new_connections,
            stats.returned
        ),
        (1, 1, 1)
    );
    assert_eq!(stats.reuse_rate(), 0.5);
}

#[tokio::test]
async fn idle_connection_past_its_timeout_is_not_handed_out() {
    let up = upstream::holding();
    let pool = ConnectionPool::new(PoolConfig {
        idle_timeout: Duration::from_millis(200),
        ..PoolConfig::default()
    });
    let first = pool
        .get_or_connect("127.0.0.1", up.addr.port())
        .await
        .unwrap();
    let local = first.stream().local_addr().unwrap();
    pool.recycle(first);
    // Pool time on the paused clock; the dials around it are real.
    tokio::time::pause();
    tokio::time::advance(Duration::from_millis(300)).await;
    tokio::time::resume();
    let second = pool
        .get_or_connect("127.0.0.1", up.addr.port())
        .await
        .unwrap();
    assert!(!second.from_pool());
    assert_ne!(second.stream().local_addr().unwrap(), local);
    assert_eq!(pool.get_stats().expired, 1);
}

/// A connection taken and given back unused has still been quiet since its dial:
/// its age goes on, or checkouts that send nothing could keep it alive forever.
#[tokio::test]
async fn a_returned_connection_keeps_its_age() {
    let up = upstream::holding();
    let pool = ConnectionPool::new(PoolConfig {
        idle_timeout: Duration::from_millis(300),
        ..PoolConfig::default()
    });
    let port = up.addr.port();
    let first = pool.get_or_connect("127.0.0.1", port).await.unwrap();
    tokio::time::pause();
    tokio::time::advance(Duration::from_millis(200)).await;
    pool.recycle(first);
    tokio::time::advance(Duration::from_millis(150)).await;
    tokio::time::resume();
    // 350 ms since the dial: past the timeout, though returned 150 ms ago.
    let second = pool.get_or_connect("127.0.0.1", port).await.unwrap();
    assert!(!second.from_pool(), "an expired connection was handed out");
    assert_eq!(pool.get_stats().expired, 1);
}

#[tokio::test]
async fn disabled_pool_dials_every_time_and_keeps_nothing() {
    let up = upstream::holding();
    let connector = Connector::new(
        &PoolSection::default(),
        None,
        std::sync::Arc::new(rustsocks::access::OwnAddresses::default()),
        rustsocks::connector::Resolver::default(),
        &rustsocks::metrics::Phases::new(),
        &Telemetry::start(&rustsocks::config::TelemetryConfig::default()),
    );
    assert!(connector.pool().is_none());
    for i in 1..=3 {
        let conn = connector
            .connect(&up.addr.into(), &rustsocks::connector::NoCheck)
            .await
            .unwrap();
        assert!(!conn.from_pool() && !conn.is_recyclable());
        connector.recycle(conn); // without a pool this just closes the connection
        eventually("upstream saw a new connection", || up.accepted() == i).await;
    }
    let server = start_in_process("").await;
    assert!(server.pool().is_none());
    let mut s = common::socks::tunnel(server.socks_addr(), upstream::echo()).await;
    common::socks::assert_echo(&mut s, b"no pool").await;
}
