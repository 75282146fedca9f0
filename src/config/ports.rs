//! `check-config`'s port check: does another socket already listen on a port this
//! configuration binds? Read from the kernel's socket tables (`/proc/net/tcp` and
//! `/proc/net/tcp6`, Linux) instead of binding, so that checking the file of a
//! running server does not disturb it. Where the tables cannot be read, the caller
//! says that the ports were not checked.

use std::io;
use std::net::{IpAddr, SocketAddr};

use super::validate::{overlaps, Problem};
use super::Config;

/// The ports could not be checked without binding them.
#[derive(Debug, thiserror::Error)]
#[error(
    "could not check whether {} free without binding ({source}); start-up fails if \
     another socket listens there",
    list(.addrs)
)]
pub struct PortsUnchecked {
    addrs: Vec<SocketAddr>,
    #[source]
    source: io::Error,
}

fn list(addrs: &[SocketAddr]) -> String {
    let names: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    match names.len() {
        1 => format!("{} is", names[0]),
        _ => format!("{} are", names.join(" and ")),
    }
}

impl Config {
    /// A problem for each listener whose port another socket already listens on
    /// (an overlapping address: the same, or either one unspecified). Port 0 asks
    /// the OS for a free port and is never in use.
    pub fn ports_in_use(&self) -> Result<Vec<Problem>, PortsUnchecked> {
        let mut wanted = vec![("server.bind_port", self.server.bind())];
        if self.api.enabled {
            wanted.push(("api.port", self.api.bind()));
        }
        wanted.retain(|(_, addr)| addr.port() != 0);
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let listening = listening_sockets().map_err(|source| PortsUnchecked {
            addrs: wanted.iter().map(|(_, a)| *a).collect(),
            source,
        })?;
        Ok(wanted
            .into_iter()
            .filter_map(|(key, want)| {
                let taken = listening
                    .iter()
                    .find(|l| l.port() == want.port() && overlaps(l.ip(), want.ip()))?;
                Some(Problem::new(
                    key,
                    want.port(),
                    format!(
                        "a free port on {}: a socket already listens on {taken} (another \
                         process, or this server already running)",
                        want.ip()
                    ),
                ))
            })
            .collect())
    }
}

fn listening_sockets() -> io::Result<Vec<SocketAddr>> {
    let mut out = parse_listening(&std::fs::read_to_string("/proc/net/tcp")?);
    // A kernel without IPv6 has no tcp6 table, and nothing listens on IPv6.
    match std::fs::read_to_string("/proc/net/tcp6") {
        Ok(table) => out.extend(parse_listening(&table)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(out)
}

/// The local addresses of the LISTEN sockets (state `0A`) in a `/proc/net/tcp` or
/// `tcp6` table: a header line, then `sl local_address rem_address st ...`.
fn parse_listening(table: &str) -> Vec<SocketAddr> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            (state == "0A").then(|| parse_hex_addr(local)).flatten()
        })
        .collect()
}

/// `0100007F:0438`, or 32 hex digits and a port for IPv6: the address as 32-bit
/// words printed in host byte order, the port as a number.
fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for i in (0..addr.len()).step_by(8) {
        let word = u32::from_str_radix(addr.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The tables print addresses in host byte order; these samples are from x86-64.
    #[cfg(target_endian = "little")]
    #[test]
    fn listen_sockets_are_read_from_the_proc_tables() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0438 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:0438 0100007F:A2C4 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
";
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
   1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0
";
        let addrs: Vec<String> = parse_listening(v4)
            .into_iter()
            .chain(parse_listening(v6))
            .map(|a| a.to_string())
            .collect();
        assert_eq!(
            addrs,
            ["127.0.0.1:1080", "0.0.0.0:9090", "[::1]:8080", "[::]:80"]
        );
    }

    #[test]
    fn a_port_someone_listens_on_is_reported_naming_the_key() {
        let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else {
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let mut config = Config::default();
        config.server.bind_port = port;
        config.api.port = 0;
        match config.ports_in_use() {
            Ok(problems) => {
                assert_eq!(problems.len(), 1, "{problems:?}");
                assert_eq!(problems[0].key, "server.bind_port");
                let text = problems[0].to_string();
                assert!(
                    text.contains(&format!("listens on 127.0.0.1:{port}")),
                    "{text}"
                );
                drop(listener);
                assert_eq!(config.ports_in_use().unwrap(), []);
            }
            // Not Linux, or no /proc: the caller says so; nothing to assert here.
            Err(unchecked) => assert!(unchecked.to_string().contains("could not check")),
        }
    }
}
