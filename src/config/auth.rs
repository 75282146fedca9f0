//! `[auth]`: which SOCKS5 method the server requires, and its users.

use std::fmt;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub socks_method: SocksMethod,
    pub users: Vec<UserEntry>,
    /// Failed logins an address may make before its attempts are held back.
    pub login_failures_before_backoff: u32,
    /// The first hold-back; it doubles with each further failure. 0 = never held back.
    pub login_backoff_ms: u64,
    /// The longest hold-back; also the spacing of attempts from an address that
    /// keeps failing, however many connections it opens.
    pub login_backoff_max_ms: u64,
    /// With `socks_method = "certificate"`: which name of the client certificate
    /// is the user.
    pub certificate_user: CertificateUser,
    /// With `socks_method = "pam"`: the PAM service (`/etc/pam.d/NAME`).
    pub pam_service: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            socks_method: SocksMethod::None,
            users: Vec::new(),
            login_failures_before_backoff: 3,
            login_backoff_ms: 250,
            login_backoff_max_ms: 5_000,
            certificate_user: CertificateUser::SubjectCn,
            pam_service: "rustsocks".into(),
        }
    }
}

impl AuthConfig {
    pub fn login_backoff(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.login_backoff_ms)
    }

    pub fn login_backoff_max(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.login_backoff_max_ms)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocksMethod {
    /// No authentication (method 0x00). SOCKS4 clients are accepted.
    #[default]
    None,
    /// RFC 1929 username/password (method 0x02). SOCKS4, which cannot carry a
    /// password, is refused.
    Userpass,
    /// The client certificate of the TLS connection names the user
    /// (`certificate_user`); SOCKS5 clients offer method 0x00, SOCKS4 clients are
    /// accepted. Needs `[server.tls]` with required client certificates.
    Certificate,
    /// RFC 1929 username/password (method 0x02) checked by PAM (`pam_service`),
    /// account checks included. SOCKS4 is refused.
    Pam,
}

/// `auth.certificate_user`: the name of a client certificate that is the user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateUser {
    /// The subject's common name (CN).
    #[default]
    SubjectCn,
    /// The first e-mail address among the subject alternative names.
    SanEmail,
    /// The first DNS name among the subject alternative names.
    SanDns,
}

/// One `[[auth.users]]` entry: exactly one of `password` and `password_hash`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub username: String,
    #[serde(default)]
    pub password: Option<Secret>,
    /// An argon2 PHC string, as printed by `rustsocks hash-password`.
    #[serde(default)]
    pub password_hash: Option<Secret>,
}

/// A string that must never reach a log: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
