//! A network namespace behind `rustsocks-bench wire` with an echo target in it, for
//! the fault-injection tests: this side of the wire is 10.204.0.1, the namespace
//! 10.204.0.2. Its own names and addresses (not those of scripts/netns-latency.sh),
//! so it never meets a latency setup. Only one can exist on a machine at a time: a
//! lock file makes test runs (also from other checkouts) take turns. Needs root.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NS: &str = "rsfault";
const HERE: &str = "rsf0";
const THERE: &str = "rsf1";
/// The echo of a `rustsocks-bench target` inside the namespace.
pub const ECHO: &str = "10.204.0.2:7000";

/// Torn down when dropped, also when a test fails.
pub struct FaultNet {
    /// Held (flock) while the namespace exists; released after the tear-down.
    _turn: File,
    wire: Child,
    target: Option<Child>,
    /// What the wire printed (one line per flow it cut).
    log: Arc<Mutex<Vec<String>>>,
}

impl FaultNet {
    /// Sets up the namespace with a wire of round trip `rtt_ms` and `faults` (the
    /// wire's options: `--loss`, `--reset-rate`, ...). None, after saying so, when
    /// not root.
    pub fn up(rtt_ms: u64, faults: &[&str]) -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: the fault wire needs root (a namespace and TUN devices)");
            return None;
        }
        let turn = take_turn();
        tear_down(); // left by a run that was killed
        ip(&["netns", "add", NS], false);
        let rtt = rtt_ms.to_string();
        let mut wire = Command::new(bench())
            .args(["wire", "--a", HERE, "--b", THERE, "--rtt-ms", &rtt])
            .args(faults)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the wire");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let stderr = wire.stderr.take().expect("stderr piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        // The guard exists before the rest of the set-up, so a failure tears down too.
        let mut this = Self {
            _turn: turn,
            wire,
            target: None,
            log,
        };
        this.wait("the wire's devices", || {
            Command::new("ip")
                .args(["link", "show", THERE])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        ip(&["link", "set", THERE, "netns", NS], false);
        ip(&["addr", "add", "10.204.0.1/30", "dev", HERE], false);
        ip(&["link", "set", HERE, "up"], false);
        ip(&["-n", NS, "link", "set", "lo", "up"], false);
        ip(
            &["-n", NS, "addr", "add", "10.204.0.2/30", "dev", THERE],
            false,
        );
        ip(&["-n", NS, "link", "set", THERE, "up"], false);
        let target = Command::new("ip")
            .args(["netns", "exec", NS, bench(), "target", "--bind", ECHO])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the target");
        this.target = Some(target);
        let echo: SocketAddr = ECHO.parse().unwrap();
        this.wait("the echo target across the wire", || {
            std::net::TcpStream::connect_timeout(&echo, Duration::from_secs(1)).is_ok()
        });
        Some(this)
    }

    fn wait(&self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready() {
            assert!(
                Instant::now() < deadline,
                "{what} did not come up; wire: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Flows the wire has cut so far.
    pub fn cuts(&self) -> usize {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|l| l.starts_with("wire: cut flow"))
            .count()
    }

    /// TCP segments the target retransmitted: nonzero once the wire's loss has hit
    /// the target's data (the namespace's counters count only this test's flows).
    pub fn target_retransmissions(&self) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", NS, "cat", "/proc/net/snmp"])
            .output()
            .expect("reading the namespace's TCP counters");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
        let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
        let at = names.split_whitespace().position(|n| n == "RetransSegs");
        let value = values.split_whitespace().nth(at.expect("RetransSegs"));
        value.unwrap().parse().unwrap()
    }
}

impl Drop for FaultNet {
    fn drop(&mut self) {
        for child in self.target.iter_mut().chain([&mut self.wire]) {
            let _ = child.kill();
            let _ = child.wait();
        }
        tear_down();
    }
}

fn bench() -> &'static str {
    env!("CARGO_BIN_EXE_rustsocks-bench")
}

/// Runs `ip ARGS`; `quiet` for tear-down steps that may find nothing to remove.
fn ip(args: &[&str], quiet: bool) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        quiet || out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits (bounded) for an exclusive lock on a file all runs share. The kernel drops
/// it when its holder exits, so a killed run cannot leave it taken.
fn take_turn() -> File {
    let path = std::env::temp_dir().join("rustsocks-fault-net.lock");
    let file = File::create(&path).expect("creating the lock file");
    let deadline = Instant::now() + Duration::from_secs(120);
    // SAFETY: flock on a descriptor this process owns.
    while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        assert!(
            Instant::now() < deadline,
            "another run held {} for 2 minutes",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    file
}

fn tear_down() {
    ip(&["netns", "del", NS], true);
    ip(&["link", "del", HERE], true);
}
