//! Authentication stage: decides which SOCKS5 method the server requires and checks
//! RFC 1929 credentials.
//!
//! Receives the username and password the handshake decoded; answers only "accepted"
//! or "refused" (with a reason for the log, never shown to the client). Passwords are
//! compared in constant time, argon2 hashes are verified off the async workers, and an
//! unknown user costs the same as a wrong password so that timing does not reveal
//! which names exist.

mod pam;
mod password;
mod throttle;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

pub use password::{hash_password, is_argon2_phc};

use crate::config::{AuthConfig, SocksMethod};
use crate::metrics::Metrics;
use crate::telemetry::{Signal, Telemetry};
use password::Credential;
use throttle::{Admission, Throttle, Ticket};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unknown user")]
    UnknownUser,
    #[error("wrong password")]
    WrongPassword,
    #[error("password hash of user {user} is not a valid argon2 PHC string")]
    BadHash { user: String },
    #[error("password check did not complete")]
    Interrupted(#[source] tokio::task::JoinError),
    #[error("refused unchecked: {failures} recent failed logins from this address")]
    Throttled { failures: u32 },
    /// The password was right; PAM's account checks refused (expired, locked).
    #[error("account not usable: {0}")]
    Account(String),
    /// PAM could not decide (a module missing, a directory service unreachable).
    #[error("PAM: {0}")]
    Pam(String),
    /// `socks_method = "pam"` on a system where libpam cannot be loaded.
    #[error("auth.socks_method = \"pam\": {0}")]
    PamUnavailable(String),
}

/// Where the authenticator reports held-back logins (absent in unit tests).
pub struct Report {
    pub telemetry: Telemetry,
    pub metrics: Arc<Metrics>,
}

/// The configured method and users; cheap to clone and share between connections.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    method: SocksMethod,
    /// With `socks_method = "pam"`.
    pam: Option<pam::Pam>,
    users: HashMap<Vec<u8>, Credential>,
    /// Verified against when the user is unknown, so that the answer takes as long as
    /// for a known user. Same kind as the configured credentials (hash if any is one).
    decoy: Credential,
    /// Hash checks running at once: one per CPU. Each takes tens of milliseconds and
    /// ~19 MiB; without a bound, anyone able to open connections could queue them
    /// without limit on the blocking pool. A check waits for a slot inside the
    /// handshake's deadline, so a client that gives up leaves nothing queued.
    hash_slots: Arc<Semaphore>,
    /// Taken before a hash slot by a check from an address with recent failures:
    /// such checks hold at most half the slots (at least one), so that a password
    /// guesser cannot keep the others' logins waiting.
    suspect_slots: Arc<Semaphore>,
    throttle: Throttle,
    /// Set once at start-up, after the metrics exist (see `report_to`).
    report: std::sync::OnceLock<Report>,
    #[cfg(test)]
    peak: probe::Peak,
}

impl Authenticator {
    /// The method and users of `config`, holding logins back at most `auth.login_backoff_max_ms`.
    pub fn from_config(config: &AuthConfig) -> Result<Self, AuthError> {
        Self::new(config, config.login_backoff_max())
    }

    /// As `from_config`, holding logins back at most `backoff_limit` (the server
    /// passes `Config::login_backoff_limit`, which keeps it inside the handshake's
    /// deadline).
    pub fn new(config: &AuthConfig, backoff_limit: std::time::Duration) -> Result<Self, AuthError> {
        let pam = match config.socks_method {
            SocksMethod::Pam => {
                Some(pam::Pam::load(&config.pam_service).map_err(AuthError::PamUnavailable)?)
            }
            _ => None,
        };
        let mut users = HashMap::new();
        for user in &config.users {
            let credential = match (&user.password, &user.password_hash) {
                (_, Some(hash)) => {
                    Credential::hashed(hash.expose()).ok_or_else(|| AuthError::BadHash {
                        user: user.username.clone(),
                    })?
                }
                (Some(plain), None) => Credential::Plain(plain.expose().as_bytes().to_vec()),
                (None, None) => continue,
            };
            users.insert(user.username.as_bytes().to_vec(), credential);
        }
        // With any hashed user, every check must cost a hash check: plain passwords are
        // hashed now with the same parameters, and so is the decoy. Otherwise a
        // plain-text user would answer in microseconds and an unknown name in tens of
        // milliseconds, and timing would tell which names exist.
        // The costliest parameters among the hashes: an unknown name then costs at
        // least as much as any known one (give all hashes the same parameters, as
        // `rustsocks hash-password` does, and they cost exactly the same).
        let params = users
            .values()
            .filter_map(Credential::params)
            .max_by_key(|p| u64::from(p.m_cost()) * u64::from(p.t_cost()) * u64::from(p.p_cost()));
        if let Some(params) = &params {
            users = users
                .into_iter()
                .map(|(name, c)| (name, c.hardened(params)))
                .collect();
        }
        let decoy = Credential::decoy(params.as_ref());
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            inner: Arc::new(Inner {
                method: config.socks_method,
                pam,
                users,
                decoy,
                hash_slots: Arc::new(Semaphore::new(cpus)),
                suspect_slots: Arc::new(Semaphore::new((cpus / 2).max(1))),
                throttle: Throttle::new(
                    config.login_failures_before_backoff,
                    config.login_backoff(),
                    backoff_limit,
                ),
                report: std::sync::OnceLock::new(),
                #[cfg(test)]
                peak: probe::Peak::default(),
            }),
        })
    }

    /// Where held-back logins are reported from now on (set once; later calls are
    /// ignored).
    pub fn report_to(&self, report: Report) {
        let _ = self.inner.report.set(report);
    }

    pub fn method(&self) -> SocksMethod {
        self.inner.method
    }

    /// Checks a username and password sent from `client`. An address with recent
    /// failures waits its turn first (see `throttle`). Hash verification (tens of
    /// milliseconds of CPU) runs on the blocking pool so it does not stall other
    /// connections.
    pub async fn verify(
        &self,
        client: IpAddr,
        username: &[u8],
        password: &[u8],
    ) -> Result<(), AuthError> {
        let (admission, ticket) = self.inner.throttle.admit(client, username);
        let suspect = match admission {
            Admission::Now { suspect } => suspect,
            Admission::After { delay, failures } => {
                self.held_back(client, failures, delay, "delayed");
                tokio::time::sleep(delay).await;
                true
            }
            Admission::Refused { failures } => {
                // The answer is no, but it is not given at once: a guesser opening
                // connections as fast as it can would otherwise cost the server an
                // accept and a handshake per guess, thousands a second. Held, each
                // connection costs a sleeping task, and guesses come only as fast as
                // the guesser's connections (bounded by max_connections_per_ip).
                let hold = self.inner.throttle.max_delay();
                self.held_back(client, failures, hold, "refused");
                tokio::time::sleep(hold).await;
                return Err(AuthError::Throttled { failures });
            }
        };
        let checked = self
            .check(username, password, suspect, ticket.as_ref())
            .await;
        if let Some(ticket) = ticket {
            // A guess stopped at the gate counts as a failure too.
            ticket.finish(checked.is_ok());
        }
        checked
    }

    fn held_back(&self, client: IpAddr, failures: u32, delay: Duration, outcome: &'static str) {
        if let Some(report) = self.inner.report.get() {
            report
                .metrics
                .auth_throttled
                .get_or_create(&[("outcome", outcome)])
                .inc();
            report.telemetry.emit(Signal::AuthThrottled {
                client,
                failures,
                delay,
            });
        }
    }

    /// Checks the password; `ticket` is looked at again just before the check (see
    /// `throttle::Ticket::stopped`).
    async fn check(
        &self,
        username: &[u8],
        password: &[u8],
        suspect: bool,
        ticket: Option<&Ticket<'_>>,
    ) -> Result<(), AuthError> {
        let stopped = || match ticket.and_then(Ticket::stopped) {
            Some(failures) => Err(AuthError::Throttled { failures }),
            None => Ok(()),
        };
        if self.inner.pam.is_some() {
            return self.check_pam(username, password, suspect, stopped).await;
        }
        let known = self.inner.users.contains_key(username);
        let credential = self.inner.users.get(username).unwrap_or(&self.inner.decoy);
        let matches = if credential.is_hashed() {
            let (slot, suspect_slot) = self.slots(suspect).await;
            stopped()?;
            let inner = Arc::clone(&self.inner);
            let (username, password) = (username.to_vec(), password.to_vec());
            tokio::task::spawn_blocking(move || {
                let matches = {
                    #[cfg(test)]
                    let _running = inner.peak.enter();
                    let credential = inner.users.get(&username).unwrap_or(&inner.decoy);
                    credential.matches(&password)
                };
                drop(slot);
                drop(suspect_slot);
                matches
            })
            .await
            .map_err(AuthError::Interrupted)?
        } else {
            stopped()?;
            credential.matches(password)
        };
        match (known, matches) {
            (true, true) => Ok(()),
            (true, false) => Err(AuthError::WrongPassword),
            (false, _) => Err(AuthError::UnknownUser),
        }
    }
}

impl Authenticator {
    /// A place among the checks that may run at once (one per CPU), and for a
    /// `suspect` address (one with recent failures) also among the fewer its kind
    /// may take, so that guessers cannot keep everyone else's logins waiting.
    async fn slots(
        &self,
        suspect: bool,
    ) -> (
        tokio::sync::OwnedSemaphorePermit,
        Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let suspect_slot = match suspect {
            true => Some(
                Arc::clone(&self.inner.suspect_slots)
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed"),
            ),
            false => None,
        };
        let slot = Arc::clone(&self.inner.hash_slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        (slot, suspect_slot)
    }

    /// The PAM check, on the blocking pool under the same bounds as a hash check:
    /// a module may take long (a directory server, a failure delay), and a guesser
    /// must not be able to take every blocking thread.
    async fn check_pam(
        &self,
        username: &[u8],
        password: &[u8],
        suspect: bool,
        stopped: impl Fn() -> Result<(), AuthError>,
    ) -> Result<(), AuthError> {
        let (slot, suspect_slot) = self.slots(suspect).await;
        stopped()?;
        let inner = Arc::clone(&self.inner);
        let (username, password) = (username.to_vec(), password.to_vec());
        let result = tokio::task::spawn_blocking(move || {
            let result = match &inner.pam {
                Some(pam) => pam.check(&username, &password),
                None => Err(pam::PamDenied::Error("PAM is not loaded".into())),
            };
            drop(slot);
            drop(suspect_slot);
            result
        })
        .await
        .map_err(AuthError::Interrupted)?;
        result.map_err(|denied| match denied {
            pam::PamDenied::UnknownUser => AuthError::UnknownUser,
            pam::PamDenied::WrongPassword => AuthError::WrongPassword,
            pam::PamDenied::Account(words) => AuthError::Account(words),
            pam::PamDenied::Error(words) => AuthError::Pam(words),
        })
    }
}

/// Counts hash checks running at once, and the most seen, for the tests.
#[cfg(test)]
mod probe {
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    pub struct Peak {
        now: AtomicUsize,
        pub max: AtomicUsize,
    }

    pub struct Running<'a>(&'a Peak);

    impl Peak {
        pub fn enter(&self) -> Running<'_> {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.max.fetch_max(n, Ordering::SeqCst);
            Running(self)
        }
    }

    impl Drop for Running<'_> {
        fn drop(&mut self) {
            self.0.now.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, UserEntry};

    fn config(users: Vec<UserEntry>) -> AuthConfig {
        AuthConfig {
            socks_method: SocksMethod::Userpass,
            users,
            ..AuthConfig::default()
        }
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// A different client address for each `i`.
    fn client(i: usize) -> IpAddr {
        IpAddr::from([192, 0, 2, i as u8])
    }

    fn user(name: &str, password: Option<&str>, hash: Option<String>) -> UserEntry {
        UserEntry {
            username: name.into(),
            password: password.map(Secret::new),
            password_hash: hash.map(Secret::new),
        }
    }

    #[tokio::test]
    async fn plain_and_hashed_passwords_are_checked() {
        let hash = hash_password("s3cret").unwrap();
        let auth = Authenticator::from_config(&config(vec![
            user("alice", Some("secret"), None),
            user("bob", None, Some(hash)),
        ]))
        .unwrap();
        // With a hashed user present, every check costs the same hash check.
        let inner = &auth.inner;
        assert!(inner.users.values().all(Credential::is_hashed));
        let bob = inner.users[b"bob".as_slice()].params().unwrap();
        assert_eq!(inner.decoy.params().unwrap(), bob);
        assert_eq!(inner.users[b"alice".as_slice()].params().unwrap(), bob);
        assert!(auth.verify(LOCAL, b"alice", b"secret").await.is_ok());
        assert!(matches!(
            auth.verify(LOCAL, b"alice", b"secreT").await,
            Err(AuthError::WrongPassword)
        ));
        assert!(matches!(
            auth.verify(LOCAL, b"alice", b"").await,
            Err(AuthError::WrongPassword)
        ));
        assert!(auth.verify(LOCAL, b"bob", b"s3cret").await.is_ok());
        assert!(matches!(
            auth.verify(LOCAL, b"bob", b"secret").await,
            Err(AuthError::WrongPassword)
        ));
        assert!(matches!(
            auth.verify(LOCAL, b"carol", b"secret").await,
            Err(AuthError::UnknownUser)
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hash_checks_run_at_most_one_per_cpu_and_none_after_the_client_left() {
        let hash = hash_password("s3cret").unwrap();
        let auth =
            Authenticator::from_config(&config(vec![user("bob", None, Some(hash))])).unwrap();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let checks: Vec<_> = (0..cpus * 2)
            .map(|i| {
                let auth = auth.clone();
                let name = if i % 2 == 0 { "bob" } else { "mallory" };
                tokio::spawn(async move { auth.verify(client(i), name.as_bytes(), b"guess").await })
            })
            .collect();
        for c in checks {
            assert!(c.await.unwrap().is_err());
        }
        let max = auth
            .inner
            .peak
            .max
            .load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            (1..=cpus).contains(&max),
            "{max} checks at once, {cpus} CPUs"
        );
        // A check whose client gave up while waiting for a slot never runs.
        let slots = Arc::clone(&auth.inner.hash_slots);
        let all = slots.acquire_many(cpus as u32).await.unwrap();
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            auth.verify(LOCAL, b"bob", b"guess"),
        )
        .await;
        assert!(waiting.is_err(), "verified without a slot");
        drop(all);
        assert_eq!(
            slots.available_permits(),
            cpus,
            "the abandoned check kept a slot"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checks_from_failing_addresses_yield_to_others() {
        let hash = hash_password("s3cret").unwrap();
        let mut cfg = config(vec![user("bob", None, Some(hash))]);
        // No hold-back here: only the priority of the checks is under test.
        cfg.login_failures_before_backoff = 100;
        let auth = Authenticator::from_config(&cfg).unwrap();
        let guesser = client(1);
        assert!(auth.verify(guesser, b"bob", b"wrong").await.is_err());
        // Every place for checks of failing addresses is taken (by other guesses).
        let suspects = Arc::clone(&auth.inner.suspect_slots);
        let all = suspects.available_permits() as u32;
        let held = suspects.acquire_many(all).await.unwrap();
        let queued = tokio::time::timeout(
            Duration::from_millis(300),
            auth.verify(guesser, b"bob", b"s3cret"),
        )
        .await;
        assert!(queued.is_err(), "a failing address's check took a slot");
        let other = tokio::time::timeout(
            Duration::from_secs(10),
            auth.verify(client(2), b"bob", b"s3cret"),
        )
        .await;
        assert!(other.expect("another address waited").is_ok());
        drop(held);
        assert!(auth.verify(guesser, b"bob", b"s3cret").await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_that_keeps_failing_waits_and_others_do_not() {
        let cfg = AuthConfig {
            login_failures_before_backoff: 3,
            login_backoff_ms: 100,
            login_backoff_max_ms: 2_000,
            ..config(vec![user("alice", Some("secret"), None)])
        };
        let auth = Authenticator::from_config(&cfg).unwrap();
        let guesser = client(1);
        for _ in 0..19 {
            let _ = auth.verify(guesser, b"alice", b"guess").await;
        }
        // The 20th wrong password waits (virtual time: the test does not).
        let started = tokio::time::Instant::now();
        assert!(auth.verify(guesser, b"alice", b"guess").await.is_err());
        assert_eq!(started.elapsed(), Duration::from_millis(2_000));
        // A different address does not, and logs in.
        let started = tokio::time::Instant::now();
        assert!(auth.verify(client(2), b"alice", b"secret").await.is_ok());
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[test]
    fn bad_hash_is_refused_with_the_user_named() {
        let err = Authenticator::from_config(&config(vec![user("eve", None, Some("$x$".into()))]))
            .err()
            .expect("error");
        assert_eq!(
            err.to_string(),
            "password hash of user eve is not a valid argon2 PHC string"
        );
    }
}
