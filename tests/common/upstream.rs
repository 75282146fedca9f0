//! Local upstream servers the proxy connects to in tests.
//!
//! They run on a runtime of their own, so a test that blocks its thread (waiting for
//! the proxy process to exit, say) does not stall the upstream the proxy talks to.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("upstream runtime")
    })
}

/// Binds a loopback listener and serves it with `serve` on the upstream runtime.
fn serve_on<F, Fut>(serve: F) -> SocketAddr
where
    F: FnOnce(TcpListener) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    // A deep accept queue: stress tests dial hundreds of connections at once, and
    // an overflowing queue drops SYNs (a 1 s retransmit for the client).
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind upstream");
    socket.listen(4096).unwrap();
    let std_listener: std::net::TcpListener = socket.into();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let _guard = runtime().enter();
    let listener = TcpListener::from_std(std_listener).unwrap();
    runtime().spawn(serve(listener));
    addr
}

/// Echoes every byte back; answers FIN with FIN.
pub fn echo() -> SocketAddr {
    serve_on(|listener| async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    })
}

/// Sends bytes without end (up to 4 GiB) until the connection fails: a transfer
/// that is always in progress, for tests that cut one.
#[allow(dead_code)]
pub fn endless() -> SocketAddr {
    serve_on(|listener| async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let chunk = vec![0x5au8; 16 * 1024];
                for _ in 0..(1u32 << 18) {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}

/// Reads until the client's FIN, then sends back everything it read and closes: a
/// client sees the answer only if the proxy passed its half-close on.
pub fn reply_after_eof() -> SocketAddr {
    serve_on(|listener| async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut data = Vec::new();
                if s.read_to_end(&mut data).await.is_ok() {
                    let _ = s.write_all(&data).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    })
}

/// A minimal HTTP/1.1 server answering `GET /file` with `body`, anything else 404.
pub fn http_file(body: Vec<u8>) -> SocketAddr {
    let body = Arc::new(body);
    serve_on(|listener| async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve_http(s, Arc::clone(&body)));
        }
    })
}

async fn serve_http(mut s: TcpStream, body: Arc<Vec<u8>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 16 * 1024 {
            return;
        }
    }
    let found = head.starts_with(b"GET /file ");
    let (status, payload): (&str, &[u8]) = if found {
        ("200 OK", &body)
    } else {
        ("404 Not Found", b"")
    };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    let _ = s.write_all(header.as_bytes()).await;
    let _ = s.write_all(payload).await;
    let _ = s.shutdown().await;
}

/// A listener whose accept queue is full, so further connects to it hang until they
/// time out: an upstream that never answers, on loopback. Keep the returned value
/// alive for as long as the address is used.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _filler: std::net::TcpStream,
}

pub fn blackhole() -> Blackhole {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    // Linux keeps backlog + 1 connections in the queue; one connection fills it.
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let filler = std::net::TcpStream::connect(addr).unwrap();
    Blackhole {
        addr,
        _listener: listener,
        _filler: filler,
    }
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Sends each client the address it sees the client connect from, then closes.
pub fn peer_reporter() -> SocketAddr {
    serve_on(|listener| async move {
        while let Ok((mut s, peer)) = listener.accept().await {
            let _ = s.write_all(peer.to_string().as_bytes()).await;
            let _ = s.shutdown().await;
        }
    })
}

/// Accepts and holds connections without reading; counts accepts, and can close
/// every held connection (to make pooled connections stale).
pub struct Holding {
    pub addr: SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    conns: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Holding {
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Closes every connection accepted so far (the peer sees FIN).
    pub fn close_all(&self) {
        self.conns.lock().unwrap().clear();
    }

    /// Resets every connection accepted so far (the peer sees RST).
    pub fn reset_all(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = socket2::SockRef::from(&s).set_linger(Some(std::time::Duration::ZERO));
        }
    }
}

pub fn holding() -> Holding {
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let conns = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (a, c) = (Arc::clone(&accepted), Arc::clone(&conns));
    let addr = serve_on(|listener| async move {
        while let Ok((s, _)) = listener.accept().await {
            c.lock().unwrap().push(s);
            a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    Holding {
        addr,
        accepted,
        conns,
    }
}

/// Speaks first: sends `"conn-<n>\n"` (n counts accepted connections from 1), then
/// echoes. Proves which upstream connection a client got, and that a banner sent
/// before the client arrived still reaches it.
pub fn tagging() -> SocketAddr {
    serve_on(|listener| async move {
        let mut n = 0u64;
        while let Ok((mut s, _)) = listener.accept().await {
            n += 1;
            tokio::spawn(async move {
                if s.write_all(format!("conn-{n}\n").as_bytes()).await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    })
}

/// Bytes one connection to `http_counting` read and wrote, recorded when it closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub read: u64,
    pub written: u64,
}

/// An HTTP/1.1 server that answers `GET /file` with `body` and any request with a
/// body (`POST`, `PUT`) with a short receipt, and records per connection exactly
/// how many bytes it read and wrote: the ground truth for session byte counts.
pub fn http_counting(body: Vec<u8>) -> (SocketAddr, Arc<std::sync::Mutex<Vec<Counted>>>) {
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    let body = Arc::new(body);
    let addr = serve_on(|listener| async move {
        while let Ok((s, _)) = listener.accept().await {
            let (body, sink) = (Arc::clone(&body), Arc::clone(&sink));
            tokio::spawn(async move {
                let counted = count_one(s, &body).await;
                sink.lock().unwrap().push(counted);
            });
        }
    });
    (addr, log)
}

async fn count_one(mut s: TcpStream, body: &[u8]) -> Counted {
    let mut read = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    let mut answered = false;
    loop {
        if !answered {
            if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&read[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if read.len() >= end + 4 + len {
                    let payload: Vec<u8> = if head.starts_with("get /file ") {
                        body.to_vec()
                    } else {
                        format!("received {len} bytes\n").into_bytes()
                    };
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        payload.len()
                    );
                    if s.write_all(response.as_bytes()).await.is_err()
                        || s.write_all(&payload).await.is_err()
                    {
                        break;
                    }
                    written = (response.len() + payload.len()) as u64;
                    answered = true;
                    let _ = s.shutdown().await;
                }
            }
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => read.extend_from_slice(&buf[..n]),
        }
    }
    Counted {
        read: read.len() as u64,
        written,
    }
}
