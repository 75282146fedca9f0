//! Unit tests of the pool's internals: liveness probing, the sweep, refill rules.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::connection_pool::Arrival;
use super::*;
use crate::config::PoolSection;

/// A connected pair over loopback: (client side, server side).
async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (s, _) = l.accept().await.unwrap();
    (c, s)
}

/// Lets the kernel deliver a FIN/RST/data sent on loopback.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

#[tokio::test]
async fn liveness_probe_reads_state_without_consuming() {
    let (c, mut s) = pair().await;
    assert!(liveness::is_open(&c), "quiet connection");
    s.write_all(b"220 banner").await.unwrap();
    settle().await;
    assert!(liveness::is_open(&c), "connection with a banner waiting");
    let mut buf = [0u8; 10];
    assert_eq!(
        c.try_read(&mut buf).unwrap(),
        10,
        "the banner is still there"
    );
    assert_eq!(&buf, b"220 banner");
    drop(s);
    settle().await;
    assert!(!liveness::is_open(&c), "peer sent FIN");

    let (c, s) = pair().await;
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
    settle().await;
    assert!(!liveness::is_open(&c), "peer sent RST");
}

#[test]
fn config_follows_the_section() {
    let section = PoolSection {
        enabled: true,
        max_idle_per_dest: 3,
        max_total_idle: 7,
        idle_timeout_secs: 11,
        connect_timeout_ms: 1234,
    };
    let c = PoolConfig::from(&section);
    assert_eq!((c.max_idle_per_dest, c.max_total_idle), (3, 7));
    assert_eq!(c.idle_timeout, Duration::from_secs(11));
    assert_eq!(c.connect_timeout, Duration::from_millis(1234));
    assert_eq!(PoolConfig::default().max_idle_per_dest, 4);
}

#[tokio::test]
async fn only_repeated_demand_grows_the_pool_and_only_to_its_limit() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dest = l.local_addr().unwrap().into();
    let pool = ConnectionPool::new(PoolConfig {
        max_idle_per_dest: 1,
        ..PoolConfig::default()
    });
    let mut held = vec![pool.checkout(&dest).await.unwrap()];
    assert_eq!(
        pool.get_stats().dialing,
        0,
        "a first request must not start a refill"
    );
    held.push(pool.checkout(&dest).await.unwrap());
    let s = pool.get_stats();
    assert_eq!(
        s.dialing + s.refreshed as usize,
        1,
        "a repeated miss starts one refill"
    );
    while pool.get_stats().dialing > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for _ in 0..5 {
        held.push(pool.checkout(&dest).await.unwrap());
        let s = pool.get_stats();
        assert!(
            s.dialing + s.total_idle <= 1,
            "grew past max_idle_per_dest: {s:?}"
        );
    }
}

#[tokio::test]
async fn sweep_closes_the_expired_prefix_and_sleeps_until_the_next_expiry() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dest: crate::protocol::TargetAddr = l.local_addr().unwrap().into();
    let idle_timeout = Duration::from_secs(60);
    let pool = ConnectionPool::new(PoolConfig {
        idle_timeout,
        ..PoolConfig::default()
    });
    // Connections given back unused age from their dial: `older` is 30 ms older
    // than `newer` and than the refill the second (repeated) miss starts.
    let older = pool.checkout(&dest).await.unwrap();
    let t1 = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let newer = pool.checkout(&dest).await.unwrap();
    while pool.get_stats().dialing > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    pool.recycle(older);
    pool.recycle(newer);
    let inner = pool.inner_for_tests();
    assert_eq!(pool.get_stats().total_idle, 3);
    // Just before anything expires: nothing goes.
    let sleep = inner.sweep(t1 + idle_timeout - Duration::from_secs(5));
    assert_eq!(pool.get_stats().total_idle, 3);
    assert!(
        sleep <= Duration::from_secs(5),
        "slept past the first expiry: {sleep:?}"
    );
    // Past the older one's expiry, before the others'.
    let sleep = inner.sweep(t1 + idle_timeout + Duration::from_millis(15));
    let s = pool.get_stats();
    assert_eq!((s.expired, s.total_idle), (1, 2), "{s:?}");
    // The reaper wakes for the next expiry, not a quarter-timeout later.
    assert!(sleep < Duration::from_secs(1), "{sleep:?}");
}

#[tokio::test]
async fn nothing_is_pooled_after_shutdown() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dest: crate::protocol::TargetAddr = l.local_addr().unwrap().into();
    let pool = ConnectionPool::new(PoolConfig::default());
    let conn = pool.checkout(&dest).await.unwrap();
    pool.shutdown().await;
    let (stream, _) = pair().await;
    pool.inner_for_tests().put(&dest, stream, Arrival::Refill);
    pool.recycle(conn);
    let s = pool.get_stats();
    assert_eq!((s.total_idle, s.dropped_full), (0, 0));
}
