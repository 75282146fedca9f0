//! Is an idle connection still open? Answered without consuming a byte.

use std::io;
use std::mem::MaybeUninit;

use tokio::net::TcpStream;

/// True while the connection is ESTABLISHED. On Linux that is the socket's TCP state
/// (`TCP_INFO`): a FIN from the peer moves it to CLOSE_WAIT and a RST to CLOSE even
/// when a banner the server sent before closing is still unread, which a peek would
/// take for a live server speaking first (MySQL, SMTP and FTP servers send a greeting
/// and later close an idle connection with a last line). Elsewhere, a peek: end of
/// stream means FIN, an error means RST, data or nothing to read means open. Neither
/// consumes a byte, so a live server's banner stays there for the client.
pub(super) fn is_open(stream: &TcpStream) -> bool {
    #[cfg(target_os = "linux")]
    if let Some(state) = tcp_state(stream) {
        return state == TCP_ESTABLISHED;
    }
    let mut buf = [MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(stream).peek(&mut buf) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    }
}

#[cfg(target_os = "linux")]
const TCP_ESTABLISHED: u8 = 1;

/// The kernel's TCP state of the socket (`tcpi_state`), or None if it cannot say.
#[cfg(target_os = "linux")]
fn tcp_state(stream: &TcpStream) -> Option<u8> {
    use std::os::fd::AsRawFd;
    let mut info = MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is that large
    // and zeroed, so every field is initialised whatever the kernel fills in.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 || len == 0 {
        return None;
    }
    // SAFETY: zero-initialised above; the kernel wrote a prefix of it.
    Some(unsafe { info.assume_init() }.tcpi_state)
}
