//! Table-driven tests of the matcher and the guard: each row is a request and the
//! decision a user of the rules relies on.

use std::net::SocketAddr;

use super::*;
use crate::config::Config;

fn policy(toml: &str, loopback_listener: bool) -> Policy {
    let config = Config::from_toml(toml).expect("parses");
    let rules = config.acl.load().expect("valid rules");
    Policy::new(rules, loopback_listener)
}

const RULES: &str = r#"
[acl]
default_policy = "allow"
block_private_destinations = false

[[acl.groups]]
name = "staff"
members = ["alice", "carol"]

[[acl.rules]]                       # 0
action = "block"
users = ["bob"]
ports = ["22", "8000-9000"]
description = "no SSH or internal services for bob"

[[acl.rules]]                       # 1
action = "block"
destinations = ["127.0.0.0/8", "::1"]

[[acl.rules]]                       # 2
action = "allow"
groups = ["staff"]
destinations = ["10.0.0.0/8"]

[[acl.rules]]                       # 3
action = "block"
destinations = ["10.0.0.0/8", "db.internal", "*.example.com"]

[[acl.rules]]                       # 4
action = "block"
clients = ["192.0.2.0/24", "2001:db8::/32"]
commands = ["udp"]

[[acl.rules]]                       # 5
action = "allow"
users = ["dave"]
destinations = ["*.example.com"]
"#;

struct Row {
    user: &'static str,
    client: &'static str,
    command: AclCommand,
    dest: &'static str,
    addrs: &'static [&'static str],
    expect: Verdict,
}

fn target(dest: &str) -> TargetAddr {
    match dest.parse::<SocketAddr>() {
        Ok(a) => TargetAddr::Ip(a),
        Err(_) => {
            let (host, port) = dest.rsplit_once(':').unwrap();
            TargetAddr::Domain(host.into(), port.parse().unwrap())
        }
    }
}

fn judge(p: &Policy, own: &OwnAddresses, row: &Row) -> Verdict {
    let dest = target(row.dest);
    let mut addrs: Vec<SocketAddr> = row
        .addrs
        .iter()
        .map(|ip| SocketAddr::new(ip.parse().unwrap(), dest.port()))
        .collect();
    if let TargetAddr::Ip(a) = dest {
        addrs = vec![a];
    }
    let q = Query {
        user: row.user,
        groups: &[],
        client: row.client.parse().unwrap(),
        command: row.command,
        port: dest.port(),
    };
    p.judge(own, &q, &dest, &addrs)
}

fn check_rows(p: &Policy, rows: &[Row]) {
    let own = OwnAddresses::new(["127.0.0.1:1080".parse().unwrap()]);
    for (i, row) in rows.iter().enumerate() {
        let got = judge(p, &own, row);
        assert_eq!(
            got, row.expect,
            "row {i}: {} from {} to {} {:?}",
            row.user, row.client, row.dest, row.addrs
        );
    }
}

use AclCommand::{Bind, Connect, Udp};
const ALLOW_DEFAULT: Verdict = Verdict::Allowed(By::Default);
const fn blocked(rule: usize) -> Verdict {
    Verdict::Blocked(By::Rule(rule))
}
const fn allowed(rule: usize) -> Verdict {
    Verdict::Allowed(By::Rule(rule))
}

fn row(
    user: &'static str,
    client: &'static str,
    command: AclCommand,
    dest: &'static str,
    addrs: &'static [&'static str],
    expect: Verdict,
) -> Row {
    Row {
        user,
        client,
        command,
        dest,
        addrs,
        expect,
    }
}

#[test]
fn every_matcher_kind() {
    let p = policy(RULES, true);
    let c = "198.51.100.7";
    check_rows(
        &p,
        &[
            // users and port ranges
            row("bob", c, Connect, "93.184.216.34:22", &[], blocked(0)),
            row("bob", c, Connect, "93.184.216.34:8500", &[], blocked(0)),
            row("bob", c, Connect, "93.184.216.34:9001", &[], ALLOW_DEFAULT),
            row("alice", c, Connect, "93.184.216.34:22", &[], ALLOW_DEFAULT),
            // address blocks, v4 and v6, and IPv4-mapped spellings
            row("", c, Connect, "127.0.0.1:80", &[], blocked(1)),
            row("", c, Connect, "127.9.9.9:80", &[], blocked(1)),
            row("", c, Connect, "[::1]:80", &[], blocked(1)),
            row("", c, Connect, "[::ffff:127.0.0.1]:80", &[], blocked(1)),
            // exact names, case and trailing dot do not matter
            row("", c, Connect, "db.internal:5432", &[], blocked(3)),
            row("", c, Connect, "DB.Internal.:5432", &[], blocked(3)),
            row(
                "",
                c,
                Connect,
                "db.internal.example:5432",
                &[],
                ALLOW_DEFAULT,
            ),
            // wildcards: below the domain, not the domain itself
            row("", c, Connect, "www.example.com:443", &[], blocked(3)),
            row("", c, Connect, "a.b.example.com:443", &[], blocked(3)),
            row("", c, Connect, "example.com:443", &[], ALLOW_DEFAULT),
            row("", c, Connect, "badexample.com:443", &[], ALLOW_DEFAULT),
            // clients (v4 and v6) and commands
            row("", "192.0.2.9", Udp, "8.8.8.8:53", &[], blocked(4)),
            row("", "192.0.2.9", Connect, "8.8.8.8:53", &[], ALLOW_DEFAULT),
            row("", "2001:db8::5", Udp, "8.8.8.8:53", &[], blocked(4)),
            row("", "::ffff:192.0.2.9", Udp, "8.8.8.8:53", &[], blocked(4)),
            row("", "2001:db9::5", Udp, "8.8.8.8:53", &[], ALLOW_DEFAULT),
            row("", "192.0.2.9", Bind, "8.8.8.8:53", &[], ALLOW_DEFAULT),
        ],
    );
}

#[test]
fn block_beats_allow_and_groups_count_as_users() {
    let p = policy(RULES, true);
    let c = "198.51.100.7";
    check_rows(
        &p,
        &[
            // staff are allowed 10/8 by rule 2, but rule 3 blocks 10/8 for everyone
            row("alice", c, Connect, "10.1.2.3:443", &[], blocked(3)),
            row("carol", c, Connect, "10.1.2.3:443", &[], blocked(3)),
            // dave's allow of *.example.com loses to the block of the same names
            row("dave", c, Connect, "www.example.com:443", &[], blocked(3)),
            // without authentication (user "") rules with users or groups never match
            row("", c, Connect, "93.184.216.34:22", &[], ALLOW_DEFAULT),
        ],
    );
}

#[test]
fn a_name_is_blocked_by_any_of_its_addresses() {
    let p = policy(RULES, true);
    let c = "198.51.100.7";
    check_rows(
        &p,
        &[
            // "localhost" is named by no rule; its addresses are blocked by rule 1
            row(
                "",
                c,
                Connect,
                "localhost:80",
                &["127.0.0.1", "::1"],
                blocked(1),
            ),
            // one address of several in a blocked range is enough
            row(
                "",
                c,
                Connect,
                "mixed.test:80",
                &["93.184.216.34", "10.9.9.9"],
                blocked(3),
            ),
            row(
                "",
                c,
                Connect,
                "public.test:80",
                &["93.184.216.34"],
                ALLOW_DEFAULT,
            ),
            row(
                "",
                c,
                Connect,
                "mapped.test:80",
                &["::ffff:10.0.0.1"],
                blocked(3),
            ),
        ],
    );
}

#[test]
fn default_block_allows_only_what_a_rule_allows() {
    let p = policy(
        r#"
        [acl]
        default_policy = "block"
        [[acl.rules]]
        action = "allow"
        destinations = ["93.184.216.0/24"]
        [[acl.rules]]
        action = "allow"
        destinations = ["*.allowed.test"]
        ports = [443]
        "#,
        true,
    );
    let c = "198.51.100.7";
    let block_default = Verdict::Blocked(By::Default);
    check_rows(
        &p,
        &[
            row("", c, Connect, "93.184.216.34:80", &[], allowed(0)),
            row(
                "",
                c,
                Connect,
                "93.184.217.1:80",
                &[],
                block_default.clone(),
            ),
            // every address allowed by an address rule: allowed
            row(
                "",
                c,
                Connect,
                "x.test:80",
                &["93.184.216.1", "93.184.216.2"],
                allowed(0),
            ),
            // one address without an allow: the default decides
            row(
                "",
                c,
                Connect,
                "y.test:80",
                &["93.184.216.1", "8.8.8.8"],
                block_default.clone(),
            ),
            // a name allowed by a name rule covers its addresses
            row(
                "",
                c,
                Connect,
                "www.allowed.test:443",
                &["8.8.8.8"],
                allowed(1),
            ),
            row(
                "",
                c,
                Connect,
                "www.allowed.test:80",
                &["8.8.8.8"],
                block_default.clone(),
            ),
            row(
                "",
                c,
                Connect,
                "allowed.test:443",
                &["8.8.8.8"],
                block_default,
            ),
        ],
    );
}

#[test]
fn the_guard_blocks_private_and_own_addresses_unless_a_rule_allows_the_block() {
    let guarded = policy(
        r#"
        [acl]
        block_private_destinations = true
        [[acl.rules]]
        action = "allow"
        users = ["ops"]
        destinations = ["10.20.0.0/16"]
        [[acl.rules]]
        action = "allow"
        destinations = ["*.corp.test"]
        "#,
        false,
    );
    let c = "198.51.100.7";
    let private = |addr: &str, range: &'static str| Verdict::Private {
        addr: addr.parse().unwrap(),
        range,
    };
    let own = OwnAddresses::new(["127.0.0.1:1080".parse().unwrap()]);
    let metadata = judge(
        &guarded,
        &own,
        &row("", c, Connect, "169.254.169.254:80", &[], ALLOW_DEFAULT),
    );
    assert!(
        matches!(metadata, Verdict::Private { range, .. } if range.contains("link-local")),
        "{metadata:?}"
    );
    check_rows(
        &guarded,
        &[
            row(
                "",
                c,
                Connect,
                "10.20.1.1:22",
                &[],
                private("10.20.1.1", "private (RFC 1918)"),
            ),
            // an address rule allowing the block lifts the guard for it
            row("ops", c, Connect, "10.20.1.1:22", &[], allowed(0)),
            row(
                "ops",
                c,
                Connect,
                "10.21.1.1:22",
                &[],
                private("10.21.1.1", "private (RFC 1918)"),
            ),
            // a name rule does not: a name may resolve anywhere
            row(
                "",
                c,
                Connect,
                "db.corp.test:5432",
                &["10.20.1.1"],
                private("10.20.1.1", "private (RFC 1918)"),
            ),
            row(
                "",
                c,
                Connect,
                "localhost:80",
                &["127.0.0.1"],
                private("127.0.0.1", "loopback"),
            ),
            row(
                "",
                c,
                Connect,
                "[::ffff:127.0.0.1]:80",
                &[],
                private("127.0.0.1", "loopback"),
            ),
            row("", c, Connect, "8.8.8.8:53", &[], ALLOW_DEFAULT),
            // the proxy's own listener: refused whatever the rules say
            row(
                "ops",
                c,
                Connect,
                "127.0.0.1:1080",
                &[],
                Verdict::Own("127.0.0.1:1080".parse().unwrap()),
            ),
        ],
    );
    // Defaults: on unless the listener is loopback-only.
    assert!(policy("", false).guard);
    assert!(!policy("", true).guard);
    assert!(policy("[acl]\nblock_private_destinations = true\n", true).guard);
    assert!(!policy("[acl]\nblock_private_destinations = false\n", false).guard);
}

#[test]
fn a_name_is_resolved_only_when_addresses_decide() {
    assert!(!policy("", true).needs_addresses());
    assert!(policy("", false).needs_addresses());
    let names_only = "[[acl.rules]]\naction = \"block\"\ndestinations = [\"*.test\"]\n";
    assert!(!policy(names_only, true).needs_addresses());
    let with_block = "[[acl.rules]]\naction = \"block\"\ndestinations = [\"10.0.0.0/8\"]\n";
    assert!(policy(with_block, true).needs_addresses());
}

#[test]
fn a_blocked_decision_names_its_rule() {
    let p = policy(RULES, true);
    let reason = p.reason(&blocked(0));
    assert_eq!(
        reason,
        "block by acl.rules[0] (no SSH or internal services for bob)"
    );
    assert_eq!(p.reason(&blocked(1)), "block by acl.rules[1]",);
}

#[test]
fn many_rules_decide_through_the_indexes() {
    // 10,000 distinct blocks and names: the decision finds the one that matches.
    let mut text = String::from("[acl]\ndefault_policy = \"allow\"\n");
    for i in 0..5_000u32 {
        let [_, _, b, c] = i.to_be_bytes();
        text.push_str(&format!(
            "[[acl.rules]]\naction = \"block\"\ndestinations = [\"10.{b}.{c}.0/24\", \"host{i}.test\"]\n"
        ));
    }
    let p = policy(&text, true);
    let own = OwnAddresses::default();
    let q = Query {
        user: "",
        groups: &[],
        client: "198.51.100.7".parse().unwrap(),
        command: Connect,
        port: 80,
    };
    let v = p.judge(
        &own,
        &q,
        &target("10.19.135.9:80"),
        &["10.19.135.9:80".parse().unwrap()],
    );
    assert_eq!(v, blocked(0x1387));
    let v = p.judge(&own, &q, &target("host4999.test:80"), &[]);
    assert_eq!(v, blocked(4999));
    let v = p.judge(
        &own,
        &q,
        &target("10.20.0.1:80"),
        &["10.20.0.1:80".parse().unwrap()],
    );
    assert_eq!(v, ALLOW_DEFAULT);
}

/// The indexes against the rules read one by one: for random rule sets and
/// requests, the matcher decides exactly what the documented semantics say.
mod against_a_linear_scan {
    use std::collections::HashMap;
    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::config::{parse_destination, parse_net, Destination, PortRange, Rule};

    const DESTS: &[&str] = &[
        "*",
        "0.0.0.0/0",
        "10.0.0.0/8",
        "10.1.0.0/16",
        "10.1.2.0/24",
        "10.1.2.3",
        "192.168.0.0/16",
        "::/0",
        "fc00::/7",
        "::1",
        "a.test",
        "b.a.test",
        "*.a.test",
        "*.test",
        "*.b.a.test",
    ];
    const ADDRS: &[&str] = &[
        "10.1.2.3",
        "10.1.9.9",
        "10.200.0.1",
        "192.168.1.1",
        "8.8.8.8",
        "::1",
        "fd00::1",
        "2001:db8::1",
        "::ffff:10.1.2.3",
    ];
    const NAMES: &[&str] = &[
        "a.test",
        "b.a.test",
        "c.b.a.test",
        "test",
        "x.test",
        "other.example",
    ];
    const USERS: &[&str] = &["", "alice", "bob"];
    const CLIENT_NETS: &[&str] = &[
        "127.0.0.0/8",
        "127.0.0.1",
        "127.0.0.2",
        "10.0.0.0/8",
        "10.1.2.0/24",
        "10.1.2.3",
        "10.1.2.4",
        "192.0.2.0/24",
        "0.0.0.0/1",
        "::1",
        "::/0",
        "fc00::/7",
        "::2",
    ];
    const CLIENTS: &[&str] = &[
        "127.0.0.1",
        "127.0.0.3",
        "127.255.255.255",
        "10.1.2.3",
        "10.1.2.4",
        "10.1.2.5",
        "192.0.2.255",
        "::1",
        "::2",
        "::3",
        "200.1.1.1",
    ];
    const COMMANDS: &[AclCommand] = &[AclCommand::Connect, AclCommand::Bind, AclCommand::Udp];
    const PORTS: &[u16] = &[22, 80, 85, 443];

    fn pick<T: Clone + std::fmt::Debug>(all: &'static [T]) -> impl Strategy<Value = T> {
        proptest::sample::select(all)
    }

    fn subset<T: Clone + std::fmt::Debug>(
        all: &'static [T],
    ) -> impl Strategy<Value = Option<Vec<T>>> {
        proptest::option::of(proptest::collection::vec(pick(all), 1..3))
    }

    fn rule() -> impl Strategy<Value = Rule> {
        (
            any::<bool>(),
            subset(&["alice", "bob"]),
            // "staff" is configured; "ops" exists only on the system.
            subset(&["staff", "ops"]),
            // Up to 12 entries: more than 8 are bisected, not scanned.
            proptest::option::of(proptest::collection::vec(pick(CLIENT_NETS), 1..13)),
            subset(DESTS),
            subset(&[(22u16, 22u16), (80, 90), (443, 443)]),
            subset(COMMANDS),
        )
            .prop_map(
                |(block, users, groups, clients, dests, ports, commands)| Rule {
                    origin: String::new(),
                    action: if block { Action::Block } else { Action::Allow },
                    users: users.map(|u| u.into_iter().map(str::to_owned).collect()),
                    groups: groups.map(|g| g.into_iter().map(str::to_owned).collect()),
                    clients: clients.map(|c| c.iter().map(|c| parse_net(c).unwrap()).collect()),
                    destinations: dests
                        .map(|d| d.iter().map(|d| parse_destination(d).unwrap()).collect()),
                    ports: ports.map(|p| {
                        p.into_iter()
                            .map(|(first, last)| PortRange { first, last })
                            .collect()
                    }),
                    commands,
                    description: String::new(),
                },
            )
    }

    /// The semantics, read straight from docs/acl.md, one rule at a time.
    fn reference(acl: &AclRules, q: &Query<'_>, name: Option<&str>, addrs: &[IpAddr]) -> Decision {
        let conditions = |r: &Rule| {
            let members: Vec<&String> = r
                .groups
                .iter()
                .flatten()
                .flat_map(|g| acl.groups.get(g).into_iter().flatten())
                .collect();
            let in_system_group = acl.system_groups
                && r.groups
                    .iter()
                    .flatten()
                    .any(|g| q.groups.iter().any(|n| **n == **g));
            let user_ok = (r.users.is_none() && r.groups.is_none())
                || r.users.iter().flatten().any(|u| u == q.user)
                || members.iter().any(|m| *m == q.user)
                || in_system_group;
            user_ok
                && r.clients
                    .as_ref()
                    .is_none_or(|c| c.iter().any(|n| n.contains(q.client)))
                && r.ports
                    .as_ref()
                    .is_none_or(|p| p.iter().any(|p| p.first <= q.port && q.port <= p.last))
                && r.commands.as_ref().is_none_or(|c| c.contains(&q.command))
        };
        let everywhere = |r: &Rule| {
            r.destinations
                .as_ref()
                .is_none_or(|d| d.contains(&Destination::Any))
        };
        let names = |r: &Rule, n: &str| {
            r.destinations.iter().flatten().any(|d| match d {
                Destination::Name(x) => x == n,
                Destination::Below(x) => n.ends_with(&format!(".{x}")),
                _ => false,
            })
        };
        let holds = |r: &Rule, ip: IpAddr| {
            r.destinations
                .iter()
                .flatten()
                .any(|d| matches!(d, Destination::Net(n) if n.contains(ip)))
        };
        let applies = |r: &Rule| {
            everywhere(r)
                || name.is_some_and(|n| names(r, n))
                || addrs.iter().any(|&ip| holds(r, ip))
        };
        let rules = &acl.rules;
        if let Some(i) = (0..rules.len()).find(|&i| {
            rules[i].action == Action::Block && conditions(&rules[i]) && applies(&rules[i])
        }) {
            return Decision {
                action: Action::Block,
                by: By::Rule(i),
            };
        }
        let allows = |i: usize| rules[i].action == Action::Allow && conditions(&rules[i]);
        let whole = (0..rules.len()).find(|&i| {
            allows(i) && (everywhere(&rules[i]) || name.is_some_and(|n| names(&rules[i], n)))
        });
        let per_address: Option<Vec<usize>> = addrs
            .iter()
            .map(|&ip| (0..rules.len()).find(|&i| allows(i) && holds(&rules[i], ip)))
            .collect();
        let by_addresses = per_address
            .filter(|v| !v.is_empty())
            .and_then(|v| v.into_iter().min());
        match whole.into_iter().chain(by_addresses).min() {
            Some(i) => Decision {
                action: Action::Allow,
                by: By::Rule(i),
            },
            None => Decision {
                action: acl.default_policy,
                by: By::Default,
            },
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn the_indexes_decide_as_the_rules_read(
            rules in proptest::collection::vec(rule(), 0..12),
            default_block in any::<bool>(),
            user in pick(USERS),
            user_groups in subset(&["staff", "ops"]),
            system_groups in any::<bool>(),
            client in pick(CLIENTS),
            command in pick(COMMANDS),
            port in pick(PORTS),
            name in proptest::option::of(pick(NAMES)),
            addrs in proptest::collection::vec(pick(ADDRS), 0..3),
        ) {
            let acl = AclRules {
                default_policy: if default_block { Action::Block } else { Action::Allow },
                groups: HashMap::from([("staff".to_owned(), vec!["alice".to_owned()])]),
                rules,
                system_groups,
                ..AclRules::default()
            };
            let user_groups: Vec<Box<str>> =
                user_groups.unwrap_or_default().into_iter().map(Box::from).collect();
            // An address destination is its one address.
            let addrs: Vec<IpAddr> = match name {
                Some(_) => addrs.iter().map(|a| a.parse().unwrap()).collect(),
                None => vec![addrs.first().copied().unwrap_or("8.8.8.8").parse().unwrap()],
            };
            let sockets: Vec<SocketAddr> = addrs.iter().map(|&ip| SocketAddr::new(ip, port)).collect();
            let q = Query {
                user,
                groups: &user_groups,
                client: client.parse().unwrap(),
                command,
                port,
            };
            let set = RuleSet::new(&acl);
            prop_assert_eq!(set.decide(&q, name, &sockets), reference(&acl, &q, name, &addrs));
        }
    }
}
