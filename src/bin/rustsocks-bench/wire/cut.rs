//! Flow cuts for `rustsocks-bench wire --reset-rate`: a middlebox on the wire that
//! cuts a chosen fraction of TCP flows at a random point, as a NAT or firewall that
//! lost a flow's state does. The packet at the cut is dropped and both ends get a
//! reset; from then on every packet of the flow is dropped and answered with a reset
//! to its sender, so an end that was not listening at the cut learns it from its
//! next packet (a retransmission, an ACK). IPv4 only; other packets pass untouched.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Rng;

/// Flows remembered at most; when full, flows older than `FLOW_TTL` are forgotten.
const MAX_FLOWS: usize = 65_536;
const FLOW_TTL: Duration = Duration::from_secs(120);

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// What the wire does with one packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    /// Drop the packet; write `to_sender` back to the device it came from at once,
    /// and send `to_receiver` on in the packet's place (after the wire's delay).
    Reset {
        to_sender: Vec<u8>,
        to_receiver: Option<Vec<u8>>,
    },
}

pub struct Cutter {
    /// Fraction of new flows that get a cut point.
    rate: f64,
    /// A cut point is uniform over the first `within` payload bytes of a flow (both
    /// directions counted); a flow that ends sooner is not cut.
    within: u64,
    state: Mutex<State>,
}

struct State {
    flows: HashMap<FlowKey, Flow>,
    rng: Rng,
}

/// The two ends of a flow, lower first, so both directions share one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey(SocketAddrV4, SocketAddrV4);

struct Flow {
    since: Instant,
    /// Payload bytes seen so far, both directions.
    seen: u64,
    fate: Fate,
}

enum Fate {
    Spared,
    /// Cut at the packet that carries payload byte number `at` (1-based).
    CutAt(u64),
    Cut,
}

impl Cutter {
    pub fn new(rate: f64, within: u64, seed: u64) -> Self {
        Self {
            rate,
            within: within.max(1),
            state: Mutex::new(State {
                flows: HashMap::new(),
                rng: Rng(seed | 1),
            }),
        }
    }

    pub fn inspect(&self, packet: &[u8]) -> Verdict {
        let Some(seg) = Segment::parse(packet) else {
            return Verdict::Pass;
        };
        let key = seg.key();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if seg.flags & (SYN | ACK) == SYN {
            // A new connection (or a new one on a reused port pair): its fate now.
            let fate = if state.rng.next_f64() < self.rate {
                let at = 1 + (state.rng.next_f64() * self.within as f64) as u64;
                Fate::CutAt(at.min(self.within))
            } else {
                Fate::Spared
            };
            state.remember(key, fate);
            return Verdict::Pass;
        }
        let Some(flow) = state.flows.get_mut(&key) else {
            return Verdict::Pass;
        };
        match flow.fate {
            Fate::Spared => Verdict::Pass,
            Fate::CutAt(at) => {
                let seen = flow.seen;
                flow.seen += u64::from(seg.payload);
                if seg.payload == 0 || flow.seen < at {
                    return Verdict::Pass;
                }
                flow.fate = Fate::Cut;
                eprintln!(
                    "wire: cut flow {} -> {} after {seen} bytes",
                    seg.src, seg.dst
                );
                Verdict::Reset {
                    to_sender: seg.answer(),
                    // In the packet's place: the receiver expects exactly its sequence
                    // number, unless an earlier packet was lost (then the receiver's
                    // challenge ACK is answered like any other packet).
                    to_receiver: Some(rst(seg.src, seg.dst, seg.seq, None)),
                }
            }
            Fate::Cut if seg.flags & RST != 0 => Verdict::Drop,
            Fate::Cut => Verdict::Reset {
                to_sender: seg.answer(),
                to_receiver: None,
            },
        }
    }
}

impl State {
    fn remember(&mut self, key: FlowKey, fate: Fate) {
        if self.flows.len() >= MAX_FLOWS {
            self.flows.retain(|_, f| f.since.elapsed() < FLOW_TTL);
            if self.flows.len() >= MAX_FLOWS {
                self.flows.clear();
            }
        }
        let flow = Flow {
            since: Instant::now(),
            seen: 0,
            fate,
        };
        self.flows.insert(key, flow);
    }
}

/// The fields of an IPv4 TCP segment the cutter needs.
#[derive(Debug)]
struct Segment {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: u32,
}

impl Segment {
    fn parse(p: &[u8]) -> Option<Self> {
        if p.len() < 20 || p[0] >> 4 != 4 || p[9] != 6 {
            return None;
        }
        // A fragment (more-fragments set or an offset) has no whole TCP header.
        if u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 {
            return None;
        }
        let ihl = usize::from(p[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([p[2], p[3]])).min(p.len());
        let tcp = p.get(ihl..total)?;
        if tcp.len() < 20 {
            return None;
        }
        let offset = usize::from(tcp[12] >> 4) * 4;
        let word = |i: usize| u32::from_be_bytes([tcp[i], tcp[i + 1], tcp[i + 2], tcp[i + 3]]);
        let ip = |i: usize| Ipv4Addr::new(p[i], p[i + 1], p[i + 2], p[i + 3]);
        let port = |i: usize| u16::from_be_bytes([tcp[i], tcp[i + 1]]);
        Some(Self {
            src: SocketAddrV4::new(ip(12), port(0)),
            dst: SocketAddrV4::new(ip(16), port(2)),
            seq: word(4),
            ack: word(8),
            flags: tcp[13],
            payload: u32::try_from(tcp.len().checked_sub(offset)?).ok()?,
        })
    }

    fn key(&self) -> FlowKey {
        let ends = (self.src, self.dst);
        if (ends.0.ip(), ends.0.port()) <= (ends.1.ip(), ends.1.port()) {
            FlowKey(ends.0, ends.1)
        } else {
            FlowKey(ends.1, ends.0)
        }
    }

    /// The reset a TCP with no state for this flow answers the segment with
    /// (RFC 9293 3.10.7.1): with an ACK, the reset's sequence number is that ACK,
    /// which is exactly what the sender expects next.
    fn answer(&self) -> Vec<u8> {
        if self.flags & ACK != 0 {
            rst(self.dst, self.src, self.ack, None)
        } else {
            let len =
                self.payload + u32::from(self.flags & SYN != 0) + u32::from(self.flags & FIN != 0);
            rst(self.dst, self.src, 0, Some(self.seq.wrapping_add(len)))
        }
    }
}

/// A 40-byte IPv4 TCP reset from `src` to `dst`, with an ACK field when `ack` is set.
fn rst(src: SocketAddrV4, dst: SocketAddrV4, seq: u32, ack: Option<u32>) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[6] = 0x40; // don't fragment
    p[8] = 64; // TTL
    p[9] = 6; // TCP
    p[12..16].copy_from_slice(&src.ip().octets());
    p[16..20].copy_from_slice(&dst.ip().octets());
    let ip_sum = checksum(0, &p[..20]);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&src.port().to_be_bytes());
    t[2..4].copy_from_slice(&dst.port().to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.unwrap_or(0).to_be_bytes());
    t[12] = 5 << 4;
    t[13] = RST | if ack.is_some() { ACK } else { 0 };
    // The pseudo-header: both addresses, the protocol and the TCP length.
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.ip().octets());
    pseudo[4..8].copy_from_slice(&dst.ip().octets());
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    let tcp_sum = checksum(sum(0, &pseudo), t);
    t[16..18].copy_from_slice(&tcp_sum.to_be_bytes());
    p
}

/// Adds `data` as big-endian 16-bit words to a running one's-complement sum.
fn sum(mut acc: u32, data: &[u8]) -> u32 {
    for pair in data.chunks(2) {
        let hi = u32::from(pair[0]) << 8;
        acc += hi | pair.get(1).map_or(0, |&lo| u32::from(lo));
    }
    acc
}

/// The Internet checksum (RFC 1071) of `data`, continuing the sum `acc`.
fn checksum(acc: u32, data: &[u8]) -> u16 {
    let mut acc = sum(acc, data);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    /// A segment from `src` to `dst` with `payload` zero bytes.
    fn segment(src: &str, dst: &str, seq: u32, ack: u32, flags: u8, payload: usize) -> Vec<u8> {
        let mut p = rst(addr(src), addr(dst), seq, Some(ack));
        p[33] = flags;
        p.extend(std::iter::repeat_n(0u8, payload));
        let total = u16::try_from(p.len()).unwrap();
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p
    }

    #[test]
    fn forged_resets_carry_valid_checksums() {
        let p = rst(addr("10.0.0.1:4000"), addr("10.0.0.2:80"), 7, Some(9));
        // A correct header sums (with its checksum) to all ones: the checksum is 0.
        assert_eq!(checksum(0, &p[..20]), 0);
        let mut pseudo = [0u8; 12];
        pseudo[0..8].copy_from_slice(&p[12..20]);
        pseudo[9] = 6;
        pseudo[11] = 20;
        assert_eq!(checksum(sum(0, &pseudo), &p[20..]), 0);
        let seg = Segment::parse(&p).unwrap();
        assert_eq!((seg.seq, seg.ack, seg.flags), (7, 9, RST | ACK));
    }

    #[test]
    fn a_flow_is_cut_within_its_bytes_and_both_ends_get_resets() {
        let cutter = Cutter::new(1.0, 1000, 1);
        let (c, s) = ("10.0.0.1:4000", "10.0.0.2:80");
        assert_eq!(
            cutter.inspect(&segment(c, s, 100, 0, SYN, 0)),
            Verdict::Pass
        );
        assert_eq!(
            cutter.inspect(&segment(s, c, 500, 101, SYN | ACK, 0)),
            Verdict::Pass
        );
        let mut seq = 101;
        let verdict = loop {
            let v = cutter.inspect(&segment(c, s, seq, 501, ACK, 100));
            if v != Verdict::Pass {
                break v;
            }
            seq += 100;
            assert!(seq < 101 + 1000, "not cut within 1000 bytes");
        };
        let Verdict::Reset {
            to_sender,
            to_receiver: Some(to_receiver),
        } = verdict
        else {
            panic!("{verdict:?}");
        };
        // The sender gets a reset at the sequence number it acknowledged...
        let back = Segment::parse(&to_sender).unwrap();
        assert_eq!((back.src, back.dst, back.seq), (addr(s), addr(c), 501));
        // ...the receiver one at the dropped segment's.
        let on = Segment::parse(&to_receiver).unwrap();
        assert_eq!((on.src, on.dst, on.seq), (addr(c), addr(s), seq));
        // Later packets, either way, are answered; resets are only dropped.
        let later = cutter.inspect(&segment(s, c, 501, seq, ACK, 0));
        assert!(matches!(
            later,
            Verdict::Reset {
                to_receiver: None,
                ..
            }
        ));
        assert_eq!(
            cutter.inspect(&segment(s, c, 501, 0, RST, 0)),
            Verdict::Drop
        );
    }

    #[test]
    fn spared_flows_and_other_packets_pass() {
        let cutter = Cutter::new(0.0, 10, 1);
        let (c, s) = ("10.0.0.1:4000", "10.0.0.2:80");
        assert_eq!(cutter.inspect(&segment(c, s, 1, 0, SYN, 0)), Verdict::Pass);
        assert_eq!(
            cutter.inspect(&segment(c, s, 2, 1, ACK, 1000)),
            Verdict::Pass
        );
        assert_eq!(cutter.inspect(&[0x60; 40]), Verdict::Pass, "IPv6 passes");
    }
}
