//! One access decision (`RuleSet::decide`) against rule sets of 0, 1,000 and 10,000
//! rules, built from TOML text the way the server builds them (`Config::from_toml`,
//! `acl.load()`, `RuleSet::new`).
//!
//! The rules are generated from a fixed seed: address blocks v4 (/8 to /32) and v6
//! (/32 to /128), exact names, wildcard names, a tenth of rules listing two kinds,
//! half with a condition besides the destination (users, groups, ports, commands,
//! clients), 30 % `allow` and the rest `block`, and a few `*` rules (which every
//! decision checks). Four probe rules in the middle of the list are what the
//! matching cases hit; the fixture asserts each case's decision, so a case cannot
//! silently measure something else.
//!
//! Cases (all CONNECT from user `alice` at 172.16.0.9 to port 443):
//! - `ip_match`: 203.0.113.7, inside a /24 a probe rule blocks;
//! - `ip_default`: 198.18.0.1, in no block (the default policy decides);
//! - `name_wildcard`: img.eu.cdn.example.net, below `*.cdn.example.net`, no addresses
//!   (what the connector passes when no rule names an address block);
//! - `name_and_2_addrs`: www.shop.example.org (an exact-name rule) with the two
//!   addresses it resolved to (198.18.0.10 and 2001:db8:ffff::10, in no block).
//!
//! `stress_default` shows what the index does not cover (see there); `load_from_toml`
//! and `compile` are the one-off costs of a (re)load, for scale.
//!
//! Run: `cargo bench --bench acl_decide`.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use divan::{black_box, Bencher};
use rustsocks::access::acl::{By, Decision, Query, RuleSet};
use rustsocks::config::{AclCommand, AclRules, Action, Config};

const SIZES: [usize; 3] = [0, 1_000, 10_000];

fn main() {
    divan::main();
}

/// xorshift64*: a fixed, dependency-free sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const GROUPS: usize = 20;
const MEMBERS: usize = 10;

/// A v4 block in 11.0.0.0–100.255.255.255 (never 172.16/12, 198.18/15 or
/// 203.0.113/24, which the probes use).
fn v4_block(rng: &mut Rng) -> String {
    let len = *rng.pick(&[8u8, 12, 16, 16, 20, 24, 24, 24, 28, 32, 32]);
    let first = 11 + rng.below(90) as u32;
    let bits = (first << 24) | (rng.next() as u32 & 0x00ff_ffff);
    let masked = bits & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    format!("{}/{len}", std::net::Ipv4Addr::from(masked))
}

/// A v6 block under 2400::/8 (never 2001:db8::/32, which the probes use).
fn v6_block(rng: &mut Rng) -> String {
    let len = *rng.pick(&[32u8, 48, 48, 56, 64, 64, 128]);
    let bits = (0x24u128 << 120) | (u128::from(rng.next()) << 56) | u128::from(rng.next());
    let masked = bits & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    format!("{}/{len}", std::net::Ipv6Addr::from(masked))
}

fn destination(rng: &mut Rng, i: usize, kind: u64) -> String {
    match kind {
        0..=39 => v4_block(rng),
        40..=54 => v6_block(rng),
        55..=74 => format!(
            "host{i}.{}.corp{}.example",
            rng.pick(&["eng", "ops", "sales", "hr"]),
            rng.below(50)
        ),
        _ => format!(
            "*.{}{i}.{}",
            rng.pick(&["svc", "tenant", "app"]),
            rng.pick(&["example.com", "cloud.example", "internal.example.net"])
        ),
    }
}

/// `[acl]` with `n` rules (plus the four probes when `n > 0`).
fn rules_toml(n: usize) -> String {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut t =
        String::from("[acl]\ndefault_policy = \"allow\"\nblock_private_destinations = false\n");
    if n == 0 {
        return t;
    }
    for g in 0..GROUPS {
        let members: Vec<String> = (0..MEMBERS).map(|m| format!("\"user{g}_{m}\"")).collect();
        let _ = writeln!(
            t,
            "[[acl.groups]]\nname = \"team{g}\"\nmembers = [{}]",
            members.join(", ")
        );
    }
    // `*` rules: a few, spread over the list; each has a condition that the
    // benchmark's query does not meet, so every decision checks and passes them.
    let any_rules = [
        "action = \"block\"\nusers = [\"guest\", \"anonymous\"]\ndestinations = [\"*\"]",
        "action = \"block\"\nclients = [\"192.0.2.0/24\"]\ncommands = [\"udp\"]",
        "action = \"block\"\ndestinations = [\"*\"]\nports = [25, \"6660-6669\"]",
        "action = \"allow\"\ngroups = [\"team3\"]\ncommands = [\"bind\"]\ndestinations = [\"*\"]",
    ];
    let any_count = (n / 2_000).max(2);
    for i in 0..n {
        if i == n / 2 {
            t.push_str(PROBES);
        }
        t.push_str("[[acl.rules]]\n");
        if i % (n / any_count) == n / any_count / 2 {
            let _ = writeln!(t, "{}", any_rules[(i / (n / any_count)) % any_rules.len()]);
            continue;
        }
        let action = if rng.below(100) < 30 {
            "allow"
        } else {
            "block"
        };
        let _ = writeln!(t, "action = \"{action}\"");
        let kind = rng.below(100);
        let mut dests = vec![destination(&mut rng, i, kind)];
        // Some rules list more of the same kind, a tenth list a second kind.
        for _ in 0..rng.below(3) {
            if kind < 55 {
                dests.push(destination(&mut rng, i, kind));
            }
        }
        if rng.below(10) == 0 {
            dests.push(destination(&mut rng, i, (kind + 40) % 100));
        }
        let quoted: Vec<String> = dests.iter().map(|d| format!("\"{d}\"")).collect();
        let _ = writeln!(t, "destinations = [{}]", quoted.join(", "));
        match rng.below(20) {
            0 | 1 => {
                let _ = writeln!(
                    t,
                    "users = [\"user{}_{}\", \"svc-{i}\"]",
                    rng.below(GROUPS as u64),
                    rng.below(MEMBERS as u64)
                );
            }
            2 | 3 => {
                let _ = writeln!(t, "groups = [\"team{}\"]", rng.below(GROUPS as u64));
            }
            4..=6 => {
                let _ = writeln!(t, "ports = [22, 3389, \"8000-8999\"]");
            }
            7 => {
                let _ = writeln!(t, "commands = [\"bind\", \"udp\"]");
            }
            8 | 9 => {
                let _ = writeln!(t, "clients = [\"10.{}.0.0/16\"]", rng.below(256));
            }
            _ => {}
        }
        if rng.below(4) == 0 {
            let _ = writeln!(t, "description = \"generated rule {i}\"");
        }
    }
    t
}

/// The rules the matching cases hit, inserted in the middle of the list.
const PROBES: &str = r#"[[acl.rules]]
action = "block"
destinations = ["203.0.113.0/24"]
description = "probe: ip_match"
[[acl.rules]]
action = "allow"
destinations = ["*.cdn.example.net"]
description = "probe: name_wildcard"
[[acl.rules]]
action = "allow"
destinations = ["www.shop.example.org"]
ports = [80, 443]
description = "probe: name_and_2_addrs"
[[acl.rules]]
action = "block"
users = ["mallory"]
destinations = ["2001:db8::/32", "198.18.0.0/15"]
description = "probe: in the blocks of the default case, for another user"
"#;

fn load(text: &str) -> AclRules {
    Config::from_toml(text)
        .expect("the generated rules parse")
        .acl
        .load()
        .unwrap_or_else(|p| panic!("the generated rules are valid: {p:?}"))
}

fn query() -> Query<'static> {
    Query {
        user: "alice",
        groups: &[],
        client: IpAddr::from([172, 16, 0, 9]),
        command: AclCommand::Connect,
        port: 443,
    }
}

fn addr(s: &str) -> SocketAddr {
    SocketAddr::new(s.parse().unwrap(), 443)
}

struct Fixture {
    acl: AclRules,
    set: RuleSet,
    /// Index of the first probe rule.
    probe: usize,
}

fn fixture(n: usize) -> &'static Fixture {
    static F: [OnceLock<Fixture>; SIZES.len()] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let at = SIZES.iter().position(|&s| s == n).expect("a size in SIZES");
    F[at].get_or_init(|| {
        let acl = load(&rules_toml(n));
        let set = RuleSet::new(&acl);
        let probe = acl
            .rules
            .iter()
            .position(|r| r.description == "probe: ip_match")
            .unwrap_or(0);
        assert_eq!(acl.rules.len(), if n == 0 { 0 } else { n + 4 });
        let f = Fixture { acl, set, probe };
        f.check();
        f
    })
}

impl Fixture {
    /// Each case decides as its name says.
    fn check(&self) {
        let rule = |k: usize, action| match self.acl.rules.is_empty() {
            true => Decision {
                action: Action::Allow,
                by: By::Default,
            },
            false => Decision {
                action,
                by: By::Rule(self.probe + k),
            },
        };
        let default = Decision {
            action: Action::Allow,
            by: By::Default,
        };
        let q = query();
        assert_eq!(
            self.set.decide(&q, None, &IP_MATCH.map(addr)),
            rule(0, Action::Block)
        );
        assert_eq!(self.set.decide(&q, None, &IP_DEFAULT.map(addr)), default);
        assert_eq!(
            self.set.decide(&q, Some(WILDCARD), &[]),
            rule(1, Action::Allow)
        );
        assert_eq!(
            self.set.decide(&q, Some(NAME), &NAME_ADDRS.map(addr)),
            rule(2, Action::Allow)
        );
        // The fourth probe blocks the default case's addresses for mallory.
        if !self.acl.rules.is_empty() {
            let m = Query {
                user: "mallory",
                ..q
            };
            assert_eq!(
                self.set.decide(&m, None, &IP_DEFAULT.map(addr)),
                rule(3, Action::Block)
            );
        }
    }
}

const IP_MATCH: [&str; 1] = ["203.0.113.7"];
const IP_DEFAULT: [&str; 1] = ["198.18.0.1"];
const WILDCARD: &str = "img.eu.cdn.example.net";
const NAME: &str = "www.shop.example.org";
const NAME_ADDRS: [&str; 2] = ["198.18.0.10", "2001:db8:ffff::10"];

#[divan::bench(args = SIZES)]
fn ip_match(b: Bencher, n: usize) {
    let f = fixture(n);
    let (q, addrs) = (query(), IP_MATCH.map(addr));
    b.bench(|| f.set.decide(black_box(&q), None, black_box(&addrs)));
}

#[divan::bench(args = SIZES)]
fn ip_default(b: Bencher, n: usize) {
    let f = fixture(n);
    let (q, addrs) = (query(), IP_DEFAULT.map(addr));
    b.bench(|| f.set.decide(black_box(&q), None, black_box(&addrs)));
}

#[divan::bench(args = SIZES)]
fn name_wildcard(b: Bencher, n: usize) {
    let f = fixture(n);
    let q = query();
    b.bench(|| f.set.decide(black_box(&q), Some(black_box(WILDCARD)), &[]));
}

#[divan::bench(args = SIZES)]
fn name_and_2_addrs(b: Bencher, n: usize) {
    let f = fixture(n);
    let (q, addrs) = (query(), NAME_ADDRS.map(addr));
    b.bench(|| {
        f.set
            .decide(black_box(&q), Some(black_box(NAME)), black_box(&addrs))
    });
}

/// Stress cases beyond the realistic mix, to show how the cost grows with what the
/// index does not cover:
/// - `every_prefix_length`: 10,000 single-block rules using every v4 prefix length
///   (/1 to /32) and v6 lengths /8 to /128; a default decision probes one map per
///   length in use (the realistic mix uses 8 v4 and 5 v6 lengths);
/// - `client_list_10k`: the realistic 10,000 rules plus one `*` rule listing
///   10,000 client addresses (the most a list may hold); a list that long is a
///   table of merged ranges searched by bisection;
/// - `user_rules_1k`: the realistic 10,000 rules plus 1,000 `*` rules of one user
///   each (per-user policy without destinations); rules for every destination are
///   indexed by the user they name, so a decision checks only the asking user's.
#[divan::bench(args = ["every_prefix_length v4", "every_prefix_length v6", "client_list_10k", "user_rules_1k"])]
fn stress_default(b: Bencher, case: &str) {
    static EVERY: OnceLock<RuleSet> = OnceLock::new();
    static CLIENTS: OnceLock<RuleSet> = OnceLock::new();
    static USERS: OnceLock<RuleSet> = OnceLock::new();
    let (set, ip) = match case {
        "client_list_10k" => (CLIENTS.get_or_init(|| client_list(10_000)), IP_DEFAULT[0]),
        "user_rules_1k" => (USERS.get_or_init(|| user_rules(1_000)), IP_DEFAULT[0]),
        _ => {
            let set = EVERY.get_or_init(|| every_prefix_length(10_000));
            (
                set,
                if case.ends_with("v4") {
                    IP_DEFAULT[0]
                } else {
                    NAME_ADDRS[1]
                },
            )
        }
    };
    let (q, addrs) = (query(), [addr(ip)]);
    assert_eq!(
        set.decide(&q, None, &addrs),
        Decision {
            action: Action::Allow,
            by: By::Default
        }
    );
    b.bench(|| set.decide(black_box(&q), None, black_box(&addrs)));
}

fn every_prefix_length(n: usize) -> RuleSet {
    let mut rng = Rng(7);
    let mut t = String::from("[acl]\ndefault_policy = \"allow\"\n");
    for i in 0..n {
        // v4 blocks stay below 128.0.0.0 and v6 blocks under 2400::/8 (from /8 on),
        // away from the probe addresses.
        let block = match i % 2 {
            0 => {
                let len = 1 + (i / 2 % 32) as u32;
                let bits = ((11 + rng.below(90) as u32) << 24) | (rng.next() as u32 & 0xff_ffff);
                let masked = bits & u32::MAX.checked_shl(32 - len).unwrap_or(0);
                format!("{}/{len}", std::net::Ipv4Addr::from(masked))
            }
            _ => {
                let len = 8 + (i / 2 % 121) as u32;
                let bits =
                    (0x24u128 << 120) | (u128::from(rng.next()) << 56) | u128::from(rng.next());
                let masked = bits & u128::MAX.checked_shl(128 - len).unwrap_or(0);
                format!("{}/{len}", std::net::Ipv6Addr::from(masked))
            }
        };
        let _ = writeln!(
            t,
            "[[acl.rules]]\naction = \"block\"\ndestinations = [\"{block}\"]"
        );
    }
    RuleSet::new(&load(&t))
}

fn client_list(n: usize) -> RuleSet {
    let mut rng = Rng(11);
    let clients: Vec<String> = (0..n)
        .map(|_| {
            let a = ((11 + rng.below(90) as u32) << 24) | (rng.next() as u32 & 0xff_ffff);
            format!("\"{}\"", std::net::Ipv4Addr::from(a))
        })
        .collect();
    let mut t = rules_toml(10_000);
    let _ = writeln!(
        t,
        "[[acl.rules]]\naction = \"block\"\nclients = [{}]",
        clients.join(", ")
    );
    RuleSet::new(&load(&t))
}

fn user_rules(n: usize) -> RuleSet {
    let mut t = rules_toml(10_000);
    for u in 0..n {
        let _ = writeln!(
            t,
            "[[acl.rules]]\naction = \"block\"\nusers = [\"customer{u}\"]"
        );
    }
    RuleSet::new(&load(&t))
}

/// TOML text to checked rules (`Config::from_toml`, `acl.load()`).
#[divan::bench(args = [1_000, 10_000], sample_count = 10, sample_size = 1)]
fn load_from_toml(b: Bencher, n: usize) {
    let text = rules_toml(n);
    b.bench(|| load(black_box(&text)));
}

/// Checked rules to the matcher (`RuleSet::new`).
#[divan::bench(args = [1_000, 10_000], sample_count = 20, sample_size = 1)]
fn compile(b: Bencher, n: usize) {
    let acl = &fixture(n).acl;
    b.bench(|| RuleSet::new(black_box(acl)));
}
