//! A small SOCKS client for driving the proxy byte by byte in tests.

use std::net::SocketAddr;
use std::time::Duration;

use rustsocks::protocol::socks5::{
    Command, Greeting, Method, MethodSelection, Reply, ReplyCode, Request, UserPassReply,
    UserPassRequest,
};
use rustsocks::protocol::{Decode, Encode, TargetAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound on any single wait in tests, so a hang fails instead of blocking CI.
pub const LIMIT: Duration = Duration::from_secs(10);

pub async fn read_msg<T: Decode>(s: &mut TcpStream) -> T {
    let mut buf = Vec::new();
    loop {
        if let Some((msg, _)) = T::decode(&buf).expect("well-formed message from proxy") {
            return msg;
        }
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(LIMIT, s.read(&mut byte))
            .await
            .expect("read timed out")
            .expect("read");
        assert!(
            n > 0,
            "proxy closed the connection mid-message (got {buf:?})"
        );
        buf.push(byte[0]);
    }
}

/// Reads until EOF or error; panics if the proxy neither answers nor closes.
pub async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let r = tokio::time::timeout(LIMIT, s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "connection was not closed (got {out:?})");
    out
}

pub async fn connect(proxy: SocketAddr) -> TcpStream {
    tokio::time::timeout(LIMIT, TcpStream::connect(proxy))
        .await
        .expect("connect timed out")
        .expect("connect to proxy")
}

/// Sends a greeting offering only no-auth and checks that the proxy chose it.
pub async fn greet(s: &mut TcpStream) {
    s.write_all(
        &Greeting {
            methods: vec![Method::NO_AUTH],
        }
        .to_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(
        read_msg::<MethodSelection>(s).await,
        MethodSelection(Method::NO_AUTH)
    );
}

/// Greeting offering no-auth, then a request; returns the stream and the reply.
pub async fn socks5(proxy: SocketAddr, command: Command, dest: TargetAddr) -> (TcpStream, Reply) {
    let mut s = connect(proxy).await;
    greet(&mut s).await;
    s.write_all(&Request { command, dest }.to_bytes())
        .await
        .unwrap();
    let reply = read_msg::<Reply>(&mut s).await;
    (s, reply)
}

/// A CONNECT that must succeed.
pub async fn tunnel(proxy: SocketAddr, dest: impl Into<TargetAddr>) -> TcpStream {
    let (s, reply) = socks5(proxy, Command::Connect, dest.into()).await;
    assert_eq!(reply.code, ReplyCode::Succeeded);
    s
}

/// Username/password login; returns the stream (after a successful login) or None.
pub async fn login(proxy: SocketAddr, user: &str, password: &str) -> Option<TcpStream> {
    let mut s = connect(proxy).await;
    s.write_all(
        &Greeting {
            methods: vec![Method::NO_AUTH, Method::USER_PASS],
        }
        .to_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(
        read_msg::<MethodSelection>(&mut s).await,
        MethodSelection(Method::USER_PASS)
    );
    let creds = UserPassRequest {
        username: user.into(),
        password: password.into(),
    };
    s.write_all(&creds.to_bytes()).await.unwrap();
    read_msg::<UserPassReply>(&mut s).await.success.then_some(s)
}

/// Writes `data` and expects the same bytes back (through an echo upstream).
pub async fn assert_echo(s: &mut TcpStream, data: &[u8]) {
    s.write_all(data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(LIMIT, s.read_exact(&mut back))
        .await
        .expect("echo timed out")
        .expect("echo");
    assert_eq!(back, data);
}
