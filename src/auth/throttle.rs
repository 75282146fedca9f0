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
//! most about `2 × max` once the attack stops).
//!
//! Attempts count from the moment they are admitted, not when their check ends: an
//! attempt abandoned mid-check (the handshake deadline) counts as a failure, and a
//! burst of parallel attempts from an address with no known failure is checked at the
//! lower priority once more than `free` are in flight, each of them looked at again
//! just before its check, so that a burst of guesses stops being checked as soon as
//! `free` of them have failed. A success forgets the address only when it is the user
//! whose password failed last (someone who mistyped, then got it right); a success
//! of another user from the same address (a guesser with an account of its own) only
//! takes one failure off. `FORGET_AFTER` without a failure forgets it too.
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
    /// Attempts admitted and not yet finished.
    in_flight: u32,
    last_failure: Instant,
    /// The user name (hashed) of the last failure.
    last_user: u64,
    /// The earliest start of the next check from this address.
    next_turn: Instant,
}

/// What an attempt from an address must do before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// Check now. `suspect`: the address failed recently, or has more than `free`
    /// attempts in flight (its check yields to others).
    Now { suspect: bool },
    /// Wait `delay`, then check (as a suspect).
    After { delay: Duration, failures: u32 },
    /// Refuse without a check: the address's next turn is too far away.
    Refused { failures: u32 },
}

/// How an admitted attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Success,
    /// A wrong password, or an attempt abandoned before its answer (which may have
    /// cost a check all the same).
    Failure,
}

/// An admitted attempt. Finish it with its result; dropped unfinished (the client
/// left, the handshake deadline passed), it counts as a failure.
#[derive(Debug)]
pub(super) struct Ticket<'a> {
    throttle: &'a Throttle,
    key: IpAddr,
    user: u64,
    /// Admitted while the address had fewer than `free` failures: looked at again
    /// just before the check (see `still_admitted`).
    gated: bool,
    done: bool,
}

impl Ticket<'_> {
    /// Whether the check must not run after all: `Some(failures)` when the address
    /// reached `free` failures while this attempt, admitted before that, waited for
    /// its check.
    pub fn stopped(&self) -> Option<u32> {
        if !self.gated {
            return None;
        }
        let table = self.throttle.lock();
        let failures = table.get(&self.key).map_or(0, |r| r.failures);
        (failures >= self.throttle.free).then_some(failures)
    }

    pub fn finish(mut self, success: bool) {
        self.done = true;
        let ending = if success {
            Ending::Success
        } else {
            Ending::Failure
        };
        self.throttle.finish(self.key, self.user, ending);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.throttle.finish(self.key, self.user, Ending::Failure);
        }
    }
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Record>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn key(ip: IpAddr) -> IpAddr {
        crate::access::client_key(ip)
    }

    fn user_hash(user: &[u8]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        user.hash(&mut h);
        h.finish()
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

    /// Decides, and reserves the turn of, an attempt by `user` from `ip` that starts
    /// now. Every admission but `Refused` comes with a ticket (none when the
    /// throttle is off).
    pub fn admit(&self, ip: IpAddr, user: &[u8]) -> (Admission, Option<Ticket<'_>>) {
        if self.base.is_zero() {
            return (Admission::Now { suspect: false }, None);
        }
        let now = Instant::now();
        let key = Self::key(ip);
        let mut table = self.lock();
        if !table.contains_key(&key) && table.len() >= MAX_TRACKED {
            make_room(&mut table, now);
        }
        let r = table.entry(key).or_insert(Record {
            failures: 0,
            in_flight: 0,
            last_failure: now,
            last_user: 0,
            next_turn: now,
        });
        if r.in_flight == 0
            && r.failures > 0
            && now.saturating_duration_since(r.last_failure) >= FORGET_AFTER
        {
            r.failures = 0;
            r.next_turn = now;
        }
        let (admission, gated) = if r.failures < self.free {
            let suspect = r.failures > 0 || r.in_flight >= self.free;
            (Admission::Now { suspect }, true)
        } else {
            let turn = r.next_turn.max(now);
            let delay = turn - now;
            if delay > self.max {
                let failures = r.failures;
                return (Admission::Refused { failures }, None);
            }
            r.next_turn = turn + self.spacing(r.failures);
            let admission = match delay.is_zero() {
                true => Admission::Now { suspect: true },
                false => Admission::After {
                    delay,
                    failures: r.failures,
                },
            };
            (admission, false)
        };
        r.in_flight += 1;
        let ticket = Ticket {
            throttle: self,
            key,
            user: Self::user_hash(user),
            gated,
            done: false,
        };
        (admission, Some(ticket))
    }

    fn finish(&self, key: IpAddr, user: u64, ending: Ending) {
        let now = Instant::now();
        let mut table = self.lock();
        let Some(r) = table.get_mut(&key) else {
            return;
        };
        r.in_flight = r.in_flight.saturating_sub(1);
        match ending {
            Ending::Failure => {
                r.failures = r.failures.saturating_add(1);
                r.last_failure = now;
                r.last_user = user;
                if r.failures >= self.free {
                    r.next_turn = r.next_turn.max(now + self.spacing(r.failures));
                }
            }
            Ending::Success if r.failures == 0 || r.last_user == user => {
                r.failures = 0;
                r.next_turn = now;
            }
            Ending::Success => r.failures -= 1,
        }
        if r.failures == 0 && r.in_flight == 0 {
            table.remove(&key);
        }
    }

    /// Addresses whose attempts are held back now (past their free failures).
    #[cfg(test)]
    pub fn held_back(&self) -> usize {
        let now = Instant::now();
        self.lock()
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
    table.retain(|_, r| {
        r.in_flight > 0 || now.saturating_duration_since(r.last_failure) < FORGET_AFTER
    });
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

    /// `n` failed attempts by "mallory", one after another, without their waits.
    fn fail(t: &Throttle, addr: IpAddr, n: u32) {
        for _ in 0..n {
            if let (_, Some(ticket)) = t.admit(addr, b"mallory") {
                ticket.finish(false);
            }
        }
    }

    /// One attempt by `user` that waits its turn and ends as `success` says;
    /// returns how long it was held.
    async fn attempt(t: &Throttle, addr: IpAddr, user: &[u8], success: bool) -> Duration {
        let (admission, ticket) = t.admit(addr, user);
        let delay = match admission {
            Admission::Now { .. } => Duration::ZERO,
            Admission::After { delay, .. } => delay,
            Admission::Refused { .. } => panic!("a sequential attempt was refused"),
        };
        tokio::time::sleep(delay).await;
        ticket.expect("admitted").finish(success);
        delay
    }

    #[tokio::test(start_paused = true)]
    async fn delays_double_after_the_free_failures_and_stop_at_the_maximum() {
        let t = Throttle::new(3, 100 * MS, 800 * MS);
        let a = ip("192.0.2.1");
        let mut seen = Vec::new();
        for _ in 0..8 {
            seen.push(attempt(&t, a, b"alice", false).await.as_millis());
        }
        assert_eq!(seen, [0, 0, 0, 100, 200, 400, 800, 800]);
        assert_eq!(t.held_back(), 1);
        // Another address is not affected.
        assert_eq!(
            t.admit(ip("192.0.2.2"), b"alice").0,
            Admission::Now { suspect: false }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn parallel_attempts_get_spaced_turns_and_the_far_ones_are_refused() {
        let t = Throttle::new(1, 100 * MS, 400 * MS);
        let a = ip("198.51.100.7");
        fail(&t, a, 3); // spacing now 400 ms
        let verdicts: Vec<_> = (0..4).map(|_| t.admit(a, b"x")).collect();
        let admissions: Vec<_> = verdicts.iter().map(|(adm, _)| *adm).collect();
        assert_eq!(
            admissions,
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
        assert!(verdicts[1..].iter().all(|(_, ticket)| ticket.is_none()));
        drop(verdicts); // the admitted one is abandoned: a fourth failure
        tokio::time::sleep(2_000 * MS).await;
        assert_eq!(t.admit(a, b"x").0, Admission::Now { suspect: true });
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_attempt_counts_as_a_failure() {
        let t = Throttle::new(1, 100 * MS, 1000 * MS);
        let a = ip("192.0.2.9");
        drop(t.admit(a, b"alice"));
        assert!(matches!(t.admit(a, b"alice").0, Admission::After { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_stops_being_checked_once_free_failures_are_known() {
        let t = Throttle::new(3, 100 * MS, 1000 * MS);
        let a = ip("203.0.113.1");
        let burst: Vec<_> = (0..10).map(|_| t.admit(a, b"alice")).collect();
        // The first `free` go at normal priority, the rest as suspects.
        let suspects: Vec<bool> = burst
            .iter()
            .map(|(adm, _)| matches!(adm, Admission::Now { suspect: true }))
            .collect();
        assert_eq!(
            suspects,
            [false, false, false, true, true, true, true, true, true, true]
        );
        let mut tickets: Vec<Ticket<'_>> = burst.into_iter().map(|(_, t)| t.unwrap()).collect();
        let rest = tickets.split_off(3);
        assert!(rest.iter().all(|t| t.stopped().is_none()));
        for ticket in tickets {
            ticket.finish(false);
        }
        assert!(
            rest.iter().all(|t| t.stopped() == Some(3)),
            "checked after 3 failures"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_forgives_its_own_user_and_time_forgives_everyone() {
        let t = Throttle::new(2, 100 * MS, 1000 * MS);
        let a = ip("203.0.113.9");
        for _ in 0..5 {
            attempt(&t, a, b"alice", false).await;
        }
        // Another user logging in from the address takes one failure off, no more.
        attempt(&t, a, b"mallory", true).await;
        assert!(matches!(t.admit(a, b"alice").0, Admission::After { .. }));
        // The user who failed, getting it right, clears the address.
        tokio::time::sleep(2_000 * MS).await;
        attempt(&t, a, b"alice", true).await;
        assert_eq!(t.admit(a, b"alice").0, Admission::Now { suspect: false });
        fail(&t, a, 6);
        tokio::time::sleep(FORGET_AFTER).await;
        assert_eq!(t.admit(a, b"alice").0, Admission::Now { suspect: false });
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let t = Throttle::new(1, 100 * MS, 1000 * MS);
        fail(&t, ip("2001:db8:1:2::1"), 2);
        assert!(matches!(
            t.admit(ip("2001:db8:1:2::ffff"), b"u").0,
            Admission::After { .. }
        ));
        assert_eq!(
            t.admit(ip("2001:db8:1:3::1"), b"u").0,
            Admission::Now { suspect: false }
        );
        fail(&t, ip("::ffff:192.0.2.5"), 2);
        assert!(matches!(
            t.admit(ip("192.0.2.5"), b"u").0,
            Admission::After { .. }
        ));
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
                fail(&t, IpAddr::from((0x0a00_0000 + i).to_be_bytes()), 1);
            }
            assert_eq!(t.lock().len(), MAX_TRACKED);
        });
    }

    #[test]
    fn zero_base_turns_it_off() {
        let t = Throttle::new(0, Duration::ZERO, Duration::ZERO);
        let a = ip("192.0.2.1");
        let (admission, ticket) = t.admit(a, b"u");
        assert_eq!(admission, Admission::Now { suspect: false });
        assert!(ticket.is_none());
    }
}
