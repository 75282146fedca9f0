//! The rule matcher: a rule set compiled into lookup structures, so that one
//! decision costs a few hash lookups however many rules there are.
//!
//! Rules are indexed by destination: address blocks in a prefix table (one hash map
//! per prefix length in use, probed longest first), exact names in a map, wildcard
//! names (`*.example.com`) in a map of suffixes probed for the label counts that
//! occur among them, and rules for every destination by the user they name (with
//! a list for those that name none). Only the rules a lookup returns are checked
//! against the rest of the request (user, client, port, command); a long `clients`
//! list is a sorted table of ranges searched by bisection.
//!
//! Semantics: a matching `block` beats any matching `allow`; otherwise a matching
//! `allow` permits; otherwise the default policy. For a name, the name and every
//! address it resolved to are checked: any block among them blocks; it is allowed
//! by a rule that allows the name, or when every address is allowed by a rule.

use std::net::{IpAddr, SocketAddr};

use hashbrown::{HashMap, HashSet};

use crate::config::{mask4, mask6, AclCommand, AclRules, Action, Destination, Net, PortRange};

/// What is being asked: everything about a request except its destination.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The authenticated user; empty without authentication.
    pub user: &'a str,
    /// The user's groups on the system (with `acl.system_groups`; else empty).
    pub groups: &'a [Box<str>],
    pub client: IpAddr,
    pub command: AclCommand,
    pub port: u16,
}

/// What decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// The rule at this index of the set.
    Rule(usize),
    /// No rule matched: `acl.default_policy`.
    Default,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub by: By,
}

/// A rule's conditions other than the destination.
#[derive(Debug)]
struct Conditions {
    action: Action,
    /// The users named and the members of the groups named; None = everyone.
    users: Option<HashSet<Box<str>>>,
    /// With `acl.system_groups`: the groups named, matched against the user's
    /// system groups (a user matches by either set).
    groups: Option<HashSet<Box<str>>>,
    clients: Option<Clients>,
    ports: Option<Vec<PortRange>>,
    /// Bit per `AclCommand`.
    commands: u8,
}

fn bit(c: AclCommand) -> u8 {
    match c {
        AclCommand::Connect => 1,
        AclCommand::Bind => 2,
        AclCommand::Udp => 4,
    }
}

impl Conditions {
    fn matches(&self, q: &Query<'_>) -> bool {
        self.commands & bit(q.command) != 0
            && self
                .ports
                .as_ref()
                .is_none_or(|p| p.iter().any(|r| r.first <= q.port && q.port <= r.last))
            && self.users.as_ref().is_none_or(|u| {
                u.contains(q.user)
                    || self
                        .groups
                        .as_ref()
                        .is_some_and(|g| q.groups.iter().any(|n| g.contains(n)))
            })
            && self.clients.as_ref().is_none_or(|c| c.contains(q.client))
    }
}

/// A rule's `clients`: a few blocks scanned, or many as sorted, merged ranges.
#[derive(Debug)]
enum Clients {
    Few(Vec<Net>),
    Many {
        v4: Vec<(u32, u32)>,
        v6: Vec<(u128, u128)>,
    },
}

/// Up to this many blocks are scanned; more are bisected.
const SCAN_CLIENTS: usize = 8;

impl Clients {
    fn new(nets: &[Net]) -> Self {
        if nets.len() <= SCAN_CLIENTS {
            return Clients::Few(nets.to_vec());
        }
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for net in nets {
            match net.addr {
                IpAddr::V4(a) => {
                    let first = u32::from(a);
                    let last = first | u32::MAX.checked_shr(u32::from(net.len)).unwrap_or(0);
                    v4.push((first, last));
                }
                IpAddr::V6(a) => {
                    let first = u128::from(a);
                    let last = first | u128::MAX.checked_shr(u32::from(net.len)).unwrap_or(0);
                    v6.push((first, last));
                }
            }
        }
        Clients::Many {
            v4: merged(v4),
            v6: merged(v6),
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match self {
            Clients::Few(nets) => nets.iter().any(|n| n.contains(ip)),
            Clients::Many { v4, v6 } => match ip.to_canonical() {
                IpAddr::V4(a) => in_ranges(v4, u32::from(a)),
                IpAddr::V6(a) => in_ranges(v6, u128::from(a)),
            },
        }
    }
}

/// Sorted ranges with the overlapping and adjacent ones joined.
fn merged<T: Ord + Copy + num_like::Step>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match out.last_mut() {
            Some(prev) if first <= prev.1.next_or_max() => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

fn in_ranges<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let i = ranges.partition_point(|&(first, _)| first <= x);
    i > 0 && x <= ranges[i - 1].1
}

mod num_like {
    /// The next value, or the largest when there is none.
    pub trait Step {
        fn next_or_max(self) -> Self;
    }

    impl Step for u32 {
        fn next_or_max(self) -> Self {
            self.saturating_add(1)
        }
    }

    impl Step for u128 {
        fn next_or_max(self) -> Self {
            self.saturating_add(1)
        }
    }
}

/// Rule indexes by address block: one map per prefix length in use.
#[derive(Debug, Default)]
struct PrefixTable {
    /// Lengths in use, longest first.
    v4_lens: Vec<u8>,
    v6_lens: Vec<u8>,
    v4: HashMap<(u8, u32), Vec<u32>>,
    v6: HashMap<(u8, u128), Vec<u32>>,
}

impl PrefixTable {
    fn insert(&mut self, net: Net, rule: u32) {
        match net.addr {
            IpAddr::V4(a) => {
                self.v4
                    .entry((net.len, u32::from(a)))
                    .or_default()
                    .push(rule);
                insert_len(&mut self.v4_lens, net.len);
            }
            IpAddr::V6(a) => {
                self.v6
                    .entry((net.len, u128::from(a)))
                    .or_default()
                    .push(rule);
                insert_len(&mut self.v6_lens, net.len);
            }
        }
    }

    fn each(&self, ip: IpAddr, mut f: impl FnMut(u32)) {
        match ip.to_canonical() {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                for &len in &self.v4_lens {
                    if let Some(rules) = self.v4.get(&(len, mask4(bits, len))) {
                        rules.iter().for_each(|&r| f(r));
                    }
                }
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                for &len in &self.v6_lens {
                    if let Some(rules) = self.v6.get(&(len, mask6(bits, len))) {
                        rules.iter().for_each(|&r| f(r));
                    }
                }
            }
        }
    }
}

fn insert_len(lens: &mut Vec<u8>, len: u8) {
    if let Err(at) = lens.binary_search_by(|l| len.cmp(l)) {
        lens.insert(at, len);
    }
}

/// A compiled rule set.
#[derive(Debug, Default)]
pub struct RuleSet {
    conditions: Vec<Conditions>,
    default: Action,
    blocks: PrefixTable,
    names: HashMap<Box<str>, Vec<u32>>,
    below: HashMap<Box<str>, Vec<u32>>,
    /// Rules for every destination that name users (and groups), by user.
    any_by_user: HashMap<Box<str>, Vec<u32>>,
    /// The same rules by the system group they name (`acl.system_groups`).
    any_by_group: HashMap<Box<str>, Vec<u32>>,
    /// Rules for every destination that name no user.
    any: Vec<u32>,
    /// Bit n: some wildcard key has n labels (a name has at most 127).
    below_labels: u128,
}

impl RuleSet {
    pub fn new(acl: &AclRules) -> Self {
        let mut set = RuleSet {
            default: acl.default_policy,
            ..RuleSet::default()
        };
        for (i, rule) in acl.rules.iter().enumerate() {
            let i = i as u32;
            let mut users: Option<HashSet<Box<str>>> = None;
            for name in rule.users.iter().flatten() {
                users.get_or_insert_default().insert(name.as_str().into());
            }
            for group in rule.groups.iter().flatten() {
                let members = acl.groups.get(group).into_iter().flatten();
                let set = users.get_or_insert_default();
                set.extend(members.map(|m| Box::<str>::from(m.as_str())));
            }
            let groups: Option<HashSet<Box<str>>> = match acl.system_groups {
                true => rule
                    .groups
                    .as_ref()
                    .map(|g| g.iter().map(|n| Box::<str>::from(n.as_str())).collect()),
                false => None,
            };
            // A rule for every destination is found by the user (or system group)
            // it names.
            let any_users: Option<Vec<Box<str>>> =
                users.as_ref().map(|u| u.iter().cloned().collect());
            let any_groups: Vec<Box<str>> = groups.iter().flatten().cloned().collect();
            set.conditions.push(Conditions {
                action: rule.action,
                users,
                groups,
                clients: rule.clients.as_deref().map(Clients::new),
                ports: rule.ports.clone(),
                commands: rule
                    .commands
                    .as_ref()
                    .map_or(0b111, |c| c.iter().fold(0, |b, &c| b | bit(c))),
            });
            let everywhere = rule
                .destinations
                .as_ref()
                .is_none_or(|d| d.contains(&Destination::Any));
            if everywhere {
                match any_users {
                    None => set.any.push(i),
                    Some(users) => {
                        for user in users {
                            set.any_by_user.entry(user).or_default().push(i);
                        }
                        for group in any_groups {
                            set.any_by_group.entry(group).or_default().push(i);
                        }
                    }
                }
            }
            match &rule.destinations {
                None => {}
                Some(destinations) => {
                    for d in destinations {
                        match d {
                            Destination::Any => {}
                            Destination::Net(net) => set.blocks.insert(*net, i),
                            Destination::Name(n) => {
                                set.names.entry(n.as_str().into()).or_default().push(i)
                            }
                            Destination::Below(n) => {
                                set.below_labels |= 1 << n.split('.').count().min(127);
                                set.below.entry(n.as_str().into()).or_default().push(i)
                            }
                        }
                    }
                }
            }
        }
        set
    }

    /// Whether some rule names an address block: only then must a name be resolved
    /// to be decided.
    pub fn has_address_rules(&self) -> bool {
        !self.blocks.v4.is_empty() || !self.blocks.v6.is_empty()
    }

    /// The decision for `q` to a destination named `name` (lower case, no trailing
    /// dot; None for an address) that stands for `addrs`.
    pub fn decide(&self, q: &Query<'_>, name: Option<&str>, addrs: &[SocketAddr]) -> Decision {
        let mut block = None;
        // Rules for every destination: once, whatever the destination.
        let mut allow = None;
        let for_user = self.any_by_user.get(q.user).into_iter().flatten();
        let for_groups = q
            .groups
            .iter()
            .filter_map(|g| self.any_by_group.get(g))
            .flatten();
        for &r in self.any.iter().chain(for_user).chain(for_groups) {
            self.visit(q, r, &mut block, &mut allow);
        }
        if let Some(name) = name {
            self.each_name_rule(name, |r| self.visit(q, r, &mut block, &mut allow));
        }
        let mut every_address_allowed = !addrs.is_empty();
        let mut address_allow = None;
        for ip in addrs.iter().map(SocketAddr::ip) {
            let mut this = None;
            self.blocks
                .each(ip, |r| self.visit(q, r, &mut block, &mut this));
            match this {
                Some(r) => address_allow = lowest(address_allow, r),
                None => every_address_allowed = false,
            }
        }
        if let Some(r) = block {
            return Decision {
                action: Action::Block,
                by: By::Rule(r as usize),
            };
        }
        let allow = match (allow, address_allow.filter(|_| every_address_allowed)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match allow {
            Some(r) => Decision {
                action: Action::Allow,
                by: By::Rule(r as usize),
            },
            None => Decision {
                action: self.default,
                by: By::Default,
            },
        }
    }

    /// Whether a rule that names an address block containing `ip` allows `q` to it
    /// (and none blocks it): what exempts a private address from the guard.
    pub fn allows_address(&self, q: &Query<'_>, ip: IpAddr) -> bool {
        let (mut block, mut allow) = (None, None);
        self.blocks
            .each(ip, |r| self.visit(q, r, &mut block, &mut allow));
        allow.is_some() && block.is_none()
    }

    /// Checks rule `r` against `q`: a match lowers `block` or `allow`.
    #[inline]
    fn visit(&self, q: &Query<'_>, r: u32, block: &mut Option<u32>, allow: &mut Option<u32>) {
        let c = &self.conditions[r as usize];
        if c.matches(q) {
            match c.action {
                Action::Block => *block = lowest(*block, r),
                Action::Allow => *allow = lowest(*allow, r),
            }
        }
    }

    /// Rules for the exact name, then for each domain it is below.
    fn each_name_rule(&self, name: &str, mut f: impl FnMut(u32)) {
        if let Some(rules) = self.names.get(name) {
            rules.iter().for_each(|&r| f(r));
        }
        if self.below.is_empty() {
            return;
        }
        // Probe only the suffixes with as many labels as some wildcard key has.
        let mut labels = 1 + name.bytes().filter(|&b| b == b'.').count();
        for (i, b) in name.bytes().enumerate() {
            if b != b'.' {
                continue;
            }
            labels -= 1;
            if self.below_labels & (1 << labels.min(127)) != 0 {
                if let Some(rules) = self.below.get(&name[i + 1..]) {
                    rules.iter().for_each(|&r| f(r));
                }
            }
        }
    }
}

fn lowest(current: Option<u32>, r: u32) -> Option<u32> {
    Some(current.map_or(r, |c| c.min(r)))
}
