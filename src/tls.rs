//! TLS for the SOCKS listener: a certificate, its key and optionally the CAs of
//! client certificates, read from PEM files into a rustls server configuration
//! (ring as the crypto provider: no OpenSSL, no C toolchain beyond `cc`).
//!
//! `Tls` holds the configuration in force and swaps it when the files change or
//! on SIGHUP; a handshake takes whatever is current when it starts, so a reload
//! never touches an open tunnel. A bad new file leaves the old configuration in
//! force.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{CertificateUser, TlsSection, TlsVersion};

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
    build(section, prefix).map(|(config, _)| config)
}

/// `server_config`, and when the server's certificate expires (Unix seconds).
fn build(section: &TlsSection, prefix: &str) -> Result<(Arc<ServerConfig>, i64), TlsError> {
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
    let expires = not_after(&chain[0]).ok_or_else(|| {
        TlsError::new(
            key("certificate"),
            cert_path,
            "its first certificate is not a valid X.509 certificate",
        )
    })?;
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
    Ok((Arc::new(config), expires))
}

/// When `der` (one X.509 certificate) stops being valid, as Unix seconds.
fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Longest user name taken from a certificate: what RFC 1929 can carry, so that
/// the same rules and records work for both kinds of user.
const MAX_USER: usize = 255;

/// The user that `field` names in the client certificate `der` (verified by the
/// handshake already); None if the certificate has no such name, or one that is
/// empty, too long or holds control characters.
pub fn certificate_user(der: &[u8], field: CertificateUser) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = match field {
        CertificateUser::SubjectCn => cert
            .subject()
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_owned(),
        CertificateUser::SanEmail | CertificateUser::SanDns => {
            let san = cert.subject_alternative_name().ok()??;
            san.value
                .general_names
                .iter()
                .find_map(|n| match (field, n) {
                    (CertificateUser::SanEmail, GeneralName::RFC822Name(s))
                    | (CertificateUser::SanDns, GeneralName::DNSName(s)) => Some((*s).to_owned()),
                    _ => None,
                })?
        }
    };
    let usable = !name.is_empty() && name.len() <= MAX_USER && !name.chars().any(char::is_control);
    usable.then_some(name)
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
    /// When the certificate in force expires, Unix seconds.
    expires: AtomicI64,
    /// Modification time and length of each file when last loaded: a change is
    /// seen by polling these (no watcher thread).
    stamps: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("listener", &self.listener())
            .field("expires", &self.expires())
            .finish_non_exhaustive()
    }
}

impl Tls {
    pub fn load(section: &TlsSection, prefix: &str) -> Result<Self, TlsError> {
        let (config, expires) = build(section, prefix)?;
        let tls = Self {
            section: section.clone(),
            prefix: prefix.to_owned(),
            current: ArcSwap::new(config),
            expires: AtomicI64::new(expires),
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
        let (config, expires) = build(&self.section, &self.prefix)?;
        self.current.store(config);
        self.expires.store(expires, Ordering::Relaxed);
        Ok(())
    }

    /// When the certificate in force expires, Unix seconds.
    pub fn expires(&self) -> i64 {
        self.expires.load(Ordering::Relaxed)
    }

    /// Which listener this configuration is for: the key prefix without `.tls`
    /// (`server`, `api`).
    pub fn listener(&self) -> &str {
        self.prefix.strip_suffix(".tls").unwrap_or(&self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate with CN carol, SAN DNS carol.example and SAN
    /// e-mail carol@example.org, valid until 2126 (made once with openssl).
    fn fixture() -> Vec<u8> {
        let pem = include_bytes!("../tests/data/client-names.pem");
        CertificateDer::from_pem_slice(pem).unwrap().to_vec()
    }

    #[test]
    fn each_configured_name_of_a_certificate_can_be_the_user() {
        let der = fixture();
        let user = |field| certificate_user(&der, field);
        assert_eq!(user(CertificateUser::SubjectCn).as_deref(), Some("carol"));
        assert_eq!(
            user(CertificateUser::SanEmail).as_deref(),
            Some("carol@example.org")
        );
        assert_eq!(
            user(CertificateUser::SanDns).as_deref(),
            Some("carol.example")
        );
    }

    #[test]
    fn expiry_is_read_from_the_certificate() {
        // notAfter = 2126-11-07 11:08:23 UTC.
        assert_eq!(not_after(&fixture()), Some(4_949_723_303));
    }

    proptest::proptest! {
        /// Whatever the bytes, no name and no panic unless they are a certificate.
        #[test]
        fn arbitrary_bytes_name_no_user(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            for field in [CertificateUser::SubjectCn, CertificateUser::SanEmail, CertificateUser::SanDns] {
                proptest::prop_assert_eq!(certificate_user(&bytes, field), None);
            }
        }

        /// A real certificate cut short or with one byte changed never panics.
        #[test]
        fn damaged_certificates_do_not_panic(cut in 0usize..600, at in 0usize..600, byte in proptest::num::u8::ANY) {
            let mut der = fixture();
            if at < der.len() {
                der[at] = byte;
            }
            der.truncate(cut.min(der.len()));
            let _ = certificate_user(&der, CertificateUser::SubjectCn);
            let _ = not_after(&der);
        }
    }
}
