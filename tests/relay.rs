//! The relay and connection limits, against the real server.

mod common;

use std::time::Duration;

use common::socks::{self, assert_echo, read_msg, read_until_closed, LIMIT};
use common::{config, upstream, Proxy};
use rustsocks::protocol::socks5::{Method, MethodSelection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn half_close_delivers_the_full_answer() {
    let target = upstream::reply_after_eof();
    let proxy = Proxy::start(&config("", ""));
    let mut s = socks::tunnel(proxy.addr, target).await;
    let request: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    s.write_all(&request).await.unwrap();
    // The upstream answers only after it sees our FIN.
    s.shutdown().await.unwrap();
    let answer = read_until_closed(&mut s).await;
    assert_eq!(answer.len(), request.len());
    assert!(answer == request);
}

#[tokio::test]
async fn large_transfers_in_both_directions_at_once() {
    let echo = upstream::echo();
    let proxy = Proxy::start(&config("", ""));
    let s = socks::tunnel(proxy.addr, echo).await;
    let (mut r, mut w) = s.into_split();
    let data: Vec<u8> = (0..8 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), r.read_to_end(&mut back))
        .await
        .expect("transfer finished")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data);
}

#[tokio::test]
async fn idle_tunnel_is_closed_but_a_busy_one_is_not() {
    let echo = upstream::echo();
    let proxy = Proxy::start(&config("relay_idle_timeout_secs = 1", ""));
    let mut busy = socks::tunnel(proxy.addr, echo).await;
    let mut idle = socks::tunnel(proxy.addr, echo).await;
    // Traffic every 200 ms for 2.4 s, well past the 1 s idle timeout.
    for _ in 0..12 {
        assert_echo(&mut busy, b"ping").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        read_until_closed(&mut idle).await,
        b"",
        "idle tunnel was not closed"
    );
    assert_echo(&mut busy, b"still open").await;
}

#[tokio::test]
async fn at_max_connections_new_clients_wait_for_a_free_slot() {
    let echo = upstream::echo();
    let proxy = Proxy::start(&config("max_connections = 2", ""));
    let mut first = socks::tunnel(proxy.addr, echo).await;
    let _second = socks::tunnel(proxy.addr, echo).await;
    // The third connection completes in the kernel backlog but is not accepted: its
    // greeting gets no answer while both slots are taken.
    let mut third = socks::connect(proxy.addr).await;
    third.write_all(&[5, 1, 0]).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "a third connection was served at max_connections = 2"
    );
    assert!(proxy.wait_for_log("max_connections reached"));
    assert_echo(&mut first, b"slot holder").await;
    drop(first);
    let reply = tokio::time::timeout(LIMIT, read_msg::<MethodSelection>(&mut third)).await;
    assert_eq!(
        reply.expect("served once a slot freed"),
        MethodSelection(Method::NO_AUTH)
    );
}

#[tokio::test]
async fn out_of_descriptors_backs_off_and_recovers() {
    use std::os::unix::process::CommandExt;
    let echo = upstream::echo();
    let proxy = Proxy::start_with(&config("", ""), |cmd| {
        // SAFETY: setrlimit is async-signal-safe, as pre_exec requires.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 40,
                    rlim_max: 40,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    // Silent clients hold one descriptor each until the handshake timeout; more of
    // them than the limit allows drives accept() into EMFILE.
    let mut hogs = Vec::new();
    for _ in 0..60 {
        hogs.push(socks::connect(proxy.addr).await);
    }
    assert!(
        proxy.wait_for_log("accept failed"),
        "no EMFILE seen:\n{}",
        proxy.log()
    );
    drop(hogs);
    let mut s = tokio::time::timeout(LIMIT, socks::tunnel(proxy.addr, echo))
        .await
        .expect("served again");
    assert_echo(&mut s, b"recovered").await;
    assert!(proxy.wait_for_log("accepting again"));
}

/// An upstream that resets the connection mid-stream: the client must see the
/// reset too, not a clean end that would make a cut-off answer look complete.
#[tokio::test]
async fn an_upstream_reset_reaches_the_client_as_a_reset() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"partial answer").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s); // RST
    });
    let proxy = Proxy::start(&config("", ""));
    let mut s = socks::tunnel(proxy.addr, target).await;
    let mut got = Vec::new();
    let end = tokio::time::timeout(LIMIT, s.read_to_end(&mut got))
        .await
        .expect("the tunnel did not end");
    let err = end.expect_err("the reset arrived as a clean end of stream");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}
