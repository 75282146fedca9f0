//! `[acl]`: access rules, as written (strings) and as parsed (typed values).
//!
//! The TOML types keep every value a string so that a bad one is reported with the
//! rule's index and the key (`acl.rules[3].destinations[1]`), which toml's own
//! errors cannot do; `AclConfig::load` parses them, reads `acl.file` and returns
//! either the whole rule set or every problem. The matcher (`access::acl`) is built
//! from the parsed values only.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::validate::Problem;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AclConfig {
    /// What a request no rule matches gets: "allow" or "block" (kept as written,
    /// so that a bad value is reported under its key).
    pub default_policy: String,
    /// The destination guard (private, loopback, link-local and the proxy's own
    /// addresses). Unset: on unless the SOCKS listener is loopback-only.
    pub block_private_destinations: Option<bool>,
    /// More `[[acl.groups]]` and `[[acl.rules]]`, in a file of their own.
    pub file: Option<PathBuf>,
    /// A group a rule names may also be one of the user's groups on this system
    /// (`getgrouplist`: /etc/group, or LDAP and Active Directory through SSSD);
    /// a name no `[[acl.groups]]` defines is then a system group, not an error.
    pub system_groups: bool,
    pub groups: Vec<GroupEntry>,
    pub rules: Vec<RuleEntry>,
}

impl Default for AclConfig {
    fn default() -> Self {
        Self {
            default_policy: "allow".into(),
            block_private_destinations: None,
            file: None,
            system_groups: false,
            groups: Vec::new(),
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    #[default]
    Allow,
    Block,
}

crate::names::names!(Action {
    Allow => "allow",
    Block => "block",
});

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    pub name: String,
    pub members: Vec<String>,
}

/// One `[[acl.rules]]` entry as written. An absent key matches everything.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleEntry {
    pub action: String,
    #[serde(default)]
    pub users: Option<Vec<String>>,
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    #[serde(default)]
    pub clients: Option<Vec<String>>,
    #[serde(default)]
    pub destinations: Option<Vec<String>>,
    #[serde(default)]
    pub ports: Option<Vec<PortText>>,
    #[serde(default)]
    pub commands: Option<Vec<String>>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A port as written: `22`, `"22"` or `"8000-9000"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PortText {
    Number(i64),
    Text(String),
}

/// What `acl.file` may hold: groups and rules, under `[acl]` as in the main file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AclFile {
    acl: AclFileSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AclFileSection {
    groups: Vec<GroupEntry>,
    rules: Vec<RuleEntry>,
}

/// An address block: `addr` has no bits set past `len`. IPv4-mapped IPv6 blocks
/// are stored as the IPv4 block they carry, so both spellings match alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Net {
    pub addr: IpAddr,
    pub len: u8,
}

impl Net {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask4(u32::from(ip), self.len) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask6(u128::from(ip), self.len) == u128::from(net),
            _ => false,
        }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// `bits` with all but the first `len` bits cleared.
pub fn mask4(bits: u32, len: u8) -> u32 {
    bits & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

pub fn mask6(bits: u128, len: u8) -> u128 {
    bits & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// A destination pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `*`: every destination.
    Any,
    Net(Net),
    /// An exact name, lower case, no trailing dot.
    Name(String),
    /// `*.example.com`, stored as `example.com`: every name below it, not itself.
    Below(String),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Any => f.write_str("*"),
            Destination::Net(n) => write!(f, "{n}"),
            Destination::Name(n) => f.write_str(n),
            Destination::Below(n) => write!(f, "*.{n}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.first == self.last {
            true => write!(f, "{}", self.first),
            false => write!(f, "{}-{}", self.first, self.last),
        }
    }
}

/// The commands a rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AclCommand {
    Connect,
    Bind,
    Udp,
}

crate::names::names!(AclCommand {
    Connect => "connect",
    Bind => "bind",
    Udp => "udp",
});

/// One rule, parsed. `origin` says where it was written (`acl.rules[2]` in the
/// main file, `FILE: acl.rules[2]` in `acl.file`).
#[derive(Debug, Clone)]
pub struct Rule {
    pub origin: String,
    pub action: Action,
    pub users: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    pub clients: Option<Vec<Net>>,
    pub destinations: Option<Vec<Destination>>,
    pub ports: Option<Vec<PortRange>>,
    pub commands: Option<Vec<AclCommand>>,
    pub description: String,
}

/// The whole rule set, parsed and checked: what the matcher is built from.
#[derive(Debug, Clone, Default)]
pub struct AclRules {
    pub default_policy: Action,
    /// `acl.block_private_destinations` as written (unset: the listener decides).
    pub block_private_destinations: Option<bool>,
    pub file: Option<PathBuf>,
    /// `acl.system_groups`: the groups rules name are also looked up on the system.
    pub system_groups: bool,
    pub groups: HashMap<String, Vec<String>>,
    pub rules: Vec<Rule>,
}

/// Limits that keep a rule set's size sane (and its matcher's memory bounded).
const MAX_RULES: usize = 100_000;
const MAX_ENTRIES: usize = 10_000;

impl AclConfig {
    /// Parses the rules of this section and of `acl.file`. Every problem is
    /// returned, each naming its key (and the file, for rules from `acl.file`).
    pub fn load(&self) -> Result<AclRules, Vec<Problem>> {
        let mut problems = Vec::new();
        let default_policy = self.default_policy.parse::<Action>().unwrap_or_else(|()| {
            problems.push(action_problem("acl.default_policy", &self.default_policy));
            Action::Block
        });
        let mut groups = HashMap::new();
        let mut entries: Vec<(String, &RuleEntry)> = Vec::new();
        add_groups(&self.groups, "", &mut groups, &mut problems);
        for (i, rule) in self.rules.iter().enumerate() {
            entries.push((format!("acl.rules[{i}]"), rule));
        }
        let file = match &self.file {
            Some(path) => match read_file(path) {
                Ok(file) => Some(file),
                Err(problem) => {
                    problems.push(problem);
                    None
                }
            },
            None => None,
        };
        if let (Some(file), Some(path)) = (&file, &self.file) {
            let prefix = format!("{}: ", path.display());
            add_groups(&file.acl.groups, &prefix, &mut groups, &mut problems);
            for (i, rule) in file.acl.rules.iter().enumerate() {
                entries.push((format!("{prefix}acl.rules[{i}]"), rule));
            }
        }
        if entries.len() > MAX_RULES {
            problems.push(Problem::new(
                "acl.rules",
                format!("{} rules", entries.len()),
                format!("at most {MAX_RULES}"),
            ));
        }
        let rules: Vec<Rule> = entries
            .into_iter()
            .filter_map(|(origin, entry)| {
                parse_rule(origin, entry, &groups, self.system_groups, &mut problems)
            })
            .collect();
        match problems.is_empty() {
            true => Ok(AclRules {
                default_policy,
                block_private_destinations: self.block_private_destinations,
                file: self.file.clone(),
                system_groups: self.system_groups,
                groups,
                rules,
            }),
            false => Err(problems),
        }
    }
}

fn action_problem(key: &str, value: &str) -> Problem {
    Problem::new(
        key,
        format!("\"{value}\""),
        format!("one of {}", Action::NAMES),
    )
}

fn read_file(path: &Path) -> Result<AclFile, Problem> {
    let bad = |why: String| {
        Problem::new(
            "acl.file",
            format!("\"{}\"", path.display()),
            format!("a readable TOML file of [[acl.groups]] and [[acl.rules]] ({why})"),
        )
    };
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad("it does not exist".into()),
        _ if path.is_dir() => bad("it is a directory".into()),
        _ => bad(format!("cannot read it: {e}")),
    })?;
    toml::from_str(&text).map_err(|e| bad(e.to_string().trim_end().replace('\n', " ")))
}

fn add_groups(
    entries: &[GroupEntry],
    prefix: &str,
    groups: &mut HashMap<String, Vec<String>>,
    problems: &mut Vec<Problem>,
) {
    for (i, g) in entries.iter().enumerate() {
        let key = format!("{prefix}acl.groups[{i}].name");
        if g.name.is_empty() {
            problems.push(Problem::new(key, "\"\"", "a group name"));
        } else if let Some(m) = g.members.iter().position(String::is_empty) {
            problems.push(Problem::new(
                format!("{prefix}acl.groups[{i}].members[{m}]"),
                "\"\"",
                "a user name",
            ));
        } else if groups.contains_key(&g.name) {
            problems.push(Problem::new(
                key,
                format!("\"{}\"", g.name),
                "a name no other group has",
            ));
        } else {
            groups.insert(g.name.clone(), g.members.clone());
        }
    }
}

/// Parses one list key of a rule: absent stays absent, an empty list is an error
/// (it would match nothing, which is never what was meant), each bad entry is a
/// problem naming its index.
fn list<T, U>(
    key: &str,
    values: &Option<Vec<T>>,
    problems: &mut Vec<Problem>,
    parse: impl Fn(&T) -> Result<U, (String, String)>,
) -> Option<Vec<U>> {
    let values = values.as_ref()?;
    if values.is_empty() {
        problems.push(Problem::new(
            key,
            "[]",
            "at least one entry (leave the key out to match every value)",
        ));
        return None;
    }
    if values.len() > MAX_ENTRIES {
        problems.push(Problem::new(
            key,
            format!("{} entries", values.len()),
            format!("at most {MAX_ENTRIES} (split the rule)"),
        ));
        return None;
    }
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        match parse(v) {
            Ok(u) => out.push(u),
            Err((value, expected)) => {
                problems.push(Problem::new(format!("{key}[{i}]"), value, expected))
            }
        }
    }
    Some(out)
}

fn parse_rule(
    origin: String,
    e: &RuleEntry,
    groups: &HashMap<String, Vec<String>>,
    system_groups: bool,
    problems: &mut Vec<Problem>,
) -> Option<Rule> {
    let before = problems.len();
    let key = |k: &str| format!("{origin}.{k}");
    let action = e.action.parse::<Action>().map_err(|()| {
        problems.push(action_problem(&key("action"), &e.action));
    });
    let users = list(&key("users"), &e.users, problems, |u: &String| {
        match u.is_empty() {
            true => Err(("\"\"".into(), "a user name".into())),
            false => Ok(u.clone()),
        }
    });
    let group_names = list(&key("groups"), &e.groups, problems, |g: &String| {
        match groups.contains_key(g) || (system_groups && !g.is_empty()) {
            true => Ok(g.clone()),
            false => Err((
                format!("\"{g}\""),
                "the name of a group in [[acl.groups]] (or of a system group, with \
                 acl.system_groups = true)"
                    .into(),
            )),
        }
    });
    let clients = list(&key("clients"), &e.clients, problems, |c: &String| {
        parse_net(c).map_err(|why| (format!("\"{c}\""), why))
    });
    let destinations = list(
        &key("destinations"),
        &e.destinations,
        problems,
        |d: &String| parse_destination(d).map_err(|why| (format!("\"{d}\""), why)),
    );
    let ports = list(&key("ports"), &e.ports, problems, parse_ports);
    let commands = list(&key("commands"), &e.commands, problems, |c: &String| {
        c.parse::<AclCommand>()
            .map_err(|()| (format!("\"{c}\""), format!("one of {}", AclCommand::NAMES)))
    });
    let action = action.ok()?;
    if problems.len() > before {
        return None;
    }
    Some(Rule {
        origin,
        action,
        users,
        groups: group_names,
        clients,
        destinations,
        ports,
        commands,
        description: e.description.clone().unwrap_or_default(),
    })
}

fn parse_ports(p: &PortText) -> Result<PortRange, (String, String)> {
    const EXPECTED: &str = "a port (1-65535) or a range \"first-last\"";
    let port = |s: &str| s.trim().parse::<u16>().ok().filter(|&p| p > 0);
    match p {
        PortText::Number(n) => u16::try_from(*n)
            .ok()
            .filter(|&p| p > 0)
            .map(|p| PortRange { first: p, last: p })
            .ok_or_else(|| (n.to_string(), EXPECTED.into())),
        PortText::Text(s) => {
            let range = match s.split_once('-') {
                Some((a, b)) => port(a).zip(port(b)),
                None => port(s).map(|p| (p, p)),
            };
            match range {
                Some((first, last)) if first <= last => Ok(PortRange { first, last }),
                Some(_) => Err((
                    format!("\"{s}\""),
                    "a range whose first port is not above its last".into(),
                )),
                None => Err((format!("\"{s}\""), EXPECTED.into())),
            }
        }
    }
}

/// An address (`10.1.2.3`, `::1`) or a block (`10.0.0.0/8`, `fc00::/7`).
pub fn parse_net(s: &str) -> Result<Net, String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| "an IP address or CIDR block (10.0.0.0/8, fd00::/8)".to_owned())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|&l| l <= max)
            .ok_or_else(|| format!("a prefix length from 0 to {max}"))?,
    };
    let net = canonical_net(addr, len);
    let masked = match net.addr {
        IpAddr::V4(a) => IpAddr::from(mask4(u32::from(a), net.len).to_be_bytes()),
        IpAddr::V6(a) => IpAddr::from(mask6(u128::from(a), net.len).to_be_bytes()),
    };
    if masked != net.addr {
        return Err(format!(
            "a block without host bits (did you mean {masked}/{}?)",
            net.len
        ));
    }
    Ok(net)
}

/// An IPv4-mapped IPv6 block (`::ffff:10.0.0.0/104`) as the IPv4 block it carries.
fn canonical_net(addr: IpAddr, len: u8) -> Net {
    match addr {
        IpAddr::V6(v6) if len >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => Net {
                addr: IpAddr::V4(v4),
                len: len - 96,
            },
            None => Net { addr, len },
        },
        _ => Net { addr, len },
    }
}

pub fn parse_destination(s: &str) -> Result<Destination, String> {
    if s == "*" {
        return Ok(Destination::Any);
    }
    if s.parse::<IpAddr>().is_ok() || s.contains('/') {
        return parse_net(s).map(Destination::Net);
    }
    let (below, name) = match s.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let name = normalise_name(name)
        .filter(|n| valid_name(n))
        .ok_or_else(|| {
            "\"*\", an IP address, a CIDR block, a host name or \"*.\" and a domain".to_owned()
        })?;
    Ok(match below {
        true => Destination::Below(name),
        false => Destination::Name(name),
    })
}

/// A name as rules compare it: lower case, without the trailing dot of a fully
/// qualified name.
pub fn normalise_name(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    (!name.is_empty()).then(|| name.to_ascii_lowercase())
}

/// Whether a name a client sent is a host name the rules can judge: letters,
/// digits, `-` and `_` in dot-separated labels (one trailing dot allowed). Anything
/// else is refused unlooked-up: the system resolver decodes escapes (`exampl\e.com`
/// is looked up as `example.com`), so a name outside this form could reach what a
/// name rule blocks.
pub fn is_host_name(name: &str) -> bool {
    valid_name(name.strip_suffix('.').unwrap_or(name))
}

fn valid_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_parsed_canonical_and_without_host_bits() {
        let net = parse_net("10.0.0.0/8").unwrap();
        assert!(net.contains("10.200.1.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.2.3.4".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert_eq!(parse_net("::ffff:10.0.0.0/104").unwrap(), net);
        assert_eq!(parse_net("10.1.2.3").unwrap().len, 32);
        assert_eq!(parse_net("::1").unwrap().len, 128);
        assert!(parse_net("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "fc00::/129",
            "host",
            "10.0.0.0/x",
            "",
        ] {
            assert!(parse_net(bad).is_err(), "{bad}");
        }
        assert!(parse_net("10.0.0.1/8").unwrap_err().contains("10.0.0.0/8"));
    }

    #[test]
    fn destinations_of_every_kind() {
        use Destination::*;
        assert_eq!(parse_destination("*").unwrap(), Any);
        assert_eq!(
            parse_destination("DB.Internal.").unwrap(),
            Name("db.internal".into())
        );
        assert_eq!(
            parse_destination("*.example.com").unwrap(),
            Below("example.com".into())
        );
        assert!(matches!(parse_destination("fc00::/7").unwrap(), Net(_)));
        for bad in [
            "*example.com",
            "a.*.com",
            "**",
            "a..b",
            "-",
            "exa mple.com",
            "*.",
        ] {
            assert!(parse_destination(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports_single_ranges_and_numbers() {
        let p = |t: &str| parse_ports(&PortText::Text(t.into()));
        assert_eq!(
            p("22").unwrap(),
            PortRange {
                first: 22,
                last: 22
            }
        );
        assert_eq!(
            p("8000-9000").unwrap(),
            PortRange {
                first: 8000,
                last: 9000
            }
        );
        assert_eq!(
            parse_ports(&PortText::Number(443)).unwrap(),
            PortRange {
                first: 443,
                last: 443
            }
        );
        for bad in ["0", "65536", "9000-8000", "a", "1-", "-5"] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert!(parse_ports(&PortText::Number(-1)).is_err());
    }

    fn problems_of(text: &str) -> Vec<String> {
        let config = crate::config::Config::from_toml(text).expect("parses");
        match config.acl.load() {
            Ok(_) => Vec::new(),
            Err(problems) => problems.into_iter().map(|p| p.key).collect(),
        }
    }

    #[test]
    fn bad_values_name_the_rule_and_the_entry() {
        let keys = problems_of(
            r#"
            [[acl.groups]]
            name = "staff"
            members = ["alice"]
            [[acl.rules]]
            action = "allow"
            [[acl.rules]]
            action = "block"
            destinations = ["10.0.0.0/8", "10.0.0.1/8"]
            ports = ["22", "0"]
            groups = ["staf"]
            commands = ["connect", "associate"]
            users = []
            "#,
        );
        assert_eq!(
            keys,
            [
                "acl.rules[1].users",
                "acl.rules[1].groups[0]",
                "acl.rules[1].destinations[1]",
                "acl.rules[1].ports[1]",
                "acl.rules[1].commands[1]",
            ]
        );
    }

    #[test]
    fn rules_from_the_file_follow_the_main_ones_and_name_the_file() {
        let dir = std::env::temp_dir().join(format!("rustsocks-acl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("acl.toml");
        std::fs::write(
            &path,
            "[[acl.groups]]\nname = \"ops\"\nmembers = [\"dan\"]\n\
             [[acl.rules]]\naction = \"block\"\ngroups = [\"ops\"]\ndestinations = [\"x.y\"]\n",
        )
        .unwrap();
        let text = format!(
            "[acl]\nfile = \"{}\"\n[[acl.rules]]\naction = \"allow\"\n",
            path.display()
        );
        let config = crate::config::Config::from_toml(&text).unwrap();
        let rules = config.acl.load().unwrap();
        assert_eq!(rules.rules.len(), 2);
        assert_eq!(rules.rules[0].origin, "acl.rules[0]");
        assert_eq!(
            rules.rules[1].origin,
            format!("{}: acl.rules[0]", path.display())
        );
        std::fs::write(&path, "[[acl.rules]]\naction = \"deny\"\n").unwrap();
        let problems = config.acl.load().unwrap_err();
        assert_eq!(
            problems[0].key,
            format!("{}: acl.rules[0].action", path.display())
        );
        assert_eq!(problems[0].value, "\"deny\"");
        std::fs::write(&path, "[[acl.rules]]\naction = \"block\"\nports = 22\n").unwrap();
        let problems = config.acl.load().unwrap_err();
        assert_eq!(problems[0].key, "acl.file");
        assert!(problems[0].expected.contains("ports"), "{:?}", problems[0]);
        std::fs::write(&path, "[acl]\ndefault_policy = \"block\"\n").unwrap();
        let problems = config.acl.load().unwrap_err();
        assert!(
            problems[0].expected.contains("default_policy"),
            "{:?}",
            problems[0]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
