//! TLS for the SOCKS listener: a certificate, its key and optionally the CAs of
//! client certificates, read from PEM files into a rustls server configuration
//! (ring as the crypto provider: no OpenSSL, no C toolchain beyond `cc`).
//!
//! `Tls` holds the configuration in force and swaps it when the files change or
//! on SIGHUP; a handshake takes whatever is current when it starts, so a reload
//! never touches an open tunnel. A bad new file leaves the old configuration in
//! force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{TlsSection, TlsVersion};

/// A file of the TLS configuration that could not be used, named by its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} = \"{path}\": {why}")]
pub struct TlsError {
    /// The dotted configuration key (`server.tls.certificate`, ...).
    pub key: String,
    pub path: String,
    pub why: String,
}

impl TlsError {
    fn new(key: String, path: &Path, why: impl Into<String>) -> Self {
        Self {
            key,
            path: path.display().to_string(),
            why: why.into(),
        }
    }
}

/// The rustls configuration for `section`, whose keys start with `prefix`
/// (`server.tls`). Every problem names its key and file.
pub fn server_config(section: &TlsSection, prefix: &str) -> Result<Arc<ServerConfig>, TlsError> {
    let key = |name: &str| format!("{prefix}.{name}");
    let missing = |name: &str| TlsError {
        key: key(name),
        path: String::new(),
        why: format!("required when {prefix}.enabled = true"),
    };
    let cert_path = section
        .certificate
        .as_deref()
        .ok_or_else(|| missing("certificate"))?;
    let key_path = section
        .private_key
        .as_deref()
        .ok_or_else(|| missing("private_key"))?;
    let chain = certificates(cert_path, key("certificate"))?;
    let private_key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        TlsError::new(
            key("private_key"),
            key_path,
            format!("expected a PEM private key ({})", pem_cause(&e)),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match section.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::new(key("min_version"), Path::new(""), e.to_string()))?;
    let builder = match &section.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca_path, key("client_ca"))? {
                roots.add(cert).map_err(|e| {
                    TlsError::new(
                        key("client_ca"),
                        ca_path,
                        format!("not a usable CA certificate: {e}"),
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match section.require_client_certificate {
                true => verifier,
                false => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|e| {
                TlsError::new(
                    key("client_ca"),
                    ca_path,
                    format!("cannot verify clients with it: {e}"),
                )
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, private_key).map_err(|e| {
        TlsError::new(
            key("private_key"),
            key_path,
            format!("does not go with {}: {e}", cert_path.display()),
        )
    })?;
    config.alpn_protocols = section.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// Every certificate in the PEM file at `path`; at least one.
fn certificates(path: &Path, key: String) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::new(key.clone(), path, pem_cause(&e)))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(key.clone(), path, pem_cause(&e)))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            key,
            path,
            "expected PEM certificates, found none",
        ));
    }
    Ok(certs)
}

fn pem_cause(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound => "it does not exist".into(),
        Error::Io(io) => format!("cannot read it: {io}"),
        Error::NoItemsFound => "no PEM item of the expected kind in it".into(),
        other => format!("not valid PEM: {other:?}"),
    }
}

/// The TLS configuration in force for one listener, and what it was loaded from.
pub struct Tls {
    section: TlsSection,
    prefix: String,
    current: ArcSwap<ServerConfig>,
    /// Modification time and length of each file when last loaded: a change is
    /// seen by polling these (no watcher thread).
    stamps: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl Tls {
    pub fn load(section: &TlsSection, prefix: &str) -> Result<Self, TlsError> {
        let config = server_config(section, prefix)?;
        let tls = Self {
            section: section.clone(),
            prefix: prefix.to_owned(),
            current: ArcSwap::new(config),
            stamps: Mutex::new(Vec::new()),
        };
        *tls.stamps.lock().unwrap_or_else(PoisonError::into_inner) = tls.stamp();
        Ok(tls)
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    fn files(&self) -> impl Iterator<Item = &PathBuf> {
        [
            &self.section.certificate,
            &self.section.private_key,
            &self.section.client_ca,
        ]
        .into_iter()
        .flatten()
    }

    fn stamp(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.files()
            .map(|p| {
                let m = std::fs::metadata(p).ok()?;
                Some((m.modified().ok()?, m.len()))
            })
            .collect()
    }

    /// Whether a file changed since the last load (or the last failed attempt:
    /// a bad file is reported once, not every second).
    pub fn changed(&self) -> bool {
        let now = self.stamp();
        let mut seen = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        if *seen == now {
            return false;
        }
        *seen = now;
        true
    }

    /// Loads the files again; on error the configuration in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.section, &self.prefix)?;
        self.current.store(config);
        Ok(())
    }
}
