//! SOCKS wire formats: typed messages and their byte encodings.
//!
//! This layer is pure: it turns bytes into messages and messages into bytes and never
//! touches a socket, so it can be property-tested and fuzzed on its own. The server's
//! handshake stage feeds it whatever it has read so far; a decoder answers with a
//! message and the number of bytes it used, with "not enough bytes yet", or with an
//! error that knows which reply (if any) the client should get.

mod addr;
pub mod socks4;
pub mod socks5;
pub mod udp;

#[cfg(test)]
mod tests;

pub use addr::TargetAddr;

/// Longest SOCKS4 user id or SOCKS4a host name we buffer before giving up. The
/// protocol has no length field, so without a cap a client could make us buffer
/// forever.
pub const MAX_SOCKS4_FIELD: usize = 255;

/// A message that can be read from the front of a byte buffer.
pub trait Decode: Sized {
    /// `Ok(None)` means the buffer holds a valid prefix and more bytes are needed.
    /// `Ok(Some((msg, n)))` means the first `n` bytes were one message; bytes after
    /// them belong to whatever comes next and are left alone.
    fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError>;
}

/// A message that can be appended to a byte buffer.
pub trait Encode {
    fn encode(&self, out: &mut Vec<u8>);

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Everything that can be wrong with bytes a client sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("unsupported protocol version {0:#04x}")]
    UnsupportedVersion(u8),
    #[error("greeting offers no authentication methods")]
    NoMethods,
    #[error("unsupported username/password sub-negotiation version {0:#04x}")]
    UnsupportedAuthVersion(u8),
    #[error("empty username")]
    EmptyUsername,
    #[error("unknown command {0:#04x}")]
    UnknownCommand(u8),
    #[error("unknown address type {0:#04x}")]
    UnknownAddressType(u8),
    #[error("reserved byte is {0:#04x}, expected 0x00")]
    NonZeroReserved(u8),
    #[error("domain name is empty")]
    EmptyDomain,
    #[error("domain name is not valid UTF-8")]
    DomainNotUtf8,
    #[error("SOCKS4 field longer than {MAX_SOCKS4_FIELD} bytes")]
    FieldTooLong,
    #[error("datagram shorter than its header")]
    Truncated,
}

impl ProtocolError {
    /// The RFC 1928 reply code a SOCKS5 client should get for this error in its
    /// request, or `None` when the error comes before a request exists (the
    /// connection is then simply closed).
    pub fn reply(&self) -> Option<socks5::ReplyCode> {
        use socks5::ReplyCode;
        match self {
            Self::UnknownCommand(_) => Some(ReplyCode::CommandNotSupported),
            Self::UnknownAddressType(_) => Some(ReplyCode::AddressTypeNotSupported),
            Self::NonZeroReserved(_) | Self::EmptyDomain | Self::DomainNotUtf8 => {
                Some(ReplyCode::GeneralFailure)
            }
            Self::UnsupportedVersion(_)
            | Self::NoMethods
            | Self::UnsupportedAuthVersion(_)
            | Self::EmptyUsername
            | Self::FieldTooLong
            | Self::Truncated => None,
        }
    }
}
