//! The SOCKS5 UDP request header (RFC 1928 section 7): RSV (2), FRAG, ATYP,
//! DST.ADDR, DST.PORT, then the payload. A datagram is complete or nothing, so a
//! short header is an error, not "need more".

use super::{ProtocolError, TargetAddr};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpHeader {
    /// Fragment number; 0 is a whole datagram. This server drops fragments.
    pub frag: u8,
    pub dest: TargetAddr,
}

impl UdpHeader {
    /// Parses the header at the front of `datagram`; returns it and the payload.
    pub fn decode(datagram: &[u8]) -> Result<(Self, &[u8]), ProtocolError> {
        let [r0, r1, frag, ..] = *datagram else {
            return Err(ProtocolError::Truncated);
        };
        if r0 != 0 || r1 != 0 {
            return Err(ProtocolError::NonZeroReserved(if r0 != 0 {
                r0
            } else {
                r1
            }));
        }
        match TargetAddr::decode(&datagram[3..])? {
            Some((dest, n)) => Ok((Self { frag, dest }, &datagram[3 + n..])),
            None => Err(ProtocolError::Truncated),
        }
    }

    /// Appends the header; the caller appends the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0, 0, self.frag]);
        self.dest.encode(out);
    }
}
