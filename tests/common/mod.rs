//! Shared helpers for integration tests: run the real `rustsocks` binary on an
//! ephemeral loopback port, local upstream servers, and a small SOCKS client.
#![allow(dead_code)] // each test binary uses a different subset

pub mod certs;
pub mod curl;
pub mod fault_net;
pub mod http;
pub mod schema;
pub mod socks;
pub mod udp;
pub mod upstream;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("rustsocks-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_rustsocks")
}

/// A config for tests: port 0 on loopback, JSON debug logs, plus `server_keys`
/// (lines for `[server]`) and `rest` (further sections).
/// Unless `rest` has an `[api]` section, the API listens on an ephemeral port.
pub fn config(server_keys: &str, rest: &str) -> String {
    let api = if rest.contains("[api]") {
        ""
    } else {
        "[api]\nport = 0\n"
    };
    format!(
        "[server]\nbind_address = \"127.0.0.1\"\nbind_port = 0\n{server_keys}\n{rest}\n{api}\
         [logging]\nlevel = \"debug\"\nformat = \"json\"\n"
    )
}

/// The running binary. Killed on drop if still running.
pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    /// The management API's address, when it is enabled.
    pub api: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
    _dir: TempDir,
}

impl Proxy {
    pub fn start(config_text: &str) -> Self {
        Self::start_with(config_text, |_| {})
    }

    /// Starts the binary with `config_text`; `adjust` may change the command (for
    /// example to run it in another network namespace).
    pub fn start_with(config_text: &str, adjust: impl FnOnce(&mut Command)) -> Self {
        let dir = TempDir::new();
        let path = dir.path().join("rustsocks.toml");
        std::fs::write(&path, config_text).expect("write config");
        let mut cmd = Command::new(binary());
        // The default session database is a relative path: keep it in the temp dir.
        cmd.current_dir(dir.path());
        cmd.arg("--config").arg(&path);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        adjust(&mut cmd);
        let mut child = cmd.spawn().expect("spawn rustsocks");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut api = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = logged_address(&line, "management API ready", "api") {
                    api = Some(addr);
                }
                if let Some(addr) = logged_address(&line, "SOCKS listener ready", "socks") {
                    let _ = ready_tx.send((addr, api));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let (addr, api) = match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addrs) => addrs,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "proxy did not become ready; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Self {
            child,
            addr,
            api,
            log,
            _dir: dir,
        }
    }

    /// Everything the proxy logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits (bounded) until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn signal(&self, sig: libc::c_int) {
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The proxy's working directory (a temp dir): where relative paths land.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in field `field` of the JSON log line whose message is `message`.
fn logged_address(line: &str, message: &str, field: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?;
    if fields.get("message")?.as_str()? != message {
        return None;
    }
    fields.get(field)?.as_str()?.parse().ok()
}

/// Polls `check` every few milliseconds until it holds; panics naming `what` after
/// ten seconds. For state that settles in the background (pool refills, telemetry).
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The value of the series `series` (name and labels, as printed) in a `/metrics`
/// text, or 0 if it is absent.
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// `eventually` for a check that has to wait itself (an HTTP request, say); polls
/// every 20 ms.
pub async fn eventually_async<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the binary with `args` and `stdin`, returning (status, stdout, stderr).
pub fn run_cli(args: &[&str], stdin: &str) -> (ExitStatus, String, String) {
    use std::io::Write;
    let cwd = TempDir::new();
    let mut child = Command::new(binary())
        .current_dir(cwd.path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rustsocks");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("wait");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status, text(out.stdout), text(out.stderr))
}

/// Starts the server in this process (library API) with `toml`, bound to an
/// ephemeral loopback port. For tests that read the pool or telemetry directly.
pub async fn start_in_process(toml: &str) -> rustsocks::Running {
    let mut config = rustsocks::Config::from_toml(toml).expect("test config parses");
    config.server.bind_address = std::net::Ipv4Addr::LOCALHOST.into();
    config.server.bind_port = 0;
    config.api.port = 0;
    // In-process servers keep no session history unless the test configures it.
    if !toml.contains("[sessions]") {
        config.sessions.enabled = false;
    }
    rustsocks::App::start(config).await.expect("server starts")
}
