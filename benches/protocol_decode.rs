//! Decoding the messages every SOCKS session parses: the greeting, the RFC 1929
//! credentials, and CONNECT requests with each address type; and encoding a reply.
//!
//! Run: `cargo bench --bench protocol_decode`.

use std::net::SocketAddr;

use divan::black_box;
use rustsocks::protocol::socks5::{
    Command, Greeting, Method, Reply, ReplyCode, Request, UserPassRequest,
};
use rustsocks::protocol::{socks4, Decode, Encode, TargetAddr};

fn main() {
    divan::main();
}

fn request(dest: TargetAddr) -> Vec<u8> {
    Request {
        command: Command::Connect,
        dest,
    }
    .to_bytes()
}

#[divan::bench]
fn greeting(b: divan::Bencher) {
    let bytes = Greeting {
        methods: vec![Method::NO_AUTH, Method::USER_PASS],
    }
    .to_bytes();
    b.bench(|| Greeting::decode(black_box(&bytes)));
}

#[divan::bench]
fn userpass(b: divan::Bencher) {
    let bytes = UserPassRequest {
        username: b"alice".to_vec(),
        password: b"correct horse".to_vec(),
    }
    .to_bytes();
    b.bench(|| UserPassRequest::decode(black_box(&bytes)));
}

#[divan::bench(args = ["ipv4", "ipv6", "domain"])]
fn connect_request(b: divan::Bencher, kind: &str) {
    let dest = match kind {
        "ipv4" => TargetAddr::Ip(SocketAddr::from(([93, 184, 216, 34], 443))),
        "ipv6" => TargetAddr::Ip("[2606:2800:220:1::248]:443".parse().unwrap()),
        _ => TargetAddr::Domain("www.example.com".into(), 443),
    };
    let bytes = request(dest);
    b.bench(|| Request::decode(black_box(&bytes)));
}

#[divan::bench]
fn socks4a_request(b: divan::Bencher) {
    let bytes = socks4::Request {
        command: socks4::Command::Connect,
        dest: TargetAddr::Domain("www.example.com".into(), 80),
        user_id: b"bob".to_vec(),
    }
    .to_bytes();
    b.bench(|| socks4::Request::decode(black_box(&bytes)));
}

#[divan::bench]
fn truncated_request_needs_more(b: divan::Bencher) {
    let bytes = request(TargetAddr::Domain("www.example.com".into(), 443));
    let cut = &bytes[..bytes.len() - 3];
    b.bench(|| Request::decode(black_box(cut)));
}

#[divan::bench]
fn encode_reply(b: divan::Bencher) {
    let reply = Reply::new(
        ReplyCode::Succeeded,
        SocketAddr::from(([127, 0, 0, 1], 40000)),
    );
    let mut out = Vec::with_capacity(32);
    b.bench_local(|| {
        out.clear();
        black_box(&reply).encode(&mut out);
        out.len()
    });
}
