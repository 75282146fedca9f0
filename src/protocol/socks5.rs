//! SOCKS5 (RFC 1928) and its username/password sub-negotiation (RFC 1929).

use std::net::SocketAddr;

use super::{Decode, Encode, ProtocolError, TargetAddr};

pub const VERSION: u8 = 0x05;
/// Version byte of the RFC 1929 sub-negotiation, not of SOCKS.
pub const USERPASS_VERSION: u8 = 0x01;

/// Authentication method identifiers (RFC 1928 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method(pub u8);

impl Method {
    pub const NO_AUTH: Method = Method(0x00);
    pub const USER_PASS: Method = Method(0x02);
    pub const NO_ACCEPTABLE: Method = Method(0xFF);
}

/// Client greeting: VER, NMETHODS, METHODS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// 1 to 255 entries.
    pub methods: Vec<Method>,
}

impl Greeting {
    pub fn offers(&self, method: Method) -> bool {
        self.methods.contains(&method)
    }
}

impl Decode for Greeting {
    fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let [ver, n, ..] = *buf else {
            return match buf.first() {
                Some(&v) if v != VERSION => Err(ProtocolError::UnsupportedVersion(v)),
                _ => Ok(None),
            };
        };
        if ver != VERSION {
            return Err(ProtocolError::UnsupportedVersion(ver));
        }
        if n == 0 {
            return Err(ProtocolError::NoMethods);
        }
        let total = 2 + usize::from(n);
        let Some(raw) = buf.get(2..total) else {
            return Ok(None);
        };
        let methods = raw.iter().map(|&m| Method(m)).collect();
        Ok(Some((Self { methods }, total)))
    }
}

impl Encode for Greeting {
    fn encode(&self, out: &mut Vec<u8>) {
        let n = self.methods.len().min(255);
        out.extend_from_slice(&[VERSION, n as u8]);
        out.extend(self.methods[..n].iter().map(|m| m.0));
    }
}

/// Server's answer to the greeting: VER, METHOD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSelection(pub Method);

impl Decode for MethodSelection {
    fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        match *buf {
            [VERSION, m, ..] => Ok(Some((Self(Method(m)), 2))),
            [v, ..] if v != VERSION => Err(ProtocolError::UnsupportedVersion(v)),
            _ => Ok(None),
        }
    }
}

impl Encode for MethodSelection {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[VERSION, self.0 .0]);
    }
}

/// RFC 1929 request: VER, ULEN, UNAME, PLEN, PASSWD. The fields are raw bytes: the
/// RFC does not say they are text, and we compare them byte for byte.
#[derive(Clone, PartialEq, Eq)]
pub struct UserPassRequest {
    pub username: Vec<u8>,
    pub password: Vec<u8>,
}

impl std::fmt::Debug for UserPassRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserPassRequest")
            .field("username", &String::from_utf8_lossy(&self.username))
            .field("password", &"***")
            .finish()
    }
}

impl Decode for UserPassRequest {
    fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let Some(&ver) = buf.first() else {
            return Ok(None);
        };
        if ver != USERPASS_VERSION {
            return Err(ProtocolError::UnsupportedAuthVersion(ver));
        }
        let Some(&ulen) = buf.get(1) else {
            return Ok(None);
        };
        if ulen == 0 {
            return Err(ProtocolError::EmptyUsername);
        }
        let uend = 2 + usize::from(ulen);
        let Some(&plen) = buf.get(uend) else {
            return Ok(None);
        };
        let total = uend + 1 + usize::from(plen);
        if buf.len() < total {
            return Ok(None);
        }
        let msg = Self {
            username: buf[2..uend].to_vec(),
            password: buf[uend + 1..total].to_vec(),
        };
        Ok(Some((msg, total)))
    }
}

impl Encode for UserPassRequest {
    fn encode(&self, out: &mut Vec<u8>) {
        let u = &self.username[..self.username.len().min(255)];
        let p = &self.password[..self.password.len().min(255)];
        out.extend_from_slice(&[USERPASS_VERSION, u.len() as u8]);
        out.extend_from_slice(u);
        out.push(p.len() as u8);
        out.extend_from_slice(p);
    }
}

/// RFC 1929 reply: VER, STATUS (0 = success).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserPassReply {
    pub success: bool,
}

impl Decode for UserPassReply {
    fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        match *buf {
            [USERPASS_VERSION, status, ..] => Ok(Some((
                Self {
                    success: status == 0,
                },
                2,
            ))),
            [v, ..] if v != USERPASS_VERSION => Err(ProtocolError::UnsupportedAuthVersion(v)),
            _ => Ok(None),
        }
    }
}

impl Encode for UserPassReply {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[USERPASS_VERSION, if self.success { 0x00 } else { 0x01 }]);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect,
    Bind,
    UdpAssociate,
}

impl Command {
    fn from_byte(b: u8) -> Result<Self, ProtocolError> {
        match b {
            0x01 => Ok(Self::Connect),
            0x02 => Ok(Self::Bind),
            0x03 => Ok(Self::UdpAssociate),
            other => Err(ProtocolError::UnknownCommand(other)),
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            Self::Connect => 0x01,
            Self::Bind => 0x02,
            Self::UdpAssociate => 0x03,
        }
    }
}

/// Client request: VER, CMD, RSV, ATYP, DST.ADDR, DST.PORT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub dest: TargetAddr,
}

impl Decode for Request {
    fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        // Check each header byte as soon as it arrives, so a bad request is answered
        // without waiting for bytes that may never come.
        if let Some(&ver) = buf.first() {
            if ver != VERSION {
                return Err(ProtocolError::UnsupportedVersion(ver));
            }
        }
        let Some(&cmd) = buf.get(1) else {
            return Ok(None);
        };
        let command = Command::from_byte(cmd)?;
        let Some(&rsv) = buf.get(2) else {
            return Ok(None);
        };
        if rsv != 0 {
            return Err(ProtocolError::NonZeroReserved(rsv));
        }
        Ok(TargetAddr::decode(&buf[3..])?.map(|(dest, n)| (Self { command, dest }, 3 + n)))
    }
}

impl Encode for Request {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[VERSION, self.command.to_byte(), 0x00]);
        self.dest.encode(out);
    }
}

/// REP field of a reply (RFC 1928 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyCode {
    Succeeded,
    GeneralFailure,
    NotAllowed,
    NetworkUnreachable,
    HostUnreachable,
    ConnectionRefused,
    TtlExpired,
    CommandNotSupported,
    AddressTypeNotSupported,
    /// A code this implementation does not know (0x09 to 0xFF), kept for clients.
    Other(u8),
}

impl ReplyCode {
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Succeeded => 0x00,
            Self::GeneralFailure => 0x01,
            Self::NotAllowed => 0x02,
            Self::NetworkUnreachable => 0x03,
            Self::HostUnreachable => 0x04,
            Self::ConnectionRefused => 0x05,
            Self::TtlExpired => 0x06,
            Self::CommandNotSupported => 0x07,
            Self::AddressTypeNotSupported => 0x08,
            Self::Other(b) => b,
        }
    }

    pub fn from_byte(b: u8) -> Self {
        match b {
            0x00 => Self::Succeeded,
            0x01 => Self::GeneralFailure,
            0x02 => Self::NotAllowed,
            0x03 => Self::NetworkUnreachable,
            0x04 => Self::HostUnreachable,
            0x05 => Self::ConnectionRefused,
            0x06 => Self::TtlExpired,
            0x07 => Self::CommandNotSupported,
            0x08 => Self::AddressTypeNotSupported,
            other => Self::Other(other),
        }
    }
}

/// Server reply: VER, REP, RSV, ATYP, BND.ADDR, BND.PORT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: ReplyCode,
    pub bind: TargetAddr,
}

impl Reply {
    pub fn new(code: ReplyCode, bind: SocketAddr) -> Self {
        Self {
            code,
            bind: TargetAddr::Ip(bind),
        }
    }

    /// A failure reply; BND fields are all zeros, as they carry no meaning.
    pub fn failure(code: ReplyCode) -> Self {
        Self::new(code, SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

impl Decode for Reply {
    fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        if let Some(&ver) = buf.first() {
            if ver != VERSION {
                return Err(ProtocolError::UnsupportedVersion(ver));
            }
        }
        let Some(&rep) = buf.get(1) else {
            return Ok(None);
        };
        let Some(&rsv) = buf.get(2) else {
            return Ok(None);
        };
        if rsv != 0 {
            return Err(ProtocolError::NonZeroReserved(rsv));
        }
        let code = ReplyCode::from_byte(rep);
        Ok(TargetAddr::decode(&buf[3..])?.map(|(bind, n)| (Self { code, bind }, 3 + n)))
    }
}

impl Encode for Reply {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[VERSION, self.code.to_byte(), 0x00]);
        self.bind.encode(out);
    }
}
