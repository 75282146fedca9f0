//! A throw-away PKI for TLS tests, made with the `openssl` command (Debian's
//! package; the test script installs it): a CA, a server certificate for
//! `localhost` and 127.0.0.1 signed by it, a client certificate signed by it, and
//! a second CA with a client certificate of its own (one the server must refuse).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::TempDir;

pub struct Pki {
    dir: TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let dir = TempDir::new();
        let d = dir.path();
        ca(d, "ca", "RustSocks test CA");
        signed(
            d,
            "server",
            "localhost",
            "ca",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        );
        signed(d, "alice", "alice", "ca", "extendedKeyUsage=clientAuth");
        signed(d, "bob", "bob", "ca", "extendedKeyUsage=clientAuth");
        ca(d, "rogue", "Someone else's CA");
        signed(
            d,
            "mallory",
            "mallory",
            "rogue",
            "extendedKeyUsage=clientAuth",
        );
        // A server certificate from the other CA: what a reload swaps in.
        signed(
            d,
            "server2",
            "localhost",
            "rogue",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        );
        Self { dir }
    }

    /// `NAME.pem` (certificate) or `NAME.key` in the PKI's directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ca(dir: &Path, name: &str, subject: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={subject}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

fn signed(dir: &Path, name: &str, cn: &str, issuer: &str, ext: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), format!("{ext}\n")).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{issuer}.pem"),
            "-CAkey",
            &format!("{issuer}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}
