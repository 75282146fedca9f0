//! Access rules: the live rule set, the per-request check the connector asks, the
//! destination guard applied with it, and reloading.
//!
//! The rule set in force is one `Arc<Policy>` behind an `ArcSwap`: a request takes
//! a reference (an atomic increment, no lock) and keeps deciding with that one
//! policy; a reload builds a whole new policy first and swaps it in, so a request
//! never sees half of a reload.

mod matcher;
mod reload;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;

pub use matcher::{By, Decision, Query, RuleSet};
pub use reload::{recheck_sessions, AclControl, ReloadError, Reloaded};

use super::guard::private_range;
use super::own::OwnAddresses;
use super::SystemGroups;
use crate::config::{is_host_name, normalise_name, AclCommand, AclConfig, AclRules, Action};
use crate::connector::{DestinationCheck, Refusal};
use crate::metrics::Metrics;
use crate::protocol::TargetAddr;

/// A rule set as loaded, compiled, with the guard setting it came with.
#[derive(Debug)]
pub struct Policy {
    pub acl: AclRules,
    pub set: RuleSet,
    /// `acl.block_private_destinations` after its default was applied.
    pub guard: bool,
    pub loaded_at: SystemTime,
    /// Which load this is (0 at start-up, one more per reload): what a UDP
    /// association compares to know its cached decisions are stale.
    pub generation: u64,
}

/// What decided a request, with the guard and the proxy's own addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed(By),
    Blocked(By),
    /// A private address, with the guard on and no rule allowing its block.
    Private {
        addr: IpAddr,
        range: &'static str,
    },
    /// One of the proxy's own listening addresses: never a destination.
    Own(SocketAddr),
    /// A name that is not a host name (see `config::is_host_name`): never looked up.
    BadName,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        matches!(self, Verdict::Allowed(_))
    }
}

impl Policy {
    /// `loopback_listener`: whether the SOCKS listener is loopback-only (the guard's
    /// default is off there: a local user can reach local services anyway).
    pub fn new(acl: AclRules, loopback_listener: bool) -> Self {
        Self {
            set: RuleSet::new(&acl),
            guard: acl.block_private_destinations.unwrap_or(!loopback_listener),
            acl,
            loaded_at: SystemTime::now(),
            generation: 0,
        }
    }

    /// Whether a name must be resolved to be decided.
    pub fn needs_addresses(&self) -> bool {
        self.guard || self.set.has_address_rules()
    }

    /// The verdict for `q` to `dest`, which stands for `addrs` (for a name: every
    /// address of its resolution, or none when `needs_addresses` is false).
    pub fn judge(
        &self,
        own: &OwnAddresses,
        q: &Query<'_>,
        dest: &TargetAddr,
        addrs: &[SocketAddr],
    ) -> Verdict {
        if is_bad_name(dest) {
            return Verdict::BadName;
        }
        if let Some(&addr) = addrs.iter().find(|a| own.contains(**a)) {
            return Verdict::Own(addr);
        }
        let name = match dest {
            TargetAddr::Domain(host, _) if host.parse::<IpAddr>().is_err() => {
                Some(comparable_name(host))
            }
            _ => None,
        };
        let decision = self.set.decide(q, name.as_deref(), addrs);
        if decision.action == Action::Block {
            return Verdict::Blocked(decision.by);
        }
        if self.guard {
            for ip in addrs.iter().map(SocketAddr::ip) {
                if let Some(range) = private_range(ip) {
                    if !self.set.allows_address(q, ip) {
                        return Verdict::Private {
                            addr: ip.to_canonical(),
                            range,
                        };
                    }
                }
            }
        }
        Verdict::Allowed(decision.by)
    }

    /// Why a blocked verdict blocked, for the client's record and the log.
    pub fn reason(&self, verdict: &Verdict) -> String {
        match verdict {
            Verdict::Blocked(By::Rule(i)) | Verdict::Allowed(By::Rule(i)) => {
                let rule = &self.acl.rules[*i];
                match rule.description.is_empty() {
                    true => format!("{} by {}", rule.action.as_str(), rule.origin),
                    false => format!(
                        "{} by {} ({})",
                        rule.action.as_str(),
                        rule.origin,
                        rule.description
                    ),
                }
            }
            Verdict::Blocked(By::Default) | Verdict::Allowed(By::Default) => format!(
                "{} by acl.default_policy (no rule matched)",
                self.acl.default_policy.as_str()
            ),
            Verdict::Private { addr, range } => {
                format!("block by acl.block_private_destinations: {addr} is {range}")
            }
            Verdict::Own(addr) => {
                format!("block: {addr} is one of this proxy's own listening addresses")
            }
            Verdict::BadName => "block: not a host name (letters, digits, '-', '_' and dots \
                                 only); it is not looked up"
                .to_owned(),
        }
    }
}

/// A domain destination that is neither an address nor a host name.
fn is_bad_name(dest: &TargetAddr) -> bool {
    match dest {
        TargetAddr::Domain(host, _) => host.parse::<IpAddr>().is_err() && !is_host_name(host),
        TargetAddr::Ip(_) => false,
    }
}

/// A name as rules compare it, borrowed when it already is in that form.
fn comparable_name(host: &str) -> Cow<'_, str> {
    if host.ends_with('.') || host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(normalise_name(host).unwrap_or_default())
    } else {
        Cow::Borrowed(host)
    }
}

/// Counters of decisions, one handle per series (an atomic add per decision).
#[derive(Debug, Clone)]
struct Decisions {
    allow_rule: Counter,
    allow_default: Counter,
    block_rule: Counter,
    block_default: Counter,
    block_private: Counter,
    block_own: Counter,
    block_bad_name: Counter,
}

impl Decisions {
    fn new(metrics: &Metrics) -> Self {
        let get = |decision, by| {
            metrics
                .acl_decisions
                .get_or_create(&[("decision", decision), ("by", by)])
                .clone()
        };
        Self {
            allow_rule: get("allow", "rule"),
            allow_default: get("allow", "default"),
            block_rule: get("block", "rule"),
            block_default: get("block", "default"),
            block_private: get("block", "private_destination"),
            block_own: get("block", "own_address"),
            block_bad_name: get("block", "invalid_name"),
        }
    }

    fn count(&self, v: &Verdict) {
        match v {
            Verdict::Allowed(By::Rule(_)) => &self.allow_rule,
            Verdict::Allowed(By::Default) => &self.allow_default,
            Verdict::Blocked(By::Rule(_)) => &self.block_rule,
            Verdict::Blocked(By::Default) => &self.block_default,
            Verdict::Private { .. } => &self.block_private,
            Verdict::Own(_) => &self.block_own,
            Verdict::BadName => &self.block_bad_name,
        }
        .inc();
    }
}

/// The access stage as the server uses it: the rules in force and how to reload.
#[derive(Debug)]
pub struct Access {
    live: ArcSwap<Policy>,
    own: OwnAddresses,
    loopback_listener: bool,
    /// The main configuration file, whose `[acl]` a reload re-reads; None when the
    /// server runs on the embedded defaults.
    config_file: Option<PathBuf>,
    /// The `[acl]` section the server started with: what a reload re-reads
    /// `acl.file` by when there is no configuration file.
    started_with: AclConfig,
    decisions: Decisions,
    /// One reload at a time (a signal, a file change and the API can coincide).
    reloading: Mutex<()>,
    /// Users' system groups (`acl.system_groups`), cached.
    system_groups: Arc<SystemGroups>,
}

impl Access {
    pub fn new(
        config: &AclConfig,
        rules: AclRules,
        config_file: Option<PathBuf>,
        loopback_listener: bool,
        own: OwnAddresses,
        metrics: &Metrics,
    ) -> Self {
        Self {
            live: ArcSwap::from_pointee(Policy::new(rules, loopback_listener)),
            own,
            loopback_listener,
            config_file,
            started_with: config.clone(),
            decisions: Decisions::new(metrics),
            reloading: Mutex::new(()),
            system_groups: Arc::default(),
        }
    }

    /// `user`'s system groups when the rules in force use them
    /// (`acl.system_groups`), else none; off the async workers on a cache miss.
    pub async fn groups_of(&self, user: &str) -> Arc<[Box<str>]> {
        match self.live.load().acl.system_groups && !user.is_empty() {
            true => self.system_groups.lookup(user).await,
            false => Arc::from(Vec::new()),
        }
    }

    /// `groups_of`, blocking (for a reload, which runs on the blocking pool).
    pub fn groups_of_blocking(&self, user: &str) -> Arc<[Box<str>]> {
        match self.live.load().acl.system_groups && !user.is_empty() {
            true => self.system_groups.lookup_blocking(user),
            false => Arc::from(Vec::new()),
        }
    }

    /// The rules in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.live.load_full()
    }

    /// The generation of the rules in force (see `Policy::generation`).
    pub fn generation(&self) -> u64 {
        self.live.load().generation
    }

    pub fn own(&self) -> &OwnAddresses {
        &self.own
    }

    /// The check for one request; it decides with the rules in force now for the
    /// whole request.
    pub fn check<'a>(
        &'a self,
        user: &'a str,
        groups: &'a [Box<str>],
        client: IpAddr,
        command: AclCommand,
    ) -> Check<'a> {
        Check {
            access: self,
            policy: self.policy(),
            user,
            groups,
            client,
            command,
        }
    }

    /// Judges and counts one decision.
    pub fn judge(
        &self,
        policy: &Policy,
        q: &Query<'_>,
        dest: &TargetAddr,
        addrs: &[SocketAddr],
    ) -> Verdict {
        let verdict = policy.judge(&self.own, q, dest, addrs);
        self.decisions.count(&verdict);
        verdict
    }
}

/// One request's check (see `Access::check`).
pub struct Check<'a> {
    access: &'a Access,
    policy: Arc<Policy>,
    user: &'a str,
    groups: &'a [Box<str>],
    client: IpAddr,
    command: AclCommand,
}

impl<'a> Check<'a> {
    /// The generation of the rules this check decides with.
    pub fn generation(&self) -> u64 {
        self.policy.generation
    }

    /// Whether the rules this check decides with are still the ones in force.
    pub fn is_current(&self) -> bool {
        self.access.generation() == self.policy.generation
    }

    /// The same check with the rules in force now.
    pub fn renewed(&self) -> Check<'a> {
        self.access
            .check(self.user, self.groups, self.client, self.command)
    }

    fn query(&self, port: u16) -> Query<'_> {
        Query {
            user: self.user,
            groups: self.groups,
            client: self.client,
            command: self.command,
            port,
        }
    }

    /// The verdict for `dest` standing for `addrs`, counted.
    pub fn verdict(&self, dest: &TargetAddr, addrs: &[SocketAddr]) -> Verdict {
        self.access
            .judge(&self.policy, &self.query(dest.port()), dest, addrs)
    }

    /// The verdict when a rule blocks `dest` (a name, or None for "any
    /// destination") on its own: no address it could resolve to would change it,
    /// since a block beats every allow. Counted when it blocks.
    pub fn blocked_whatever_the_addresses(&self, dest: &TargetAddr) -> Option<Verdict> {
        if is_bad_name(dest) {
            self.access.decisions.count(&Verdict::BadName);
            return Some(Verdict::BadName);
        }
        let q = self.query(dest.port());
        let name = match dest {
            TargetAddr::Domain(host, _) => Some(comparable_name(host)),
            TargetAddr::Ip(_) => None,
        };
        let decision = self.policy.set.decide(&q, name.as_deref(), &[]);
        match decision {
            Decision {
                action: Action::Block,
                by: By::Rule(i),
            } => {
                let verdict = Verdict::Blocked(By::Rule(i));
                self.access.decisions.count(&verdict);
                Some(verdict)
            }
            _ => None,
        }
    }

    /// `Refusal` for a verdict that blocks.
    pub fn refusal(&self, verdict: &Verdict) -> Refusal {
        Refusal {
            label: match verdict {
                Verdict::Private { .. } => "private_destination",
                Verdict::Own(_) => "own_address",
                _ => "acl",
            },
            reason: self.policy.reason(verdict).into(),
        }
    }
}

impl DestinationCheck for Check<'_> {
    fn needs_addresses(&self) -> bool {
        self.policy.needs_addresses()
    }

    fn check_name(&self, dest: &TargetAddr) -> Result<(), Refusal> {
        match self.blocked_whatever_the_addresses(dest) {
            Some(verdict) => Err(self.refusal(&verdict)),
            None => Ok(()),
        }
    }

    fn check(&self, dest: &TargetAddr, addrs: &[SocketAddr]) -> Result<(), Refusal> {
        let verdict = self.verdict(dest, addrs);
        match verdict.allowed() {
            true => Ok(()),
            false => Err(self.refusal(&verdict)),
        }
    }
}
