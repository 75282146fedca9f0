//! `[server.tls]`: SOCKS over TLS. The same section shape serves any listener that
//! speaks TLS. Paths are checked and the files loaded by `crate::tls` (validation
//! calls it, so `check-config` reports a bad certificate before anything binds).

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// The listener speaks TLS first, then SOCKS inside it.
    pub enabled: bool,
    /// PEM: the server's certificate, then any intermediates.
    pub certificate: Option<PathBuf>,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: Option<PathBuf>,
    /// PEM: the CAs whose client certificates are accepted. Without it no client
    /// certificate is asked for.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: refuse clients that present no certificate (mutual TLS).
    /// Without this a client may go on without one, and authenticates as
    /// `auth.socks_method` says.
    pub require_client_certificate: bool,
    /// The oldest TLS version accepted.
    pub min_version: TlsVersion,
    /// ALPN protocol names offered, in order of preference; empty: none.
    pub alpn: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}
