//! Pool hit path: take the newest idle connection (shard lock, expiry check,
//! non-consuming liveness peek, lease) and give it back (shard lock, push), against
//! a plain `Mutex<HashMap<_, VecDeque<_>>>` doing the same work under one lock.
//!
//! The last two cases measure eviction and a reaper pass with 10,000 idle connections
//! over 1,000 destinations.
//!
//! Run: `cargo bench --bench pool_checkout`. Threads 1 and 2 (this machine has 2
//! cores); "same destination" puts every thread on one shard, "own destination"
//! gives each thread its own.

use std::collections::{HashMap, VecDeque};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use divan::Bencher;
use rustsocks::connector::{ConnectionPool, PoolConfig};
use rustsocks::protocol::TargetAddr;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

/// Destinations, idle connections per destination.
const DESTS: usize = 4;
const PER_DEST: usize = 8;

fn main() {
    divan::main();
}

/// A one-thread runtime and a pool inside it that holds `per_dest` idle
/// connections for each of `dests` destinations, for an hour.
fn runtime_and_pool(per_dest: usize, dests: usize) -> (Runtime, ConnectionPool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pool = {
        let _g = rt.enter();
        ConnectionPool::new(PoolConfig {
            max_idle_per_dest: per_dest,
            max_total_idle: dests * per_dest,
            idle_timeout: Duration::from_secs(3600),
            ..PoolConfig::default()
        })
    };
    (rt, pool)
}

struct Fixture {
    _rt: Runtime,
    _listeners: Vec<std::net::TcpListener>,
    dests: Vec<TargetAddr>,
    pool: ConnectionPool,
    baseline: Baseline,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (rt, pool) = runtime_and_pool(PER_DEST, DESTS);
        let _g = rt.enter();
        let baseline = Baseline::default();
        let mut listeners = Vec::new();
        let mut dests = Vec::new();
        for _ in 0..DESTS {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr: SocketAddr = l.local_addr().unwrap();
            let dest = TargetAddr::from(addr);
            rt.block_on(async {
                // Fill both with PER_DEST connections each, without refills: a
                // connection is handed back before the next is dialled.
                let mut held = Vec::new();
                for _ in 0..PER_DEST {
                    held.push(pool.checkout(&dest).await.unwrap());
                    baseline.put(&dest, TcpStream::connect(addr).await.unwrap());
                }
                while pool.get_stats().dialing > 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                for c in held {
                    pool.recycle(c);
                }
            });
            listeners.push(l);
            dests.push(dest);
        }
        Fixture {
            _rt: rt,
            _listeners: listeners,
            dests,
            pool,
            baseline,
        }
    })
}

#[derive(Default)]
struct Baseline {
    map: Mutex<HashMap<TargetAddr, VecDeque<(TcpStream, Instant)>>>,
}

impl Baseline {
    /// Pops and validates under the one lock, as a straightforward pool does.
    fn take(&self, dest: &TargetAddr) -> Option<TcpStream> {
        let mut map = self.map.lock().unwrap();
        let queue = map.get_mut(dest)?;
        while let Some((s, since)) = queue.pop_back() {
            let mut buf = [MaybeUninit::<u8>::uninit(); 1];
            let open = match socket2::SockRef::from(&s).peek(&mut buf) {
                Ok(n) => n > 0,
                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            };
            if open && since.elapsed() < Duration::from_secs(3600) {
                return Some(s);
            }
        }
        None
    }

    fn put(&self, dest: &TargetAddr, s: TcpStream) {
        let mut map = self.map.lock().unwrap();
        map.entry(dest.clone())
            .or_default()
            .push_back((s, Instant::now()));
    }
}

fn dest_for_thread(f: &Fixture, own: bool) -> &TargetAddr {
    if !own {
        return &f.dests[0];
    }
    // A stable per-thread index.
    thread_local!(static IDX: usize = {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(1);
        N.fetch_add(1, Ordering::Relaxed)
    });
    &f.dests[IDX.with(|i| *i) % DESTS]
}

#[divan::bench(threads = [1, 2], args = [false, true])]
fn sharded_pool(bencher: Bencher, own_destination: bool) {
    let f = fixture();
    bencher.bench(|| {
        let dest = dest_for_thread(f, own_destination);
        let conn = f.pool.checkout_idle(dest).expect("an idle connection");
        f.pool.recycle(conn);
    });
}

#[divan::bench(threads = [1, 2], args = [false, true])]
fn mutex_hashmap_baseline(bencher: Bencher, own_destination: bool) {
    let f = fixture();
    bencher.bench(|| {
        let dest = dest_for_thread(f, own_destination);
        let s = f.baseline.take(dest).expect("an idle connection");
        f.baseline.put(dest, s);
    });
}

/// A pool at its global limit: `MANY_PER_DEST` idle connections to each of
/// `MANY_DESTS` destinations (10,000 idle over 1,000 destinations).
const MANY_DESTS: usize = 1_000;
const MANY_PER_DEST: usize = 10;

struct Crowd {
    rt: Runtime,
    _listeners: Vec<std::net::TcpListener>,
    pool: ConnectionPool,
    /// Destinations with nothing idle: a checkout there is a miss and a new dial,
    /// whose return pushes the pool past `max_total_idle`.
    spare_dests: Vec<TargetAddr>,
    next_spare: std::sync::atomic::AtomicUsize,
}

fn listener() -> (std::net::TcpListener, TargetAddr) {
    // Never accepted: the few connections per destination wait in the backlog.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dest = TargetAddr::from(l.local_addr().unwrap());
    (l, dest)
}

fn crowd() -> &'static Crowd {
    static F: OnceLock<Crowd> = OnceLock::new();
    F.get_or_init(|| {
        let (rt, pool) = runtime_and_pool(MANY_PER_DEST, MANY_DESTS);
        let _g = rt.enter();
        let mut listeners = Vec::new();
        for _ in 0..MANY_DESTS {
            let (l, dest) = listener();
            rt.block_on(async {
                let mut held = Vec::new();
                for _ in 0..MANY_PER_DEST {
                    held.push(pool.checkout(&dest).await.unwrap());
                }
                while pool.get_stats().dialing > 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                for c in held {
                    pool.recycle(c);
                }
            });
            listeners.push(l);
        }
        assert_eq!(pool.get_stats().total_idle, MANY_DESTS * MANY_PER_DEST);
        let spare_dests = (0..MANY_DESTS)
            .map(|_| {
                let (l, dest) = listener();
                listeners.push(l);
                dest
            })
            .collect();
        Crowd {
            rt,
            _listeners: listeners,
            pool,
            spare_dests,
            next_spare: Default::default(),
        }
    })
}

/// Giving back one connection to a pool at `max_total_idle`: the pool evicts its
/// least recently used idle connection. The connection is dialled outside the timing.
/// 1,000 iterations, so that no spare destination reaches `max_idle_per_dest`.
#[divan::bench(sample_count = 100, sample_size = 10)]
fn evict_at_limit_10k_idle_1k_dests(bencher: Bencher) {
    let c = crowd();
    bencher
        .with_inputs(|| {
            let i = c
                .next_spare
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dest = &c.spare_dests[i % c.spare_dests.len()];
            c.rt.block_on(c.pool.checkout(dest)).unwrap()
        })
        .bench_local_values(|conn| c.pool.recycle(conn));
    let s = c.pool.get_stats();
    assert!(
        s.evicted > 0 && s.total_idle == MANY_DESTS * MANY_PER_DEST,
        "{s:?}"
    );
}

/// One reaper pass over 10,000 idle connections of which none is due to expire: the
/// common case, paid every time the reaper wakes.
#[divan::bench(sample_count = 100, sample_size = 10)]
fn sweep_10k_idle_1k_dests(bencher: Bencher) {
    let c = crowd();
    bencher.bench_local(|| c.pool.sweep_now());
}
