//! `rustsocks-bench wire`: a latency emulator for kernels without netem. Two TUN
//! devices joined by a userspace loop: every packet read from one is written to
//! the other half a round-trip time later (optionally dropping a fraction). With one
//! device moved into a network namespace (scripts/netns-latency.sh does that), a
//! target in that namespace is a real round trip away from processes outside it.
//! With `--reset-rate` it also cuts a fraction of TCP flows with resets (`cut`).

mod cut;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
/// Largest packet read from a device (its MTU is 1500; this leaves room).
const MAX_PACKET: usize = 65_536;
/// Packets in flight per direction before the reader waits.
const QUEUE: usize = 65_536;

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates (or attaches to) TUN device `name`, without packet-information headers.
fn open_tun(name: &str) -> anyhow::Result<File> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        bail!(
            "device name {name:?} must be 1 to {} bytes",
            libc::IFNAMSIZ - 1
        );
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("opening /dev/net/tun (needs root)")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    for (dst, src) in req.name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: TUNSETIFF reads an ifreq-sized struct that outlives the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("creating TUN device {name}"));
    }
    Ok(file)
}

/// What the wire does to the packets between its devices.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    pub rtt: Duration,
    /// Fraction of packets dropped, 0 to below 1.
    pub loss: f64,
    /// Fraction of TCP flows cut with resets, 0 to 1.
    pub reset_rate: f64,
    /// A cut falls within this many payload bytes of its flow (both directions).
    pub reset_within: u64,
}

/// What one direction needs: its delay, its loss, the cutter both directions share.
#[derive(Clone)]
struct Path {
    delay: Duration,
    loss: f64,
    cutter: Option<Arc<cut::Cutter>>,
}

/// A tiny xorshift generator for the drop decision: reproducible, no dependency.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Moves packets from `from` to `to`, each `path.delay` after it was read (or drops
/// them, or answers them with resets, per `path`). One thread per direction: it
/// reads every packet waiting, writes every packet due, then sleeps in `ppoll` until
/// the next packet arrives or falls due. No thread hand-off or
/// allocation per packet; most of the wire's CPU is the kernel's TCP processing of
/// each packet written, which runs in this thread.
fn direction(mut from: File, mut to: File, path: Path, seed: u64) -> anyhow::Result<()> {
    set_nonblocking(&from)?;
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    // Buffers of written packets, reused so the steady state allocates nothing.
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let mut rng = Rng(seed | 1);
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        while queue.len() < QUEUE {
            let n = match from.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading a TUN device"),
            };
            if path.loss > 0.0 && rng.next_f64() < path.loss {
                continue;
            }
            let verdict = path
                .cutter
                .as_ref()
                .map_or(cut::Verdict::Pass, |c| c.inspect(&buf[..n]));
            let due = Instant::now() + path.delay;
            match verdict {
                cut::Verdict::Pass => {
                    let mut packet = spare.pop().unwrap_or_default();
                    packet.clear();
                    packet.extend_from_slice(&buf[..n]);
                    queue.push_back((due, packet));
                }
                cut::Verdict::Drop => {}
                cut::Verdict::Reset {
                    to_sender,
                    to_receiver,
                } => {
                    // Straight back, so it meets the sender in the state the packet
                    // showed; a failed write is a lost packet, as below.
                    let _ = (&from).write(&to_sender);
                    queue.extend(to_receiver.map(|p| (due, p)));
                }
            }
        }
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _)| *due <= now) {
            let Some((_, packet)) = queue.pop_front() else {
                break;
            };
            // A failed write is a lost packet, as on a real wire.
            let _ = to.write(&packet);
            if spare.len() < 1024 {
                spare.push(packet);
            }
        }
        let next_due = queue
            .front()
            .map(|(due, _)| due.saturating_duration_since(Instant::now()));
        match next_due {
            // Full: packets wait in the device's own queue until the first is due.
            Some(wait) if queue.len() >= QUEUE => std::thread::sleep(wait),
            _ => wait_readable(&from, next_due)?,
        }
    }
}

fn set_nonblocking(file: &File) -> anyhow::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this process owns, with integer arguments.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) >= 0
    };
    if !ok {
        return Err(std::io::Error::last_os_error()).context("making a TUN device non-blocking");
    }
    Ok(())
}

/// Sleeps until `file` is readable or `timeout` (None: no limit) has passed, with
/// nanosecond resolution (poll(2) would round to milliseconds).
fn wait_readable(file: &File, timeout: Option<Duration>) -> anyhow::Result<()> {
    let mut pfd = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const _);
    // SAFETY: one valid pollfd, a timespec (or null) that outlives the call, no mask.
    let rc = unsafe { libc::ppoll(&mut pfd, 1, ts_ptr, std::ptr::null()) };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() != ErrorKind::Interrupted {
            return Err(err).context("waiting for a TUN device");
        }
    }
    Ok(())
}

/// Runs until killed: `a` <-> `b` with `faults`.
pub fn run(a: &str, b: &str, faults: Faults) -> anyhow::Result<()> {
    if !(0.0..1.0).contains(&faults.loss) {
        bail!("--loss must be at least 0 and below 1");
    }
    if !(0.0..=1.0).contains(&faults.reset_rate) || faults.reset_within == 0 {
        bail!("--reset-rate must be 0 to 1 and --reset-within at least 1");
    }
    let (ta, tb) = (open_tun(a)?, open_tun(b)?);
    let path = Path {
        delay: faults.rtt / 2,
        loss: faults.loss,
        cutter: (faults.reset_rate > 0.0).then(|| {
            let cutter = cut::Cutter::new(faults.reset_rate, faults.reset_within, 0xC2B2_AE35);
            Arc::new(cutter)
        }),
    };
    let back = path.clone();
    let (ta2, tb2) = (ta.try_clone()?, tb.try_clone()?);
    eprintln!(
        "wire: {a} <-> {b}, round trip {:?}, loss {:.2} %, resets on {:.2} % of TCP flows \
         within {} bytes",
        faults.rtt,
        faults.loss * 100.0,
        faults.reset_rate * 100.0,
        faults.reset_within,
    );
    // The directions only end on an error; the first one to end ends the wire, so a
    // dead direction cannot leave a process that looks healthy but drops everything.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let back_tx = done_tx.clone();
    std::thread::spawn(move || {
        let _ = back_tx.send(direction(tb2, ta2, back, 0x9E37_79B9).context("b -> a"));
    });
    std::thread::spawn(move || {
        let _ = done_tx.send(direction(ta, tb, path, 0x85EB_CA6B).context("a -> b"));
    });
    done_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("a wire thread panicked"))?
}
