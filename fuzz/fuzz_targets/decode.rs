//! Every decoder of client input, on arbitrary bytes: none may panic, and a decoded
//! message never claims more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustsocks::protocol::socks5::{Greeting, Request, UserPassRequest};
use rustsocks::protocol::udp::UdpHeader;
use rustsocks::protocol::{socks4, Decode};

fn within<T>(r: Result<Option<(T, usize)>, rustsocks::protocol::ProtocolError>, len: usize) {
    if let Ok(Some((_, used))) = r {
        assert!(used <= len);
    }
}

fuzz_target!(|data: &[u8]| {
    within(Greeting::decode(data), data.len());
    within(UserPassRequest::decode(data), data.len());
    within(Request::decode(data), data.len());
    within(socks4::Request::decode(data), data.len());
    if let Ok((_, payload)) = UdpHeader::decode(data) {
        assert!(payload.len() <= data.len());
    }
});
