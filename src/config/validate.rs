//! Checks across keys that serde cannot express. Each problem names the dotted key,
//! the value found and what was expected, so an operator can fix the file without
//! reading the source.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

use super::{AclRules, Config, SocksMethod};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub value: String,
    pub expected: String,
}

impl Problem {
    pub(super) fn new(
        key: impl Into<String>,
        value: impl fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Self {
            key: key.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = {}: expected {}",
            self.key, self.value, self.expected
        )
    }
}

/// Every problem of `config`, and its access rules when they are valid (loading
/// them reads `acl.file`: done once, here, for both).
pub(super) fn problems(config: &Config) -> (Vec<Problem>, Option<AclRules>) {
    let mut out = Vec::new();
    let s = &config.server;
    let at_least_one = [
        ("server.max_connections", s.max_connections as u64),
        ("server.handshake_timeout_ms", s.handshake_timeout_ms),
        ("server.bind_timeout_secs", s.bind_timeout_secs),
        ("server.udp_idle_timeout_secs", s.udp_idle_timeout_secs),
        ("server.pool.connect_timeout_ms", s.pool.connect_timeout_ms),
        (
            "server.pool.max_idle_per_dest",
            s.pool.max_idle_per_dest as u64,
        ),
        ("server.pool.max_total_idle", s.pool.max_total_idle as u64),
        ("server.pool.idle_timeout_secs", s.pool.idle_timeout_secs),
    ];
    for (key, value) in at_least_one {
        if value == 0 {
            out.push(Problem::new(key, value, "at least 1"));
        }
    }
    if config.auth.login_backoff_max_ms < config.auth.login_backoff_ms {
        out.push(Problem::new(
            "auth.login_backoff_max_ms",
            config.auth.login_backoff_max_ms,
            format!(
                "at least auth.login_backoff_ms ({})",
                config.auth.login_backoff_ms
            ),
        ));
    }
    if let Some(per_ip) = s.max_connections_per_ip {
        if per_ip == 0 || per_ip > s.max_connections {
            out.push(Problem::new(
                "server.max_connections_per_ip",
                per_ip,
                format!(
                    "between 1 and server.max_connections ({})",
                    s.max_connections
                ),
            ));
        }
    }
    if s.pool.max_idle_per_dest > s.pool.max_total_idle {
        out.push(Problem::new(
            "server.pool.max_idle_per_dest",
            s.pool.max_idle_per_dest,
            format!(
                "at most server.pool.max_total_idle ({})",
                s.pool.max_total_idle
            ),
        ));
    }
    // Required client certificates authenticate every client: not an open proxy.
    let mutual_tls = s.tls.enabled && s.tls.client_ca.is_some() && s.tls.require_client_certificate;
    if config.auth.socks_method == SocksMethod::None
        && !s.bind_address.is_loopback()
        && !s.allow_open_proxy
        && !mutual_tls
    {
        out.push(Problem::new(
            "server.bind_address",
            format!("\"{}\"", s.bind_address),
            "a loopback address while auth.socks_method = \"none\": anyone who can reach \
             this address could use the proxy (an open proxy is abused within hours). \
             Set auth.socks_method = \"userpass\", require client certificates \
             (server.tls), or server.allow_open_proxy = true if the network is trusted",
        ));
    }
    tls_problems(config, &mut out);
    api_problems(config, &mut out);
    session_problems(config, &mut out);
    limit_problems(config, &mut out);
    user_problems(config, &mut out);
    super::files::problems(config, &mut out);
    let acl = config.acl.load().map_err(|acl| out.extend(acl)).ok();
    (out, acl)
}

fn tls_problems(config: &Config, out: &mut Vec<Problem>) {
    let s = &config.server;
    for (section, prefix) in [(&s.tls, "server.tls"), (&config.api.tls, "api.tls")] {
        if section.require_client_certificate && section.client_ca.is_none() {
            out.push(Problem::new(
                format!("{prefix}.require_client_certificate"),
                true,
                format!(
                    "{prefix}.client_ca to be set: the CAs whose client certificates are accepted"
                ),
            ));
        }
    }
    if config.auth.socks_method == SocksMethod::Certificate {
        let mutual = s.tls.enabled && s.tls.client_ca.is_some() && s.tls.require_client_certificate;
        if !mutual {
            out.push(Problem::new(
                "auth.socks_method",
                "\"certificate\"",
                "server.tls.enabled = true with server.tls.client_ca and \
                 server.tls.require_client_certificate = true: the user is the client \
                 certificate's name",
            ));
        }
        if let Some(plain) = s.plain_bind {
            out.push(Problem::new(
                "server.plain_bind",
                format!("\"{plain}\""),
                "no plain listener while auth.socks_method = \"certificate\": its clients \
                 have no certificate to name them",
            ));
        }
    }
    if let Some(plain) = s.plain_bind {
        if !s.tls.enabled {
            out.push(Problem::new(
                "server.plain_bind",
                format!("\"{plain}\""),
                "server.tls.enabled = true: without TLS the main listener is already plain",
            ));
        }
        if !plain.ip().to_canonical().is_loopback() {
            out.push(Problem::new(
                "server.plain_bind",
                format!("\"{plain}\""),
                "a loopback address: passwords cross a plain listener in clear text",
            ));
        }
        if plain.port() == s.bind_port && overlaps(plain.ip(), s.bind_address) {
            out.push(Problem::new(
                "server.plain_bind",
                format!("\"{plain}\""),
                format!("another port than the TLS listener ({})", s.bind()),
            ));
        }
    }
}

/// Whether two listeners on the same port would collide: the same address, or
/// either one the unspecified address (which takes the port on every address).
/// An IPv4-mapped IPv6 address counts as the IPv4 address.
pub(super) fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    let (a, b) = (a.to_canonical(), b.to_canonical());
    a == b || a.is_unspecified() || b.is_unspecified()
}

/// Ten years: longer than any timeout or retention means anything, and far enough
/// from the limits of `Instant` and of `u64` seconds that adding it cannot overflow.
const MAX_SECS: u64 = 10 * 365 * 86_400;

/// Upper bounds. Durations are added to clock readings (a huge one panics), and
/// queues and buffers are allocated up front, so "a very large number, meaning
/// never or unlimited" must be refused with a clear message, not crash at runtime.
fn limit_problems(config: &Config, out: &mut Vec<Problem>) {
    let (s, p, ss, t) = (
        &config.server,
        &config.server.pool,
        &config.sessions,
        &config.telemetry,
    );
    let d = &config.dns;
    let limits: [(&str, u64, u64); 24] = [
        // Entries are allocated as answers come; a bound keeps a flood of unique
        // names from growing the cache without end.
        ("dns.cache_size", d.cache_size as u64, 1_000_000),
        ("dns.max_ttl_secs", d.max_ttl_secs, 86_400),
        ("dns.negative_ttl_secs", d.negative_ttl_secs, 3_600),
        // A hold-back longer than an hour only locks out the address's real users.
        (
            "auth.login_backoff_ms",
            config.auth.login_backoff_ms,
            3_600_000,
        ),
        (
            "auth.login_backoff_max_ms",
            config.auth.login_backoff_max_ms,
            3_600_000,
        ),
        (
            "server.max_connections",
            s.max_connections as u64,
            10_000_000,
        ),
        ("server.worker_threads", s.worker_threads as u64, 1024),
        (
            "server.handshake_timeout_ms",
            s.handshake_timeout_ms,
            MAX_SECS * 1000,
        ),
        (
            "server.relay_idle_timeout_secs",
            s.relay_idle_timeout_secs,
            MAX_SECS,
        ),
        (
            "server.shutdown_grace_secs",
            s.shutdown_grace_secs,
            MAX_SECS,
        ),
        ("server.bind_timeout_secs", s.bind_timeout_secs, MAX_SECS),
        (
            "server.udp_idle_timeout_secs",
            s.udp_idle_timeout_secs,
            MAX_SECS,
        ),
        // Linux's limit for TCP_KEEPIDLE.
        ("server.tcp_keepalive_secs", s.tcp_keepalive_secs, 32_767),
        (
            "server.pool.max_idle_per_dest",
            p.max_idle_per_dest as u64,
            1_000_000,
        ),
        (
            "server.pool.max_total_idle",
            p.max_total_idle as u64,
            1_000_000,
        ),
        (
            "server.pool.idle_timeout_secs",
            p.idle_timeout_secs,
            MAX_SECS,
        ),
        (
            "server.pool.connect_timeout_ms",
            p.connect_timeout_ms,
            MAX_SECS * 1000,
        ),
        ("sessions.batch_size", ss.batch_size as u64, 1_000_000),
        (
            "sessions.batch_interval_ms",
            ss.batch_interval_ms,
            MAX_SECS * 1000,
        ),
        (
            "sessions.retention_days",
            ss.retention_days,
            MAX_SECS / 86_400,
        ),
        ("sessions.max_queued", ss.max_queued as u64, 10_000_000),
        ("telemetry.max_events", t.max_events as u64, 1_000_000),
        (
            "telemetry.retention_hours",
            t.retention_hours,
            MAX_SECS / 3600,
        ),
        (
            "telemetry.aggregation_interval_secs",
            t.aggregation_interval_secs,
            MAX_SECS,
        ),
    ];
    for (key, value, max) in limits {
        if value > max {
            out.push(Problem::new(key, value, format!("at most {max}")));
        }
    }
}

fn session_problems(config: &Config, out: &mut Vec<Problem>) {
    let s = &config.sessions;
    match s.sqlite_path() {
        None => out.push(Problem::new(
            "sessions.database_url",
            format!("\"{}\"", s.database_url),
            "sqlite://PATH (SQLite is the store this build has)",
        )),
        // The writer and the API open their own connections; each would get a
        // separate, private in-memory database, and the API would read an empty one.
        Some(path) if path.contains(":memory:") => out.push(Problem::new(
            "sessions.database_url",
            format!("\"{}\"", s.database_url),
            "a file path (an in-memory database is not shared between the writer and the API; \
             set sessions.enabled = false to keep no history)",
        )),
        Some(_) => {}
    }
    for (key, value) in [
        ("sessions.batch_size", s.batch_size as u64),
        ("sessions.batch_interval_ms", s.batch_interval_ms),
        ("sessions.retention_days", s.retention_days),
    ] {
        if value == 0 {
            out.push(Problem::new(key, value, "at least 1"));
        }
    }
    if s.max_queued < s.batch_size {
        out.push(Problem::new(
            "sessions.max_queued",
            s.max_queued,
            format!("at least sessions.batch_size ({})", s.batch_size),
        ));
    }
}

fn api_problems(config: &Config, out: &mut Vec<Problem>) {
    let api = &config.api;
    if api.token.is_some() && api.token_file.is_some() {
        out.push(Problem::new(
            "api.token",
            "set, and api.token_file too",
            "at most one of api.token and api.token_file",
        ));
    }
    if api.token.as_ref().is_some_and(|t| t.expose().is_empty()) {
        out.push(Problem::new("api.token", "\"\"", "a non-empty token"));
    }
    let socks = config.server.bind();
    if api.enabled
        && api.port != 0
        && api.port == socks.port()
        && overlaps(api.bind_address, socks.ip())
    {
        out.push(Problem::new(
            "api.port",
            api.port,
            format!(
                "a port other than server.bind_port ({}): the SOCKS listener on {socks} \
                 and the API on {} cannot share it",
                socks.port(),
                api.bind()
            ),
        ));
    }
    let has_token = api.token.is_some() || api.token_file.is_some();
    if api.enabled && !api.bind_address.is_loopback() && !has_token {
        out.push(Problem::new(
            "api.bind_address",
            format!("\"{}\"", api.bind_address),
            "a loopback address, or api.token (or api.token_file) set: the API can \
             terminate sessions and must not be open to the network",
        ));
    }
    let t = &config.telemetry;
    for (key, value) in [
        ("telemetry.max_events", t.max_events as u64),
        ("telemetry.retention_hours", t.retention_hours),
        (
            "telemetry.aggregation_interval_secs",
            t.aggregation_interval_secs,
        ),
    ] {
        if value == 0 {
            out.push(Problem::new(key, value, "at least 1"));
        }
    }
}

fn user_problems(config: &Config, out: &mut Vec<Problem>) {
    let auth = &config.auth;
    if auth.socks_method == SocksMethod::Userpass && auth.users.is_empty() {
        out.push(Problem::new(
            "auth.users",
            "[]",
            "at least one [[auth.users]] entry when auth.socks_method = \"userpass\"",
        ));
    }
    let mut seen = HashSet::new();
    for (i, user) in auth.users.iter().enumerate() {
        let key = |field: &str| format!("auth.users[{i}].{field}");
        let name_len = user.username.len();
        if !(1..=255).contains(&name_len) {
            let value = format!("\"{}\"", user.username);
            out.push(Problem::new(
                key("username"),
                value,
                "1 to 255 bytes (RFC 1929)",
            ));
        }
        if !seen.insert(user.username.as_str()) {
            let value = format!("\"{}\"", user.username);
            out.push(Problem::new(
                key("username"),
                value,
                "a name not used by an earlier user",
            ));
        }
        match (&user.password, &user.password_hash) {
            (Some(_), Some(_)) | (None, None) => out.push(Problem::new(
                key("password"),
                if user.password.is_some() {
                    "set, and password_hash too"
                } else {
                    "missing"
                },
                "exactly one of password and password_hash",
            )),
            (Some(p), None) if !(1..=255).contains(&p.expose().len()) => out.push(Problem::new(
                key("password"),
                format!("({} bytes)", p.expose().len()),
                "1 to 255 bytes (RFC 1929)",
            )),
            (None, Some(h)) if !crate::auth::is_argon2_phc(h.expose()) => out.push(Problem::new(
                key("password_hash"),
                "(not shown)",
                "an argon2 PHC string such as \"$argon2id$v=19$...\", as printed by \
                 `rustsocks hash-password`",
            )),
            _ => {}
        }
    }
}

pub(super) fn warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let auth = &config.auth;
    if auth.socks_method == SocksMethod::None && !auth.users.is_empty() {
        out.push(
            "auth.users is set but auth.socks_method = \"none\": the users are ignored".into(),
        );
    }
    if auth.socks_method == SocksMethod::Certificate && !auth.users.is_empty() {
        out.push(
            "auth.users is set but auth.socks_method = \"certificate\": users are named by \
             their certificates, and the entries are ignored"
                .into(),
        );
    }
    for user in auth.users.iter().filter(|u| u.password.is_some()) {
        out.push(format!(
            "user \"{}\" has a plain-text password in the config; prefer password_hash \
             (rustsocks hash-password)",
            user.username
        ));
    }
    if auth.socks_method == SocksMethod::Userpass
        && auth.login_backoff_ms > 0
        && auth.login_backoff_max() > config.login_backoff_limit()
    {
        out.push(format!(
            "auth.login_backoff_max_ms = {} is more than half of server.handshake_timeout_ms \
             ({}): logins are held back at most {} ms, so that a turn always comes inside the \
             login's deadline",
            auth.login_backoff_max_ms,
            config.server.handshake_timeout_ms,
            config.login_backoff_limit().as_millis()
        ));
    }
    let acl = &config.acl;
    let named_users = acl
        .rules
        .iter()
        .any(|r| r.users.is_some() || r.groups.is_some());
    if auth.socks_method == SocksMethod::None && named_users {
        out.push(
            "access rules name users or groups, but auth.socks_method = \"none\": no client \
             has a user, so those rules never match (a SOCKS4 user id is not trusted)"
                .into(),
        );
    }
    if auth.socks_method == SocksMethod::Userpass {
        let known: HashSet<&str> = auth.users.iter().map(|u| u.username.as_str()).collect();
        let named = acl
            .rules
            .iter()
            .flat_map(|r| r.users.iter().flatten())
            .chain(acl.groups.iter().flat_map(|g| g.members.iter()));
        let mut unknown: Vec<&str> = named
            .map(String::as_str)
            .filter(|u| !known.contains(u))
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        if !unknown.is_empty() {
            out.push(format!(
                "access rules or groups name users that are not in auth.users: {}",
                unknown.join(", ")
            ));
        }
    }
    if !config.sessions.enabled && (!acl.rules.is_empty() || acl.file.is_some()) {
        out.push(
            "sessions.enabled = false: a reload of the access rules applies to new requests \
             only; open tunnels cannot be judged again (they are not tracked)"
                .into(),
        );
    }
    if config.server.allow_open_proxy && !config.server.bind_address.is_loopback() {
        out.push(format!(
            "running as an open proxy on {} (server.allow_open_proxy = true)",
            config.server.bind_address
        ));
    }
    out
}
