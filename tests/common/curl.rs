//! curl through the proxy, as a user would run it.

use std::process::Command;

/// What curl did.
#[derive(Debug)]
pub struct Fetch {
    pub exit: i32,
    pub body: Vec<u8>,
    pub stderr: String,
}

impl Fetch {
    /// The SOCKS reply code curl reports for a request the proxy did not grant
    /// ("Can't complete SOCKS5 connection to HOST. (2)").
    pub fn reply(&self) -> Option<u8> {
        let text = self.stderr.trim_end().strip_suffix(')')?;
        text.rsplit_once('(')?.1.parse().ok()
    }
}

/// Runs `curl --silent --show-error --max-time 20 ARGS... URL` (on the blocking
/// pool: it waits for the process).
pub async fn fetch(args: Vec<String>, url: String) -> Fetch {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "20"])
            .args(&args)
            .arg(&url)
            .output()
            .expect("curl is installed (scripts/test.sh installs it)");
        Fetch {
            exit: out.status.code().unwrap_or(-1),
            body: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}
