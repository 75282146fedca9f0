//! The rule matcher: a rule set compiled into lookup structures, so that one
//! decision costs a few hash lookups however many rules there are.
//!
//! Rules are indexed by destination: address blocks in a prefix table (one hash map
//! per prefix length in use, probed longest first), exact names in a map, wildcard
//! names (`*.example.com`) in a map of suffixes probed once per label of the name,
//! and rules for every destination in a list of their own. Only the rules a lookup
//! returns are checked against the rest of the request (user, client, port,
//! command).
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
    clients: Option<Vec<Net>>,
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
            && self.users.as_ref().is_none_or(|u| u.contains(q.user))
            && self
                .clients
                .as_ref()
                .is_none_or(|c| c.iter().any(|n| n.contains(q.client)))
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
    any: Vec<u32>,
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
            set.conditions.push(Conditions {
                action: rule.action,
                users,
                clients: rule.clients.clone(),
                ports: rule.ports.clone(),
                commands: rule
                    .commands
                    .as_ref()
                    .map_or(0b111, |c| c.iter().fold(0, |b, &c| b | bit(c))),
            });
            match &rule.destinations {
                None => set.any.push(i),
                Some(destinations) => {
                    for d in destinations {
                        match d {
                            Destination::Any => set.any.push(i),
                            Destination::Net(net) => set.blocks.insert(*net, i),
                            Destination::Name(n) => {
                                set.names.entry(n.as_str().into()).or_default().push(i)
                            }
                            Destination::Below(n) => {
                                set.below.entry(n.as_str().into()).or_default().push(i)
                            }
                        }
                    }
                }
            }
        }
        // A rule listing `*` next to other destinations would be found twice.
        set.any.dedup();
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
        for &r in &self.any {
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
        let mut rest = name;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(rules) = self.below.get(parent) {
                rules.iter().for_each(|&r| f(r));
            }
            rest = parent;
        }
    }
}

fn lowest(current: Option<u32>, r: u32) -> Option<u32> {
    Some(current.map_or(r, |c| c.min(r)))
}
