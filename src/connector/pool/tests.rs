//! Unit tests of the pool's internals: liveness probing, the sweep, refill rules.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::connection_pool::Arrival;
use super::*;
use crate::config::PoolSection;
use crate::protocol::TargetAddr;

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

/// Connections made with blocking calls, so that a test on the paused clock
/// involves no tokio timer or I/O wait: (pool side, peer sides kept open).
fn loopback_conns(n: usize) -> (Vec<TcpStream>, Vec<std::net::TcpStream>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (0..n)
        .map(|_| {
            let c = std::net::TcpStream::connect(addr).unwrap();
            let (s, _) = l.accept().unwrap();
            c.set_nonblocking(true).unwrap();
            (TcpStream::from_std(c).unwrap(), s)
        })
        .unzip()
}

/// A destination that is only a key: nothing is dialled in these tests.
fn dest(i: usize) -> TargetAddr {
    TargetAddr::Ip(([10, 0, (i / 250) as u8, (i % 250) as u8], 80).into())
}

/// Gives `stream` to the pool as returned unused, idle since `since`.
fn give(pool: &ConnectionPool, d: &TargetAddr, stream: TcpStream, since: Instant) {
    pool.inner_for_tests()
        .put(d, stream, Arrival::Returned(since));
}

#[tokio::test(start_paused = true)]
async fn sweep_closes_the_expired_prefix_and_sleeps_until_the_next_expiry() {
    let idle_timeout = Duration::from_secs(60);
    let pool = ConnectionPool::new(PoolConfig {
        idle_timeout,
        ..PoolConfig::default()
    });
    let (conns, _peers) = loopback_conns(3);
    let t1 = Instant::now();
    let d = dest(0);
    for (conn, age) in conns.into_iter().zip([0, 30, 30]) {
        give(&pool, &d, conn, t1 + Duration::from_millis(age));
    }
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
    assert_eq!(sleep, Duration::from_millis(15));
}

/// The reaper on the paused clock: each connection is closed when it reaches
/// `idle_timeout`, whichever destination and shard it is in, and not before.
#[tokio::test(start_paused = true)]
async fn reaper_expires_each_connection_at_its_timeout() {
    let idle_timeout = Duration::from_secs(10);
    let pool = ConnectionPool::new(PoolConfig {
        idle_timeout,
        max_total_idle: 1_000,
        ..PoolConfig::default()
    });
    let (conns, _peers) = loopback_conns(40);
    let start = Instant::now();
    // Ages spread over 4 s, across 20 destinations, given in no particular order.
    for (i, conn) in conns.into_iter().enumerate() {
        let age = Duration::from_millis(((i * 7) % 40) as u64 * 100);
        give(&pool, &dest(i % 20), conn, start + age);
    }
    for step in 0..=40u64 {
        // Just after the connections idle since `step` × 100 ms reach the timeout.
        let at = start + idle_timeout + Duration::from_millis(step * 100 + 5);
        tokio::time::sleep_until(at).await;
        let s = pool.get_stats();
        let due = (step + 1).min(40) as usize;
        assert_eq!((s.expired as usize, s.total_idle), (due, 40 - due), "{s:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn eviction_closes_the_oldest_idle_connection_of_any_destination() {
    let limit = 30;
    let pool = ConnectionPool::new(PoolConfig {
        max_total_idle: limit,
        max_idle_per_dest: 8,
        idle_timeout: Duration::from_secs(3600),
        ..PoolConfig::default()
    });
    let (conns, _peers) = loopback_conns(60);
    let start = Instant::now();
    // Ages in a scrambled order over 40 destinations (many shards).
    let age = |i: usize| Duration::from_millis(((i * 37) % 60) as u64);
    let mut locals = Vec::new();
    for (i, conn) in conns.into_iter().enumerate() {
        locals.push((start + age(i), conn.local_addr().unwrap()));
        give(&pool, &dest(i % 40), conn, start + age(i));
    }
    let s = pool.get_stats();
    assert_eq!((s.total_idle, s.evicted), (limit, 30), "{s:?}");
    // Every eviction took the oldest idle connection at that moment; since the ages
    // arrived scrambled, what is left is not simply the 30 newest. Replay it.
    let mut model: Vec<(Instant, std::net::SocketAddr)> = Vec::new();
    for (since, local) in &locals {
        model.push((*since, *local));
        if model.len() > limit {
            let oldest = model.iter().enumerate().min_by_key(|(_, c)| c.0).unwrap().0;
            model.remove(oldest);
        }
    }
    let mut left: Vec<_> = model.iter().map(|c| c.1).collect();
    let mut taken = Vec::new();
    for i in 0..40 {
        while let Some(c) = pool.checkout_idle(&dest(i)) {
            taken.push(c.stream().local_addr().unwrap());
        }
    }
    left.sort();
    taken.sort();
    assert_eq!(taken, left);
    assert_eq!(pool.get_stats().total_idle, 0);
}

/// A sweep takes no live connection out of its shard: checkouts running alongside
/// sweeps always find one, and nothing is handed out twice or lost from the counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeps_hide_no_connection_from_checkouts() {
    let pool = ConnectionPool::new(PoolConfig {
        max_total_idle: 1_000,
        max_idle_per_dest: 4,
        idle_timeout: Duration::from_secs(3600),
        ..PoolConfig::default()
    });
    let (conns, _peers) = loopback_conns(200);
    let now = Instant::now();
    for (i, conn) in conns.into_iter().enumerate() {
        give(&pool, &dest(i % 50), conn, now);
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut missed = 0;
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                pool.inner_for_tests().sweep(Instant::now());
            }
        });
        // Counted, not asserted here: a panic would leave the sweeping thread running
        // and the scope waiting for it.
        for round in 0..20_000 {
            match pool.checkout_idle(&dest(round % 50)) {
                Some(conn) => pool.recycle(conn),
                None => missed += 1,
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(
        missed, 0,
        "checkouts found no idle connection during sweeps"
    );
    let s = pool.get_stats();
    assert_eq!((s.total_idle, s.stale_on_checkout, s.expired), (200, 0, 0));
}

/// Checkouts, returns past the global limit (evictions) and expiry sweeps on two
/// threads: no connection is held by two checkouts at once, and every connection is
/// idle, held, evicted or expired, in the counters as in fact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_eviction_and_expiry_keep_every_connection_accounted_for() {
    let limit = 64;
    let idle_timeout = Duration::from_secs(1);
    let pool = ConnectionPool::new(PoolConfig {
        max_total_idle: limit,
        max_idle_per_dest: 8,
        idle_timeout,
        ..PoolConfig::default()
    });
    let total = 400;
    let (conns, _peers) = loopback_conns(total);
    let conns = std::sync::Mutex::new(conns);
    let held = std::sync::Mutex::new(Vec::new());
    let base = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2 {
            let (pool, conns, held) = (&pool, &conns, &held);
            s.spawn(move || {
                for i in 0.. {
                    let Some(conn) = conns.lock().unwrap().pop() else {
                        break;
                    };
                    // Ages interleave across threads and destinations.
                    let since = base + Duration::from_micros((i * 2 + t) as u64);
                    give(pool, &dest(i % 16), conn, since);
                    if i % 3 == 0 {
                        if let Some(c) = pool.checkout_idle(&dest((i + 5) % 16)) {
                            held.lock().unwrap().push(c);
                        }
                    }
                    if i % 7 == 0 {
                        // A sweep as if `idle_timeout` had passed since the
                        // connections given so far (older ones expire).
                        let now = base + idle_timeout + Duration::from_micros(i as u64);
                        pool.inner_for_tests().expire(now);
                    }
                }
            });
        }
    });
    let held = held.into_inner().unwrap();
    let mut locals: Vec<_> = held
        .iter()
        .map(|c| c.stream().local_addr().unwrap())
        .collect();
    locals.sort();
    locals.dedup();
    assert_eq!(
        locals.len(),
        held.len(),
        "a connection was handed out twice"
    );
    let s = pool.get_stats();
    assert!(s.evicted > 0 && s.expired > 0, "{s:?}");
    let per_dest: usize = s.per_destination.iter().map(|r| r.idle).sum();
    assert_eq!(s.total_idle, per_dest, "{s:?}");
    assert!(s.total_idle <= limit, "{s:?}");
    assert_eq!(
        s.total_idle + held.len() + (s.evicted + s.expired + s.dropped_full) as usize,
        total,
        "{s:?}"
    );
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
