//! Is an idle connection still open? Answered without consuming a byte.

use std::io;
use std::mem::MaybeUninit;

use tokio::net::TcpStream;

/// Peeks at the socket (it is non-blocking, so this never waits). End of stream
/// means the peer sent FIN; an error means RST. Data waiting means the server spoke
/// first (an SSH or SMTP banner): the connection is alive and, because the peek
/// consumed nothing, the banner is still there for the client.
pub(super) fn is_open(stream: &TcpStream) -> bool {
    let mut buf = [MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(stream).peek(&mut buf) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    }
}
