//! The address part of SOCKS5 requests, replies and UDP headers (ATYP, DST.ADDR,
//! DST.PORT), shared by every message that carries one.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::ProtocolError;

pub(crate) const ATYP_IPV4: u8 = 0x01;
pub(crate) const ATYP_DOMAIN: u8 = 0x03;
pub(crate) const ATYP_IPV6: u8 = 0x04;

/// Where a client wants to go: an address, or a name the proxy resolves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetAddr {
    Ip(SocketAddr),
    /// Host name exactly as the client sent it (1 to 255 bytes of UTF-8).
    Domain(String, u16),
}

impl TargetAddr {
    pub fn port(&self) -> u16 {
        match self {
            Self::Ip(addr) => addr.port(),
            Self::Domain(_, port) => *port,
        }
    }

    /// Appends ATYP, address and port.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Ip(SocketAddr::V4(a)) => {
                out.push(ATYP_IPV4);
                out.extend_from_slice(&a.ip().octets());
            }
            Self::Ip(SocketAddr::V6(a)) => {
                out.push(ATYP_IPV6);
                out.extend_from_slice(&a.ip().octets());
            }
            Self::Domain(host, _) => {
                // Hosts longer than 255 bytes cannot be expressed; decoders never
                // produce them and the client code checks before encoding.
                let len = host.len().min(255);
                out.push(ATYP_DOMAIN);
                out.push(len as u8);
                out.extend_from_slice(&host.as_bytes()[..len]);
            }
        }
        out.extend_from_slice(&self.port().to_be_bytes());
    }

    /// Reads ATYP, address and port from the front of `buf`.
    pub(crate) fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let Some(&atyp) = buf.first() else {
            return Ok(None);
        };
        let (addr_len, header) = match atyp {
            ATYP_IPV4 => (4, 1),
            ATYP_IPV6 => (16, 1),
            ATYP_DOMAIN => match buf.get(1) {
                None => return Ok(None),
                Some(0) => return Err(ProtocolError::EmptyDomain),
                Some(&n) => (usize::from(n), 2),
            },
            other => return Err(ProtocolError::UnknownAddressType(other)),
        };
        let total = header + addr_len + 2;
        if buf.len() < total {
            return Ok(None);
        }
        let raw = &buf[header..header + addr_len];
        let port = u16::from_be_bytes([buf[total - 2], buf[total - 1]]);
        let addr = match atyp {
            ATYP_IPV4 => {
                let octets: [u8; 4] = raw.try_into().expect("length checked above");
                Self::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(octets)), port))
            }
            ATYP_IPV6 => {
                let octets: [u8; 16] = raw.try_into().expect("length checked above");
                Self::Ip(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
            }
            _ => {
                let host = std::str::from_utf8(raw).map_err(|_| ProtocolError::DomainNotUtf8)?;
                Self::Domain(host.to_owned(), port)
            }
        };
        Ok(Some((addr, total)))
    }
}

/// Lets maps keyed by `TargetAddr` insert from a borrowed key.
impl From<&TargetAddr> for TargetAddr {
    fn from(addr: &TargetAddr) -> Self {
        addr.clone()
    }
}

impl From<SocketAddr> for TargetAddr {
    fn from(addr: SocketAddr) -> Self {
        Self::Ip(addr)
    }
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(addr) => addr.fmt(f),
            Self::Domain(host, port) => write!(f, "{host}:{port}"),
        }
    }
}
