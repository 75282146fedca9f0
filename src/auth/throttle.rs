//! Failed logins are slowed per client address, so that guessing passwords costs the
//! guesser time instead of costing the server CPU.
//!
//! After `free` failures from an address, each further attempt from it waits its turn:
//! turns are spaced by a delay that doubles with each failure, up to `max`. Turns are
//! reserved, so opening many connections does not buy more guesses: an address that
//! keeps failing gets one check per `max`. An attempt whose turn would be more than
//! `max` away is refused without a check (after being held for `max`, so that it
//! costs the guesser a connection's time), so an attack cannot push the
//! address's next turn arbitrarily far (a real user behind the same address waits at
//! most about `2 × max` once the attack stops). A success forgets the address; so does
//! `FORGET_AFTER` without a failure.
//!
//! IPv6 addresses count per /64 (what one host or one customer usually has), so that
//! one host cannot step through its addresses. The table holds at most `MAX_TRACKED`
//! addresses: stale ones are swept first, then the one whose last failure is oldest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// An address with no failure for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered at once (about 50 bytes each).
const MAX_TRACKED: usize = 65_536;

#[derive(Debug)]
pub(super) struct Throttle {
    free: u32,
    base: Duration,
    max: Duration,
    table: Mutex<HashMap<IpAddr, Record>>,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    /// The earliest start of the next check from this address.
    next_turn: Instant,
}

/// What an attempt from an address must do before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// Check now. `suspect`: the address failed recently (its check yields to others).
    Now { suspect: bool },
    /// Wait `delay`, then check (as a suspect).
    After { delay: Duration, failures: u32 },
    /// Refuse without a check: the address's next turn is too far away.
    Refused { failures: u32 },
}

impl Throttle {
    /// `base` zero turns the throttle off.
    pub fn new(free: u32, base: Duration, max: Duration) -> Self {
        Self {
            free,
            base,
            max: max.max(base),
            table: Mutex::new(HashMap::new()),
        }
    }

    fn key(ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
            v4 => v4,
        }
    }

    /// The longest hold-back (`auth.login_backoff_max_ms`).
    pub fn max_delay(&self) -> Duration {
        self.max
    }

    /// The spacing of turns after `failures` failures.
    fn spacing(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(self.free).min(30);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }

    /// Decides, and reserves the turn of, an attempt from `ip` that starts now.
    pub fn admit(&self, ip: IpAddr) -> Admission {
        if self.base.is_zero() {
            return Admission::Now { suspect: false };
        }
        let now = Instant::now();
        let key = Self::key(ip);
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(r) = table.get_mut(&key) else {
            return Admission::Now { suspect: false };
        };
        if now.saturating_duration_since(r.last_failure) >= FORGET_AFTER {
            table.remove(&key);
            return Admission::Now { suspect: false };
        }
        if r.failures < self.free {
            return Admission::Now { suspect: true };
        }
        let turn = r.next_turn.max(now);
        let delay = turn - now;
        if delay > self.max {
            return Admission::Refused {
                failures: r.failures,
            };
        }
        r.next_turn = turn + self.spacing(r.failures);
        if delay.is_zero() {
            Admission::Now { suspect: true }
        } else {
            Admission::After {
                delay,
                failures: r.failures,
            }
        }
    }

    /// Records a checked attempt's result.
    pub fn record(&self, ip: IpAddr, success: bool) {
        if self.base.is_zero() {
            return;
        }
        let key = Self::key(ip);
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if success {
            table.remove(&key);
            return;
        }
        let now = Instant::now();
        if !table.contains_key(&key) && table.len() >= MAX_TRACKED {
            make_room(&mut table, now);
        }
        let r = table.entry(key).or_insert(Record {
            failures: 0,
            last_failure: now,
            next_turn: now,
        });
        if now.saturating_duration_since(r.last_failure) >= FORGET_AFTER {
            r.failures = 0;
        }
        r.failures = r.failures.saturating_add(1);
        r.last_failure = now;
        if r.failures >= self.free {
            r.next_turn = r.next_turn.max(now + self.spacing(r.failures));
        }
    }

    /// Addresses whose attempts are held back now (past their free failures).
    #[cfg(test)]
    pub fn held_back(&self) -> usize {
        let now = Instant::now();
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table
            .values()
            .filter(|r| {
                r.failures >= self.free
                    && now.saturating_duration_since(r.last_failure) < FORGET_AFTER
            })
            .count()
    }
}

/// Frees one place: every stale record, or else the one whose last failure is oldest.
fn make_room(table: &mut HashMap<IpAddr, Record>, now: Instant) {
    table.retain(|_, r| now.saturating_duration_since(r.last_failure) < FORGET_AFTER);
    if table.len() < MAX_TRACKED {
        return;
    }
    if let Some(oldest) = table
        .iter()
        .min_by_key(|(_, r)| r.last_failure)
        .map(|(k, _)| *k)
    {
        table.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn fail(t: &Throttle, addr: IpAddr, n: u32) {
        for _ in 0..n {
            t.record(addr, false);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn delays_double_after_the_free_failures_and_stop_at_the_maximum() {
        let t = Throttle::new(3, 100 * MS, 800 * MS);
        let a = ip("192.0.2.1");
        assert_eq!(t.admit(a), Admission::Now { suspect: false });
        let mut seen = Vec::new();
        for _ in 0..8 {
            match t.admit(a) {
                Admission::Now { .. } => seen.push(Duration::ZERO),
                Admission::After { delay, .. } => {
                    seen.push(delay);
                    tokio::time::sleep(delay).await;
                }
                Admission::Refused { .. } => panic!("a sequential attempt was refused"),
            }
            t.record(a, false);
        }
        let ms: Vec<u128> = seen.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 0, 0, 100, 200, 400, 800, 800]);
        assert_eq!(t.held_back(), 1);
        // Another address is not affected.
        assert_eq!(t.admit(ip("192.0.2.2")), Admission::Now { suspect: false });
    }

    #[tokio::test(start_paused = true)]
    async fn parallel_attempts_get_spaced_turns_and_the_far_ones_are_refused() {
        let t = Throttle::new(1, 100 * MS, 400 * MS);
        let a = ip("198.51.100.7");
        fail(&t, a, 3); // spacing now 400 ms
        let verdicts: Vec<_> = (0..4).map(|_| t.admit(a)).collect();
        assert_eq!(
            verdicts,
            [
                Admission::After {
                    delay: 400 * MS,
                    failures: 3
                },
                Admission::Refused { failures: 3 },
                Admission::Refused { failures: 3 },
                Admission::Refused { failures: 3 },
            ]
        );
        // The refused ones reserved nothing: after the turn, one more check is due.
        tokio::time::sleep(800 * MS).await;
        assert_eq!(t.admit(a), Admission::Now { suspect: true });
    }

    #[tokio::test(start_paused = true)]
    async fn success_and_time_forgive() {
        let t = Throttle::new(2, 100 * MS, 1000 * MS);
        let a = ip("203.0.113.9");
        fail(&t, a, 5);
        assert!(matches!(t.admit(a), Admission::After { .. }));
        t.record(a, true);
        assert_eq!(t.admit(a), Admission::Now { suspect: false });
        fail(&t, a, 5);
        tokio::time::sleep(FORGET_AFTER).await;
        assert_eq!(t.admit(a), Admission::Now { suspect: false });
        assert_eq!(t.held_back(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let t = Throttle::new(1, 100 * MS, 1000 * MS);
        fail(&t, ip("2001:db8:1:2::1"), 2);
        assert!(matches!(
            t.admit(ip("2001:db8:1:2::ffff")),
            Admission::After { .. }
        ));
        assert_eq!(
            t.admit(ip("2001:db8:1:3::1")),
            Admission::Now { suspect: false }
        );
        fail(&t, ip("::ffff:192.0.2.5"), 2);
        assert!(matches!(t.admit(ip("192.0.2.5")), Admission::After { .. }));
    }

    #[test]
    fn the_table_is_bounded() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let t = Throttle::new(1, 100 * MS, 1000 * MS);
            for i in 0..(MAX_TRACKED as u32 + 10) {
                t.record(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), false);
            }
            assert_eq!(t.table.lock().unwrap().len(), MAX_TRACKED);
        });
    }

    #[test]
    fn zero_base_turns_it_off() {
        let t = Throttle::new(0, Duration::ZERO, Duration::ZERO);
        let a = ip("192.0.2.1");
        fail(&t, a, 50);
        assert_eq!(t.admit(a), Admission::Now { suspect: false });
    }
}
