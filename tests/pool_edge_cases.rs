//! Pool behaviour at its edges: dead and closing upstreams, limits, eviction order,
//! the reaper, concurrency, and the clean-only rule.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::socks::{self, LIMIT};
use common::{eventually, start_in_process, upstream};
use rustsocks::connector::{ConnectionPool, PoolConfig, UpstreamConn};
use rustsocks::telemetry::{Category, Event, Severity, Telemetry};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn pool_with(config: PoolConfig) -> (ConnectionPool, Telemetry) {
    let telemetry = Telemetry::start(&rustsocks::config::TelemetryConfig::default());
    (
        ConnectionPool::with_telemetry(config, Some(telemetry.clone())),
        telemetry,
    )
}

async fn get(pool: &ConnectionPool, addr: SocketAddr) -> UpstreamConn {
    pool.checkout(&addr.into()).await.expect("checkout")
}

fn local(c: &UpstreamConn) -> SocketAddr {
    c.stream().local_addr().unwrap()
}

async fn wait_event(t: &Telemetry, pred: impl Fn(&Event) -> bool) -> Event {
    let mut found = None;
    eventually("telemetry event", || {
        found = t.recent(64).into_iter().find(|e| pred(e));
        found.is_some()
    })
    .await;
    found.unwrap()
}

#[tokio::test]
async fn closed_server_gets_refused_and_nothing_is_pooled() {
    let (pool, _) = pool_with(PoolConfig::default());
    let err = pool
        .checkout(&upstream::closed_port().into())
        .await
        .err()
        .expect("refused");
    let rustsocks::connector::ConnectError::Connect { source, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
    let stats = pool.get_stats();
    assert_eq!(
        (
            stats.misses,
            stats.new_connections,
            stats.total_idle,
            stats.in_use
        ),
        (1, 0, 0, 0)
    );
}

#[tokio::test]
async fn connections_closed_by_the_peer_are_discarded_at_checkout() {
    for reset in [false, true] {
        let up = upstream::holding();
        let (pool, _) = pool_with(PoolConfig::default());
        let a = get(&pool, up.addr).await;
        let b = get(&pool, up.addr).await;
        eventually("growth refill landed", || pool.get_stats().dialing == 0).await;
        let idle_before = pool.get_stats().total_idle;
        pool.recycle(a);
        pool.recycle(b);
        eventually("upstream accepted all", || up.accepted() == 2 + idle_before).await;
        if reset {
            up.reset_all()
        } else {
            up.close_all()
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let fresh = get(&pool, up.addr).await;
        assert!(
            !fresh.from_pool(),
            "a closed connection was handed out (reset = {reset})"
        );
        let stats = pool.get_stats();
        assert_eq!(
            stats.stale_on_checkout as usize,
            2 + idle_before,
            "reset = {reset}"
        );
        // What is idle now is at most the growth dial this miss started.
        eventually("dials landed", || pool.get_stats().dialing == 0).await;
        assert!(pool.get_stats().total_idle <= 1, "reset = {reset}");
    }
}

#[tokio::test]
async fn reaper_removes_expired_connections_without_a_checkout() {
    let up = upstream::holding();
    let (pool, _) = pool_with(PoolConfig {
        idle_timeout: Duration::from_millis(300),
        ..PoolConfig::default()
    });
    let conns = [get(&pool, up.addr).await, get(&pool, up.addr).await];
    for c in conns {
        pool.recycle(c);
    }
    assert!(pool.get_stats().total_idle >= 2);
    // From here on the reaper runs on the paused clock (`eventually` sleeps on it).
    tokio::time::pause();
    eventually("reaper emptied the pool", || {
        pool.get_stats().total_idle == 0
    })
    .await;
    assert!(pool.get_stats().expired >= 2);
}

/// The reaper makes no system call per idle connection: a connection the peer
/// closed stays idle (never handed out: checkout validates) until it expires.
#[tokio::test]
async fn peer_closed_idle_connections_wait_for_expiry_not_for_a_client() {
    let up = upstream::holding();
    let (pool, _) = pool_with(PoolConfig {
        idle_timeout: Duration::from_secs(2),
        ..PoolConfig::default()
    });
    let c = get(&pool, up.addr).await;
    pool.recycle(c);
    eventually("upstream accepted", || up.accepted() == 1).await;
    up.close_all();
    tokio::time::sleep(Duration::from_millis(50)).await; // the FIN is in
    tokio::time::pause();
    // 1.5 s of the 2 s: the real time since the dial stays well below the rest.
    tokio::time::advance(Duration::from_millis(1_500)).await;
    assert_eq!(pool.get_stats().total_idle, 1, "closed before its timeout");
    eventually("reaper expired the closed connection", || {
        pool.get_stats().total_idle == 0
    })
    .await;
    let stats = pool.get_stats();
    assert_eq!((stats.stale_on_checkout, stats.expired), (0, 1));
}

#[tokio::test]
async fn per_destination_limit_drops_extra_connections_with_a_warning() {
    let up = upstream::holding();
    let (pool, telemetry) = pool_with(PoolConfig {
        max_idle_per_dest: 2,
        ..PoolConfig::default()
    });
    let conns = [
        get(&pool, up.addr).await,
        get(&pool, up.addr).await,
        get(&pool, up.addr).await,
    ];
    eventually("refills landed", || pool.get_stats().dialing == 0).await;
    for c in conns {
        pool.recycle(c);
    }
    let stats = pool.get_stats();
    assert_eq!(stats.total_idle, 2);
    assert_eq!(stats.per_destination[0].idle, 2);
    assert!(stats.dropped_full >= 1);
    let event = wait_event(&telemetry, |e| e.message.contains("max_idle_per_dest")).await;
    assert_eq!(
        (event.severity, event.category),
        (Severity::Warning, Category::ConnectionPool)
    );
    assert_eq!(event.details["destination"], up.addr.to_string());
    assert_eq!(event.details["limit"], 2);
}

#[tokio::test]
async fn global_limit_evicts_the_least_recently_used_idle_connection() {
    let (a, b, c) = (
        upstream::holding(),
        upstream::holding(),
        upstream::holding(),
    );
    let (pool, telemetry) = pool_with(PoolConfig {
        max_idle_per_dest: 2,
        max_total_idle: 2,
        ..PoolConfig::default()
    });
    // One checkout each: first demand for a destination starts no refill.
    let conns = [
        get(&pool, a.addr).await,
        get(&pool, b.addr).await,
        get(&pool, c.addr).await,
    ];
    // Returned in dial order: a returned connection ages from its dial.
    for conn in conns {
        pool.recycle(conn);
    }
    let stats = pool.get_stats();
    assert_eq!((stats.total_idle, stats.evicted), (2, 1));
    let idle = |addr: SocketAddr| {
        stats
            .per_destination
            .iter()
            .find(|d| d.destination == addr.to_string())
            .unwrap()
            .idle
    };
    assert_eq!((idle(a.addr), idle(b.addr), idle(c.addr)), (0, 1, 1));
    let event = wait_event(&telemetry, |e| e.message.contains("max_total_idle")).await;
    assert_eq!(event.severity, Severity::Warning);
    assert_eq!(event.details["destination"], a.addr.to_string());
    assert_eq!(event.details["limit"], 2);
}

/// Newest first, by how long a connection has been quiet: a connection given back
/// unused counts from its dial, so the oldest dial comes out last.
#[tokio::test]
async fn idle_connections_are_handed_out_newest_first() {
    let up = upstream::holding();
    let (pool, _) = pool_with(PoolConfig {
        max_idle_per_dest: 8,
        ..PoolConfig::default()
    });
    let x = get(&pool, up.addr).await;
    tokio::time::pause();
    tokio::time::advance(Duration::from_millis(20)).await;
    tokio::time::resume();
    let y = get(&pool, up.addr).await; // a repeated miss: a spare z is dialled too
    eventually("refills landed", || pool.get_stats().dialing == 0).await;
    let (lx, ly) = (local(&x), local(&y));
    pool.recycle(y);
    pool.recycle(x); // returned last, but dialled first
                     // `checkout_idle` starts no replacement, so only these three are in play.
    let dest = up.addr.into();
    let order: Vec<_> = (0..3)
        .map(|_| local(&pool.checkout_idle(&dest).expect("an idle connection")))
        .collect();
    assert_eq!(
        order[2], lx,
        "the oldest dial must come out last: {order:?}"
    );
    assert!(order[..2].contains(&ly), "{order:?}");
}

#[tokio::test]
async fn stats_count_every_step() {
    let up = upstream::holding();
    let (pool, _) = pool_with(PoolConfig::default());
    let a = get(&pool, up.addr).await; // miss, new dial, no refill (first demand)
    assert_eq!(pool.get_stats().in_use, 1);
    pool.recycle(a); // returned
    let b = get(&pool, up.addr).await; // hit; a replacement is dialled
    assert!(b.from_pool());
    eventually("replacement landed", || pool.get_stats().refreshed == 1).await;
    let s = pool.get_stats();
    assert_eq!(
        (
            s.hits,
            s.misses,
            s.new_connections,
            s.returned,
            s.in_use,
            s.total_idle,
            s.destinations
        ),
        (1, 1, 1, 1, 1, 1, 1)
    );
    let d = &s.per_destination[0];
    assert_eq!(
        (
            d.hits,
            d.misses,
            d.created,
            d.refreshed,
            d.returned,
            d.in_use,
            d.idle
        ),
        (1, 1, 2, 1, 1, 1, 1)
    );
    drop(b); // used connections close; they never come back
    let s = pool.get_stats();
    assert_eq!((s.in_use, s.total_idle), (0, 1));
    assert_eq!(up.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checkouts_keep_counts_consistent() {
    let ups: Vec<_> = (0..4).map(|_| upstream::holding()).collect();
    let (pool, _) = pool_with(PoolConfig {
        max_idle_per_dest: 4,
        max_total_idle: 10,
        ..PoolConfig::default()
    });
    let mut tasks = Vec::new();
    for t in 0..50 {
        let pool = pool.clone();
        let addr = ups[t % 4].addr;
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let c = pool.checkout(&addr.into()).await.expect("checkout");
                if i % 2 == 0 {
                    pool.recycle(c)
                } else {
                    drop(c)
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eventually("refills settled", || pool.get_stats().dialing == 0).await;
    let s = pool.get_stats();
    assert_eq!(s.hits + s.misses, 1000);
    assert_eq!(s.in_use, 0);
    assert!(s.total_idle <= 10, "{s:?}");
    assert_eq!(
        s.total_idle,
        s.per_destination.iter().map(|d| d.idle).sum::<usize>()
    );
    assert!(s.per_destination.iter().all(|d| d.idle <= 4), "{s:?}");
    let dialled: u64 = s.per_destination.iter().map(|d| d.created).sum();
    assert_eq!(dialled, s.new_connections + s.refreshed);
    // Every dial the pool counted reached the upstream (accepts may lag a little).
    eventually("upstreams accepted every dial", || {
        ups.iter().map(|u| u.accepted()).sum::<usize>() == dialled as usize
    })
    .await;
}

#[tokio::test]
async fn banner_sent_before_checkout_reaches_the_client() {
    let tagger = upstream::tagging();
    let (pool, _) = pool_with(PoolConfig::default());
    drop(get(&pool, tagger).await); // conn-1: first demand
    drop(get(&pool, tagger).await); // conn-2: miss again, starts a refill (conn-3)
    eventually("refill landed", || pool.get_stats().total_idle == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await; // the banner is now waiting in the socket
    let pooled = get(&pool, tagger).await;
    assert!(pooled.from_pool());
    let mut reader = BufReader::new(pooled.into_stream());
    let mut line = String::new();
    tokio::time::timeout(LIMIT, reader.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line, "conn-3\n");
}

/// A server that greets and then closes (as MySQL, SMTP or FTP servers do with an
/// idle connection): the greeting is still unread when its FIN arrives, and the pool
/// must still see the connection as closed.
#[tokio::test]
async fn a_connection_closed_after_its_banner_is_not_handed_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(b"220 hello\r\n421 idle, closing\r\n").await;
            drop(s);
        }
    });
    let (pool, _) = pool_with(PoolConfig::default());
    drop(get(&pool, addr).await);
    drop(get(&pool, addr).await); // a repeated miss: a spare is dialled
    eventually("spare landed", || pool.get_stats().total_idle == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await; // greeting and FIN are in
    let conn = get(&pool, addr).await;
    assert!(!conn.from_pool(), "a closed connection was handed out");
    assert_eq!(pool.get_stats().stale_on_checkout, 1);
}

/// The upstream tags every connection with its number as its first bytes. Across
/// many sessions through the proxy, some sending data and some closing at once, no
/// two clients may ever see the same tag: no connection serves two clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_connection_ever_serves_two_clients() {
    let tagger = upstream::tagging();
    let server = start_in_process("[server.pool]\nenabled = true\nmax_idle_per_dest = 8\n").await;
    let mut seen = HashSet::new();
    for i in 0..60 {
        let mut s = socks::tunnel(server.socks_addr(), tagger).await;
        let mut reader = BufReader::new(&mut s);
        let mut tag = String::new();
        tokio::time::timeout(LIMIT, reader.read_line(&mut tag))
            .await
            .unwrap()
            .unwrap();
        assert!(tag.starts_with("conn-"), "{tag:?}");
        assert!(
            seen.insert(tag.clone()),
            "session {i} got {tag:?} a second time"
        );
        if i % 3 == 0 {
            s.write_all(b"some client bytes").await.unwrap();
        }
    }
    let stats = server.pool().unwrap().get_stats();
    assert!(stats.hits > 0, "the pool was never used: {stats:?}");
    server.shutdown().await;
}
