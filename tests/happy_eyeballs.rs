//! Happy Eyeballs through the real binary: in a network namespace of its own, a
//! name resolves (from the namespace's hosts file) to an IPv6 address whose
//! packets vanish and to 127.0.0.1. The CONNECT by name must succeed over IPv4
//! after the 250 ms attempt delay, not wait out `connect_timeout_ms` (30 s here) on
//! the IPv6 address. Needs root (a namespace, a veth pair, /etc/netns).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{binary, TempDir};

/// A namespace with lo up, a veth pair that swallows 2001:db8:dead::/64, and
/// a hosts file; removed on drop.
struct Namespace {
    name: String,
    etc: PathBuf,
    children: Vec<Child>,
}

impl Namespace {
    fn up() -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root (a network namespace)");
            return None;
        }
        let name = format!("rshe{}", std::process::id());
        let etc = PathBuf::from("/etc/netns").join(&name);
        let ns = Namespace {
            name,
            etc,
            children: Vec::new(),
        };
        ns.ip(&["netns", "add", &ns.name]);
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        // A veth pair inside the namespace: packets for 2001:db8:dead::/64 go out of
        // hole0 to a neighbour that does not exist; the other end drops them (not
        // its address, no forwarding). A SYN there is never answered.
        ns.exec_ok(&[
            "ip", "link", "add", "hole0", "type", "veth", "peer", "name", "hole1",
        ]);
        ns.exec_ok(&["ip", "link", "set", "hole0", "up"]);
        ns.exec_ok(&["ip", "link", "set", "hole1", "up"]);
        ns.exec_ok(&[
            "ip",
            "-6",
            "addr",
            "add",
            "2001:db8:beef::2/64",
            "dev",
            "hole0",
            "nodad",
        ]);
        ns.exec_ok(&[
            "ip",
            "-6",
            "neigh",
            "add",
            "2001:db8:beef::99",
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            "hole0",
            "nud",
            "permanent",
        ]);
        ns.exec_ok(&[
            "ip",
            "-6",
            "route",
            "add",
            "2001:db8:dead::/64",
            "via",
            "2001:db8:beef::99",
        ]);
        // `ip netns exec` mounts /etc/netns/NAME/hosts over /etc/hosts.
        std::fs::create_dir_all(&ns.etc).unwrap();
        std::fs::write(
            ns.etc.join("hosts"),
            "127.0.0.1 localhost\n2001:db8:dead::1 dual.test\n127.0.0.1 dual.test\n",
        )
        .unwrap();
        Some(ns)
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("running ip");
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    fn exec(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running ip netns exec")
    }

    fn exec_ok(&self, args: &[&str]) {
        let out = self.exec(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }

    fn spawn(&mut self, args: &[&str]) {
        let child = self
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning in the namespace");
        self.children.push(child);
    }

    /// Waits (bounded) until something in the namespace accepts on 127.0.0.1:port.
    fn wait_port(&self, port: u16) {
        for _ in 0..100 {
            let probe = format!("exec 3<>/dev/tcp/127.0.0.1/{port}");
            if self.exec(&["bash", "-c", &probe]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nothing listens on {port} in the namespace");
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

/// The CONNECT by name, with each resolver: both give the IPv6 address first.
#[test]
fn a_name_whose_ipv6_address_does_not_answer_connects_over_ipv4() {
    let Some(mut ns) = Namespace::up() else {
        return;
    };
    let dir = TempDir::new();
    std::fs::write(dir.path().join("index.html"), "over ipv4\n").unwrap();
    let site = dir.path().to_str().unwrap().to_owned();
    ns.spawn(&[
        "python3",
        "-m",
        "http.server",
        "18080",
        "--bind",
        "127.0.0.1",
        "--directory",
        &site,
    ]);
    ns.wait_port(18080);
    for (port, resolver) in [(11080u16, "cached"), (11081, "system")] {
        let config = dir.path().join(format!("{resolver}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nbind_port = {port}\n[server.pool]\nconnect_timeout_ms = 30000\n\
                 [api]\nenabled = false\n[sessions]\nenabled = false\n\
                 [dns]\nresolver = \"{resolver}\"\n"
            ),
        )
        .unwrap();
        ns.spawn(&[binary(), "--config", config.to_str().unwrap()]);
        ns.wait_port(port);
        let started = Instant::now();
        let out = ns.exec(&[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--socks5-hostname",
            &format!("127.0.0.1:{port}"),
            "http://dual.test:18080/",
        ]);
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && body == "over ipv4\n",
            "{resolver}: curl failed after {:?} (the proxy waited on the IPv6 address?): {}",
            started.elapsed(),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{resolver}: fetched in {:?}", started.elapsed());
    }
}
