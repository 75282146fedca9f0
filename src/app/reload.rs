//! Watching `acl.file` (and the TLS files, see `Tls::changed`): its metadata is read once a second and a change (a new
//! modification time, size or inode: an editor that writes a new file and renames
//! it over the old one counts) reloads the rules. Polling needs no watcher thread
//! and sees a file that is replaced, deleted or created alike.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use std::sync::Arc;

use crate::access::AclControl;
use crate::telemetry::{Signal, Telemetry};
use crate::tls::{Tls, TlsError};

const POLL: Duration = Duration::from_secs(1);

/// What identifies one version of a file; None when it cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    path: PathBuf,
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: PathBuf) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
        path,
    })
}

/// Runs until aborted: reloads when the `acl.file` of the rules in force changes.
pub(super) async fn watch_acl_file(acl: AclControl) {
    let current = || acl.access.policy().acl.file.clone().map(stamp);
    let mut last = current();
    loop {
        tokio::time::sleep(POLL).await;
        let now = current();
        if now != last {
            // The stamp is taken before the reload reads the file: a write that
            // lands during the reload changes it again and is loaded next time. A
            // bad version keeps the rules in force and is reported once, until the
            // file changes again.
            last = now;
            // Reading, parsing and re-judging the sessions: off the async workers.
            let control = acl.clone();
            let _ = tokio::task::spawn_blocking(move || control.reload("acl.file changed")).await;
        }
    }
}

/// A certificate that expires within this raises a warning event: at start, after
/// each reload, and once a day while it lasts.
const EXPIRY_WARNING_SECS: i64 = 14 * 86_400;
const EXPIRY_CHECK_POLLS: u32 = 86_400;

/// Warns (log and event) when the certificate in force expires within
/// `EXPIRY_WARNING_SECS`.
pub(super) fn warn_if_expiring(tls: &Tls, telemetry: &Telemetry) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let left = tls.expires() - now;
    if left < EXPIRY_WARNING_SECS {
        let days_left = left.div_euclid(86_400);
        tracing::warn!(
            listener = tls.listener(),
            days_left,
            "TLS certificate expires soon"
        );
        telemetry.emit(Signal::TlsCertificateExpiring {
            listener: tls.listener().to_owned(),
            days_left,
        });
    }
}

/// Runs until aborted: reloads the TLS configuration when one of its files changes.
pub(super) async fn watch_tls_files(tls: Arc<Tls>, telemetry: Telemetry) {
    warn_if_expiring(&tls, &telemetry);
    let mut polls = 0u32;
    loop {
        tokio::time::sleep(POLL).await;
        polls += 1;
        if polls == EXPIRY_CHECK_POLLS {
            polls = 0;
            warn_if_expiring(&tls, &telemetry);
        }
        if tls.changed() {
            let (tls, telemetry) = (Arc::clone(&tls), telemetry.clone());
            let _ = tokio::task::spawn_blocking(move || {
                reload_tls(&tls, &telemetry, "certificate files changed")
            })
            .await;
        }
    }
}

/// Loads the TLS files again; reported either way. On failure the configuration
/// in force stays.
pub(super) fn reload_tls(tls: &Tls, telemetry: &Telemetry, trigger: &str) -> Result<(), TlsError> {
    match tls.reload() {
        Ok(()) => {
            tracing::info!(trigger, "TLS certificate reloaded");
            telemetry.emit(Signal::TlsReloaded {
                trigger: trigger.to_owned(),
            });
            warn_if_expiring(tls, telemetry);
            Ok(())
        }
        Err(e) => {
            tracing::error!(trigger, error = %e, "TLS certificate not reloaded; the one in force stays");
            telemetry.emit(Signal::TlsReloadFailed {
                trigger: trigger.to_owned(),
                key: e.key.clone(),
                error: e.to_string(),
            });
            Err(e)
        }
    }
}
