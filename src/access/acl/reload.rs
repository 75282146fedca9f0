//! Reloading the rules (SIGHUP, a change of `acl.file`, `POST /api/acl/reload`):
//! the new rules are read and checked in full, then swapped in whole; a bad file
//! leaves the rules in force untouched. Live sessions are then judged again, and
//! those the new rules block are closed with reason `acl`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::SystemTime;

use tracing::{info, warn};

use super::{Access, Policy, Query};
use crate::config::{AclCommand, Config, ConfigError};
use crate::connector::Resolver;
use crate::protocol::TargetAddr;
use crate::session::Sessions;
use crate::telemetry::{Signal, Telemetry};

#[derive(Debug, thiserror::Error)]
#[error("the access rules were not reloaded (the rules in force stay): {source}")]
pub struct ReloadError {
    #[from]
    pub source: ConfigError,
}

/// What a successful reload did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Reloaded {
    pub rules: usize,
    pub groups: usize,
    /// `acl.file`, when the rules include one.
    #[schema(value_type = Option<String>)]
    pub file: Option<PathBuf>,
    /// Live sessions the new rules block, closed.
    pub sessions_closed: usize,
    #[serde(serialize_with = "crate::session::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub loaded_at: SystemTime,
}

impl Access {
    /// Reads the rules again from where they live (the main file's `[acl]`, and
    /// `acl.file`), and puts them in force if they are valid.
    pub fn reload(&self) -> Result<Arc<Policy>, ReloadError> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let config = match &self.config_file {
            Some(path) => Config::from_file(path)?.acl,
            None => self.started_with.clone(),
        };
        let rules = config.load().map_err(ConfigError::Invalid)?;
        let policy = Arc::new(Policy {
            generation: self.live.load().generation + 1,
            ..Policy::new(rules, self.loopback_listener)
        });
        self.live.store(Arc::clone(&policy));
        Ok(policy)
    }
}

/// Reloads and closes what the new rules block, reporting either way to the log
/// and telemetry: what SIGHUP, the file watch and the API call.
#[derive(Clone)]
pub struct AclControl {
    pub access: Arc<Access>,
    pub sessions: Option<Arc<Sessions>>,
    pub telemetry: Telemetry,
    /// The resolver requests use, for `POST /api/acl/test`.
    pub resolver: Resolver,
}

impl AclControl {
    /// `trigger` says what asked (for the log): "SIGHUP", "acl.file changed", "API".
    pub fn reload(&self, trigger: &str) -> Result<Reloaded, ReloadError> {
        match self.access.reload() {
            Ok(policy) => {
                let closed = self
                    .sessions
                    .as_ref()
                    .map_or(0, |s| recheck_sessions(&self.access, s));
                let done = Reloaded {
                    rules: policy.acl.rules.len(),
                    groups: policy.acl.groups.len(),
                    file: policy.acl.file.clone(),
                    sessions_closed: closed,
                    loaded_at: policy.loaded_at,
                };
                info!(
                    trigger,
                    rules = done.rules,
                    sessions_closed = closed,
                    "access rules reloaded"
                );
                self.telemetry.emit(Signal::AclReloaded {
                    trigger: trigger.to_owned(),
                    rules: done.rules,
                    sessions_closed: closed,
                });
                Ok(done)
            }
            Err(e) => {
                warn!(trigger, error = %e, "access rules not reloaded");
                self.telemetry.emit(Signal::AclReloadFailed {
                    trigger: trigger.to_owned(),
                    keys: problem_keys(&e.source),
                    error: e.source.to_string(),
                });
                Err(e)
            }
        }
    }
}

/// The keys a configuration error names (empty when it is not about values).
fn problem_keys(e: &ConfigError) -> Vec<String> {
    match e {
        ConfigError::Invalid(problems) | ConfigError::Unusable(problems) => {
            problems.iter().map(|p| p.key.clone()).collect()
        }
        ConfigError::Read { .. } => vec!["acl".into()],
        ConfigError::Parse { message, .. } => {
            // toml names a key in "unknown field `x`" and "missing field `x`"; other
            // messages quote values, so they name no key.
            let key = ["unknown field `", "missing field `"]
                .iter()
                .find_map(|m| message.split_once(m))
                .and_then(|(_, rest)| rest.split('`').next())
                .unwrap_or("acl");
            vec![key.to_owned()]
        }
    }
}

/// Judges every live CONNECT and BIND session again under the rules in force and
/// closes those now blocked. Returns how many were closed. (UDP associations
/// check each datagram, against the rules of the moment it is sent.)
pub fn recheck_sessions(access: &Access, sessions: &Sessions) -> usize {
    let policy = access.policy();
    let mut closed = 0;
    for session in sessions.registry().snapshot() {
        let r = &session.record;
        let command = match r.command.as_deref() {
            Some("connect") => AclCommand::Connect,
            Some("bind") => AclCommand::Bind,
            _ => continue,
        };
        let resolved: Option<SocketAddr> = r.resolved.as_deref().and_then(|a| a.parse().ok());
        // A BIND was judged by its peer, a CONNECT by what it asked for.
        let dest = match (command, resolved) {
            (AclCommand::Bind, Some(peer)) => TargetAddr::Ip(peer),
            _ => match r.destination.as_deref().and_then(parse_target) {
                Some(dest) => dest,
                None => continue,
            },
        };
        let Ok(client) = r.client.parse::<SocketAddr>() else {
            continue;
        };
        // A SOCKS4 user id is a claim, never authenticated: the rules saw "".
        let user = match r.protocol.as_str() {
            "socks4" => "",
            _ => r.user.as_deref().unwrap_or(""),
        };
        let groups = access.groups_of_blocking(user);
        let q = Query {
            user,
            groups: &groups,
            client: client.ip(),
            command,
            port: dest.port(),
        };
        let addrs: Vec<SocketAddr> = resolved.into_iter().collect();
        let verdict = policy.judge(access.own(), &q, &dest, &addrs);
        if !verdict.allowed() {
            session.cut(format!("acl: {}", policy.reason(&verdict)));
            closed += 1;
        }
    }
    closed
}

/// A destination as a session record writes it (`host:port`, `1.2.3.4:80`,
/// `[::1]:80`).
fn parse_target(text: &str) -> Option<TargetAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(TargetAddr::Ip(addr));
    }
    let (host, port) = text.rsplit_once(':')?;
    Some(TargetAddr::Domain(host.to_owned(), port.parse().ok()?))
}
