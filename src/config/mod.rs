//! Typed configuration: the TOML file, its defaults, and validation.
//!
//! Every key has a default, so an empty file (or none) is a working configuration.
//! Unknown keys are errors: a typo must never fall back silently to a default.
//! Loading runs in three steps, each with its own failure: read the file, parse it
//! into these structs (toml names the line and key), then `validate` the values
//! together (every problem is collected and names its dotted key).

mod acl;
mod api;
mod auth;
mod dns;
mod files;
mod logging;
mod ports;
mod server;
mod sessions;
mod tls;
mod validate;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use acl::{
    is_host_name, mask4, mask6, normalise_name, parse_destination, parse_net, AclCommand,
    AclConfig, AclRules, Action, Destination, Net, PortRange, Rule,
};
pub use api::{ApiConfig, TelemetryConfig};
pub use auth::{AuthConfig, CertificateUser, Secret, SocksMethod, UserEntry};
pub use dns::{DnsConfig, ResolverKind};
pub use logging::{LogFormat, LogLevel, LoggingConfig};
pub use ports::PortsUnchecked;
pub use server::{PoolSection, Runtime, ServerConfig};
pub use sessions::SessionsConfig;
pub use tls::{TlsSection, TlsVersion};
pub use validate::Problem;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub api: ApiConfig,
    pub telemetry: TelemetryConfig,
    pub sessions: SessionsConfig,
    pub logging: LoggingConfig,
    pub acl: AclConfig,
    pub dns: DnsConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{}", format_problems("invalid configuration", .0))]
    Invalid(Vec<Problem>),
    /// Valid, but the server could not start with it now (a port already in use).
    #[error("{}", format_problems("the server cannot start with this configuration", .0))]
    Unusable(Vec<Problem>),
}

/// One problem on the heading's line; several, each on a line of its own below it.
fn format_problems(heading: &str, problems: &[Problem]) -> String {
    match problems {
        [one] => format!("{heading}: {one}"),
        _ => problems
            .iter()
            .fold(format!("{heading}:"), |out, p| format!("{out}\n  - {p}")),
    }
}

impl Config {
    /// Reads and parses a file without validating it, so that overrides (such as
    /// `--bind`) can be applied before `validate`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text; the error is toml's message, which quotes the line and key.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Checks values that the types alone cannot, returning every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validated_acl().map(drop)
    }

    /// `validate`, returning the access rules it loaded on the way (so that
    /// start-up reads `acl.file` once).
    pub fn validated_acl(&self) -> Result<AclRules, ConfigError> {
        match validate::problems(self) {
            (problems, Some(acl)) if problems.is_empty() => Ok(acl),
            (problems, _) => Err(ConfigError::Invalid(problems)),
        }
    }

    /// The API token from `api.token` or `api.token_file`, if one is configured.
    pub fn api_token(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(token) = &self.api.token {
            return Ok(Some(token.clone()));
        }
        let Some(path) = &self.api.token_file else {
            return Ok(None);
        };
        files::read_token_file(path)
            .map(Some)
            .map_err(|problem| ConfigError::Invalid(vec![problem]))
    }

    /// Things that are allowed but worth telling the operator at start-up.
    pub fn warnings(&self) -> Vec<String> {
        validate::warnings(self)
    }

    /// Whether the destination guard is on, and why: `acl.block_private_destinations`
    /// when set, else on unless the SOCKS listener is loopback-only.
    pub fn private_destinations_blocked(&self) -> (bool, &'static str) {
        match self.acl.block_private_destinations {
            Some(on) => (on, "acl.block_private_destinations"),
            None if self.server.bind_address.to_canonical().is_loopback() => {
                (false, "the default for a loopback-only listener")
            }
            None => (true, "the default for a listener that is not loopback-only"),
        }
    }

    /// One line on the access rules for `check-config`: how many, the default
    /// policy, and whether the destination guard applies.
    pub fn access_summary(&self) -> String {
        let rules = self.acl.load().map_or(0, |r| r.rules.len());
        let (guard, why) = self.private_destinations_blocked();
        format!(
            "access: {rules} rule(s), default_policy = \"{}\"; private destinations are {} ({why})",
            self.acl.default_policy,
            if guard { "blocked" } else { "not blocked" },
        )
    }

    /// The longest a login is held back: `auth.login_backoff_max_ms`, but at most half
    /// of `server.handshake_timeout_ms`, which bounds the whole login. A longer
    /// hold-back would let a client's turn come only after its deadline, so that its
    /// password is never checked and a success never clears its address.
    pub fn login_backoff_limit(&self) -> std::time::Duration {
        self.auth
            .login_backoff_max()
            .min(self.server.handshake_timeout() / 2)
    }
}

#[cfg(test)]
mod tests;
