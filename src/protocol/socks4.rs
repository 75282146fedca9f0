//! SOCKS4 and SOCKS4a. There is no formal RFC; the de-facto documents are
//! "SOCKS: A protocol for TCP proxy across firewalls" and the SOCKS4a extension, in
//! which an address of 0.0.0.x (x != 0) means "a host name follows the user id".

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use super::{Decode, Encode, ProtocolError, TargetAddr, MAX_SOCKS4_FIELD};

pub const VERSION: u8 = 0x04;
/// Replies carry version 0, not 4.
pub const REPLY_VERSION: u8 = 0x00;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect,
    Bind,
}

/// VN, CD, DSTPORT, DSTIP, USERID, NUL [, HOST, NUL].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    /// IPv4 for SOCKS4, a host name for SOCKS4a.
    pub dest: TargetAddr,
    pub user_id: Vec<u8>,
}

/// Reads a NUL-terminated field starting at `start`: `Ok(Some((field, end)))` where
/// `end` is the index just past the NUL.
fn nul_terminated(buf: &[u8], start: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let rest = buf.get(start..).unwrap_or_default();
    match rest.iter().position(|&b| b == 0) {
        Some(len) if len > MAX_SOCKS4_FIELD => Err(ProtocolError::FieldTooLong),
        Some(len) => Ok(Some((&rest[..len], start + len + 1))),
        None if rest.len() > MAX_SOCKS4_FIELD => Err(ProtocolError::FieldTooLong),
        None => Ok(None),
    }
}

impl Decode for Request {
    fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        if let Some(&vn) = buf.first() {
            if vn != VERSION {
                return Err(ProtocolError::UnsupportedVersion(vn));
            }
        }
        let command = match buf.get(1) {
            None => return Ok(None),
            Some(0x01) => Command::Connect,
            Some(0x02) => Command::Bind,
            Some(&other) => return Err(ProtocolError::UnknownCommand(other)),
        };
        let [_, _, p0, p1, a, b, c, d, ..] = *buf else {
            return Ok(None);
        };
        let port = u16::from_be_bytes([p0, p1]);
        let Some((user_id, end)) = nul_terminated(buf, 8)? else {
            return Ok(None);
        };
        let user_id = user_id.to_vec();
        let is_4a = a == 0 && b == 0 && c == 0 && d != 0;
        if !is_4a {
            let ip = Ipv4Addr::new(a, b, c, d);
            let dest = TargetAddr::Ip(SocketAddr::V4(SocketAddrV4::new(ip, port)));
            return Ok(Some((
                Self {
                    command,
                    dest,
                    user_id,
                },
                end,
            )));
        }
        let Some((host, end)) = nul_terminated(buf, end)? else {
            return Ok(None);
        };
        if host.is_empty() {
            return Err(ProtocolError::EmptyDomain);
        }
        let host = std::str::from_utf8(host).map_err(|_| ProtocolError::DomainNotUtf8)?;
        let dest = TargetAddr::Domain(host.to_owned(), port);
        Ok(Some((
            Self {
                command,
                dest,
                user_id,
            },
            end,
        )))
    }
}

impl Encode for Request {
    fn encode(&self, out: &mut Vec<u8>) {
        let cd = match self.command {
            Command::Connect => 0x01,
            Command::Bind => 0x02,
        };
        out.extend_from_slice(&[VERSION, cd]);
        out.extend_from_slice(&self.dest.port().to_be_bytes());
        // SOCKS4 cannot express IPv6; such a request goes out as 0.0.0.0, which a
        // server rejects, rather than as something that means a different host.
        let ip = match &self.dest {
            TargetAddr::Ip(SocketAddr::V4(a)) => *a.ip(),
            TargetAddr::Ip(SocketAddr::V6(_)) => Ipv4Addr::UNSPECIFIED,
            TargetAddr::Domain(..) => Ipv4Addr::new(0, 0, 0, 1),
        };
        out.extend_from_slice(&ip.octets());
        out.extend(self.user_id.iter().copied().filter(|&b| b != 0));
        out.push(0);
        if let TargetAddr::Domain(host, _) = &self.dest {
            out.extend(host.bytes().filter(|&b| b != 0));
            out.push(0);
        }
    }
}

/// VN (0), CD, DSTPORT, DSTIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub granted: bool,
    pub bind: SocketAddrV4,
}

impl Reply {
    pub const GRANTED: u8 = 0x5A;
    pub const REJECTED: u8 = 0x5B;

    pub fn rejected() -> Self {
        Self {
            granted: false,
            bind: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        }
    }
}

impl Decode for Reply {
    fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        match *buf {
            [REPLY_VERSION, cd, p0, p1, a, b, c, d, ..] => {
                let bind =
                    SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from_be_bytes([p0, p1]));
                Ok(Some((
                    Self {
                        granted: cd == Self::GRANTED,
                        bind,
                    },
                    8,
                )))
            }
            [v, ..] if v != REPLY_VERSION => Err(ProtocolError::UnsupportedVersion(v)),
            _ => Ok(None),
        }
    }
}

impl Encode for Reply {
    fn encode(&self, out: &mut Vec<u8>) {
        let cd = if self.granted {
            Self::GRANTED
        } else {
            Self::REJECTED
        };
        out.extend_from_slice(&[REPLY_VERSION, cd]);
        out.extend_from_slice(&self.bind.port().to_be_bytes());
        out.extend_from_slice(&self.bind.ip().octets());
    }
}
