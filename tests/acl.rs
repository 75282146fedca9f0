//! Access rules (`[acl]`) against the real binary on loopback: what curl and raw
//! SOCKS clients are let through and refused (by user, group, client address, port,
//! name, wildcard name and address), the destination guard, how a refusal is
//! recorded, counted and reported, UDP and BIND, and reloading (SIGHUP, a change of
//! `acl.file`, the API).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use common::curl::{fetch, Fetch};
use common::http::{get, post_json, request};
use common::socks::{self, read_msg, read_until_closed, LIMIT};
use common::udp::{self, datagram};
use common::{config, metric, upstream, Proxy, TempDir};
use rustsocks::protocol::socks5::{Command, Reply, ReplyCode, Request};
use rustsocks::protocol::{Encode, TargetAddr};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// What the HTTP upstreams serve at `/file`.
fn body() -> Vec<u8> {
    b"fetched through the proxy\n".repeat(64)
}

/// curl through the proxy (`flag` is `--socks5` or `--socks5-hostname`), with
/// further arguments (`--proxy-user`, `--interface`).
async fn curl(proxy: &Proxy, flag: &str, url: &str, extra: &[&str]) -> Fetch {
    let mut args = vec![flag.to_owned(), proxy.addr.to_string()];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    fetch(args, url.to_owned()).await
}

#[track_caller]
fn assert_fetched(f: &Fetch, what: &str) {
    assert_eq!(f.exit, 0, "{what}: {}", f.stderr);
    assert!(f.body == body(), "{what}: the body differs");
}

/// Refused by the proxy with reply 0x02 (connection not allowed by ruleset).
#[track_caller]
fn assert_refused(f: &Fetch, what: &str) {
    assert_eq!(f.reply(), Some(2), "{what}: exit {}, {}", f.exit, f.stderr);
    assert!(f.body.is_empty(), "{what}: data came through");
}

/// Not refused by the rules: fetched, or (for a name the resolver here does not
/// know) let through and then not found, reply 0x04.
#[track_caller]
fn assert_let_through(f: &Fetch, what: &str) {
    match f.exit {
        0 => assert!(f.body == body(), "{what}: the body differs"),
        _ => assert_eq!(f.reply(), Some(4), "{what}: {}", f.stderr),
    }
}

fn url(host: &str, port: u16) -> String {
    format!("http://{host}:{port}/file")
}

/// A SOCKS5 request from `src` (another loopback address) with no authentication.
async fn socks5_from(
    src: IpAddr,
    proxy: SocketAddr,
    command: Command,
    dest: TargetAddr,
) -> (TcpStream, Reply) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(src, 0)).unwrap();
    let mut s = tokio::time::timeout(LIMIT, socket.connect(proxy))
        .await
        .expect("connect timed out")
        .expect("connect to the proxy");
    socks::greet(&mut s).await;
    s.write_all(&Request { command, dest }.to_bytes())
        .await
        .unwrap();
    let reply = read_msg::<Reply>(&mut s).await;
    (s, reply)
}

/// The reply to a CONNECT from 127.0.0.1.
async fn connect_code(proxy: &Proxy, dest: impl Into<TargetAddr>) -> ReplyCode {
    socks::socks5(proxy.addr, Command::Connect, dest.into())
        .await
        .1
        .code
}

/// The 8-byte reply to a SOCKS4 CONNECT to `dest`.
async fn socks4_connect(proxy: &Proxy, dest: std::net::SocketAddrV4) -> Vec<u8> {
    socks4_connect_as(proxy, dest, "tester").await
}

/// The 8-byte reply to a SOCKS4 CONNECT to `dest` with user id `user`.
async fn socks4_connect_as(proxy: &Proxy, dest: std::net::SocketAddrV4, user: &str) -> Vec<u8> {
    let mut s = socks::connect(proxy.addr).await;
    let mut req = vec![4, 1];
    req.extend_from_slice(&dest.port().to_be_bytes());
    req.extend_from_slice(&dest.ip().octets());
    req.extend_from_slice(user.as_bytes());
    req.push(0);
    s.write_all(&req).await.unwrap();
    let mut reply = vec![0u8; 8];
    tokio::time::timeout(LIMIT, s.read_exact(&mut reply))
        .await
        .expect("SOCKS4 reply timed out")
        .expect("SOCKS4 reply");
    reply
}

/// Polls `path` on the API until `check` holds for its JSON (at most ten seconds).
async fn poll_json(
    api: SocketAddr,
    path: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + LIMIT;
    loop {
        let v = get(api, path, None).await.json();
        if check(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last: {v}"
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// The sessions refused so far, once there are `n`.
async fn rejected(api: SocketAddr, n: u64) -> Vec<Value> {
    let path = "/api/sessions/history?status=rejected&page_size=100";
    let v = poll_json(api, path, "the refusals in the history", |v| {
        v["total"].as_u64() == Some(n)
    })
    .await;
    v["sessions"].as_array().unwrap().clone()
}

async fn metrics(proxy: &Proxy) -> String {
    get(proxy.api.unwrap(), "/metrics", None).await.text()
}

/// Waits (bounded) until the log holds `needle` `n` times.
async fn wait_for_log_count(proxy: &Proxy, needle: &str, n: usize) {
    let deadline = Instant::now() + LIMIT;
    while proxy.log().matches(needle).count() < n {
        assert!(
            Instant::now() < deadline,
            "the log never had {n} x {needle:?}:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The main configuration file the proxy runs with (what SIGHUP and the API re-read).
fn rewrite_config(proxy: &Proxy, text: &str) {
    std::fs::write(proxy.dir().join("rustsocks.toml"), text).expect("rewrite the config");
}

/// Replaces `path` at once (a new file renamed over it), so that a poller never
/// sees it half written.
fn replace_file(path: &Path, text: &str) {
    let new = path.with_extension("new");
    std::fs::write(&new, text).unwrap();
    std::fs::rename(&new, path).unwrap();
}

/// `n` HTTP upstreams, ordered by port.
fn http_upstreams(n: usize) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = (0..n).map(|_| upstream::http_file(body())).collect();
    v.sort_by_key(SocketAddr::port);
    v
}

fn users(names: &[&str]) -> String {
    let mut s = "[auth]\nsocks_method = \"userpass\"\n".to_owned();
    for n in names {
        s += &format!("[[auth.users]]\nusername = \"{n}\"\npassword = \"pw-{n}\"\n");
    }
    s
}

// ---------------------------------------------------------------------------------
// Who, from where, to which port and which name: curl, an independent client.

/// Rules by user and by group, with a block beating an allow and the default for
/// everyone else.
#[tokio::test]
async fn curl_is_let_through_or_refused_by_user_and_group() {
    let http = upstream::http_file(body());
    let rules = r#"
[acl]
default_policy = "block"
[[acl.groups]]
name = "staff"
members = ["bob", "carol"]
[[acl.rules]]
action = "allow"
users = ["alice"]
[[acl.rules]]
action = "allow"
groups = ["staff"]
[[acl.rules]]
action = "block"
users = ["carol"]
description = "carol is suspended"
"#;
    let proxy = Proxy::start(&config(
        "",
        &(users(&["alice", "bob", "carol", "dave"]) + rules),
    ));
    let u = url(&http.ip().to_string(), http.port());
    for (user, allowed) in [
        ("alice", true),  // by her own rule
        ("bob", true),    // by his group
        ("carol", false), // her block beats her group's allow
        ("dave", false),  // no rule: the default
    ] {
        let creds = format!("{user}:pw-{user}");
        let f = curl(&proxy, "--socks5", &u, &["--proxy-user", &creds]).await;
        match allowed {
            true => assert_fetched(&f, user),
            false => assert_refused(&f, user),
        }
    }
    // By name too: the user decides, whatever the destination's spelling.
    let by_name = url("localhost", http.port());
    let f = curl(
        &proxy,
        "--socks5-hostname",
        &by_name,
        &["--proxy-user", "bob:pw-bob"],
    )
    .await;
    assert_fetched(&f, "bob by name");
    let f = curl(
        &proxy,
        "--socks5-hostname",
        &by_name,
        &["--proxy-user", "carol:pw-carol"],
    )
    .await;
    assert_refused(&f, "carol by name");
}

/// Rules by the client's address: curl bound to other loopback addresses.
#[tokio::test]
async fn curl_is_let_through_or_refused_by_client_address() {
    let http = upstream::http_file(body());
    let rules = r#"
[acl]
default_policy = "block"
[[acl.rules]]
action = "allow"
clients = ["127.0.0.0/30"]
[[acl.rules]]
action = "block"
clients = ["127.0.0.2/32"]
description = "the lab machine"
"#;
    let proxy = Proxy::start(&config("", rules));
    let u = url(&http.ip().to_string(), http.port());
    for (client, allowed) in [
        ("127.0.0.1", true),
        ("127.0.0.2", false), // its block beats the /30's allow
        ("127.0.0.3", true),
        ("127.0.0.4", false), // outside the /30: the default
    ] {
        let f = curl(&proxy, "--socks5", &u, &["--interface", client]).await;
        match allowed {
            true => assert_fetched(&f, client),
            false => assert_refused(&f, client),
        }
    }
    let api = proxy.api.unwrap();
    let refused = rejected(api, 2).await;
    let lab = refused
        .iter()
        .find(|r| r["client"].as_str().unwrap().starts_with("127.0.0.2:"))
        .expect("the refusal of 127.0.0.2 is recorded");
    let reason = lab["close_reason"].as_str().unwrap();
    assert!(
        reason.contains("acl.rules[1] (the lab machine)"),
        "{reason}"
    );
}

/// Rules by destination port: a range includes both of its ends.
#[tokio::test]
async fn curl_is_let_through_or_refused_by_port_range() {
    let ups = http_upstreams(3);
    let (low, high, outside) = (ups[0].port(), ups[1].port(), ups[2].port());
    let rules = format!(
        "[acl]\ndefault_policy = \"block\"\n\
         [[acl.rules]]\naction = \"allow\"\nports = [\"{low}-{high}\"]\n"
    );
    let proxy = Proxy::start(&config("", &rules));
    for port in [low, high] {
        assert_fetched(
            &curl(&proxy, "--socks5", &url("127.0.0.1", port), &[]).await,
            "in range",
        );
        let f = curl(&proxy, "--socks5-hostname", &url("localhost", port), &[]).await;
        assert_fetched(&f, "in range, by name");
    }
    let f = curl(&proxy, "--socks5", &url("127.0.0.1", outside), &[]).await;
    assert_refused(&f, "above the range");
    let f = curl(&proxy, "--socks5-hostname", &url("localhost", outside), &[]).await;
    assert_refused(&f, "above the range, by name");
}

/// Rules by exact name and by wildcard (`*.localhost`: every name below it, at any
/// depth, not the domain itself). With no rule naming an address, a name is decided
/// before it is resolved: names nothing resolves are refused all the same.
#[tokio::test]
async fn curl_is_let_through_or_refused_by_name_and_wildcard() {
    let http = upstream::http_file(body());
    let rules = r#"
[acl]
default_policy = "block"
[[acl.rules]]
action = "allow"
destinations = ["localhost"]
description = "the local site"
[[acl.rules]]
action = "block"
destinations = ["blocked.localhost"]
[[acl.rules]]
action = "allow"
destinations = ["*.localhost"]
[[acl.rules]]
action = "block"
destinations = ["*.corp.localhost"]
description = "corp is off limits"
"#;
    let proxy = Proxy::start(&config("", rules));
    let p = http.port();
    let f = curl(&proxy, "--socks5-hostname", &url("localhost", p), &[]).await;
    assert_fetched(&f, "localhost");
    // A name rule does not allow the address the name stands for.
    let f = curl(&proxy, "--socks5", &url("127.0.0.1", p), &[]).await;
    assert_refused(&f, "127.0.0.1 by address");
    for host in [
        "blocked.localhost",  // exact block beats the wildcard allow
        "a.corp.localhost",   // wildcard block beats wildcard allow
        "x.y.corp.localhost", // at any depth
        "notlocalhost",       // no rule: the default
        "localhost.example",  // a name is not matched by its prefix
    ] {
        let f = curl(&proxy, "--socks5-hostname", &url(host, p), &[]).await;
        assert_refused(&f, host);
    }
    for host in ["other.localhost", "corp.localhost"] {
        let f = curl(&proxy, "--socks5-hostname", &url(host, p), &[]).await;
        assert_let_through(&f, host);
    }
    let api = proxy.api.unwrap();
    let refused = rejected(api, 6).await;
    let corp = refused
        .iter()
        .find(|r| r["destination"] == format!("x.y.corp.localhost:{p}"))
        .expect("the wildcard refusal is recorded");
    let reason = corp["close_reason"].as_str().unwrap();
    assert!(
        reason.contains("acl.rules[3] (corp is off limits)"),
        "{reason}"
    );
}

/// A rule on addresses covers every name that resolves into them: `localhost` is
/// refused by a rule on 127.0.0.0/8 and ::1 that never names it.
#[tokio::test]
async fn localhost_is_refused_by_a_rule_on_loopback_addresses() {
    let ups = http_upstreams(2);
    let (guarded, open) = (ups[0].port(), ups[1].port());
    let rules = format!(
        "[acl]\n[[acl.rules]]\naction = \"block\"\ndestinations = [\"127.0.0.0/8\", \"::1\"]\n\
         ports = [{guarded}]\ndescription = \"no loopback\"\n"
    );
    let proxy = Proxy::start(&config("", &rules));
    let f = curl(&proxy, "--socks5-hostname", &url("localhost", guarded), &[]).await;
    assert_refused(&f, "localhost by name");
    let f = curl(&proxy, "--socks5", &url("127.0.0.1", guarded), &[]).await;
    assert_refused(&f, "127.0.0.1");
    // The same name to a port the rule does not cover.
    let f = curl(&proxy, "--socks5-hostname", &url("localhost", open), &[]).await;
    assert_fetched(&f, "localhost to another port");
    let refused = rejected(proxy.api.unwrap(), 2).await;
    let by_name = refused
        .iter()
        .find(|r| r["destination"] == format!("localhost:{guarded}"))
        .expect("the refusal by name is recorded");
    let reason = by_name["close_reason"].as_str().unwrap();
    assert!(
        reason.contains("block by acl.rules[0] (no loopback)"),
        "{reason}"
    );
}

/// Not yet so: with a rule on addresses in the set, a name is resolved before it
/// is judged, so a name a rule blocks by name is looked up (in the DNS, for the
/// world to see) and, when it does not resolve, answered "host unreachable" (0x04)
/// rather than refused (0x02).
#[tokio::test]
async fn a_name_blocked_by_name_is_refused_before_any_lookup() {
    let rules = r#"
[acl]
[[acl.rules]]
action = "block"
destinations = ["*.blocked.localhost", "10.0.0.0/8"]
"#;
    let proxy = Proxy::start(&config("", rules));
    let dest = TargetAddr::Domain("nowhere.blocked.localhost".into(), 80);
    assert_eq!(connect_code(&proxy, dest).await, ReplyCode::NotAllowed);
}

// ---------------------------------------------------------------------------------
// The destination guard.

/// With `acl.block_private_destinations`, loopback, link-local (the cloud metadata
/// address) and the proxy's own listeners are refused (0x02; SOCKS4: 0x5B); a rule
/// can open a private block to some clients, never the proxy's own ports.
#[tokio::test]
async fn the_guard_refuses_private_and_own_destinations() {
    let echo = upstream::echo();
    let rules = r#"
[sessions]
batch_interval_ms = 50
[acl]
block_private_destinations = true
[[acl.rules]]
action = "allow"
destinations = ["127.0.0.0/8"]
clients = ["127.0.0.2/32"]
description = "the lab may reach loopback"
"#;
    let proxy = Proxy::start(&config("", rules));
    let api = proxy.api.unwrap();
    let metadata = SocketAddr::from(([169, 254, 169, 254], 80));
    let blocked: Vec<TargetAddr> = vec![
        echo.into(),
        TargetAddr::Domain("localhost".into(), echo.port()),
        api.into(),
        SocketAddr::from(([127, 0, 0, 1], proxy.addr.port())).into(),
        metadata.into(),
        SocketAddr::new("::ffff:169.254.169.254".parse().unwrap(), 80).into(),
    ];
    for dest in &blocked {
        let code = connect_code(&proxy, dest.clone()).await;
        assert_eq!(code, ReplyCode::NotAllowed, "CONNECT {dest}");
    }
    let v4 = |a: SocketAddr| match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!(),
    };
    for dest in [v4(echo), v4(metadata)] {
        assert_eq!(
            socks4_connect(&proxy, dest).await[..2],
            [0, 0x5B],
            "SOCKS4 CONNECT {dest}"
        );
    }
    // The rule opens loopback to 127.0.0.2, but neither the API nor link-local.
    let lab = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let (mut tunnel, reply) = socks5_from(lab, proxy.addr, Command::Connect, echo.into()).await;
    assert_eq!(reply.code, ReplyCode::Succeeded);
    socks::assert_echo(&mut tunnel, b"allowed by a rule").await;
    for dest in [api, metadata] {
        let (_s, reply) = socks5_from(lab, proxy.addr, Command::Connect, dest.into()).await;
        assert_eq!(
            reply.code,
            ReplyCode::NotAllowed,
            "CONNECT {dest} from the lab"
        );
    }

    let refused = rejected(api, blocked.len() as u64 + 4).await;
    let meta = refused
        .iter()
        .find(|r| r["destination"] == "169.254.169.254:80")
        .expect("the metadata refusal is recorded");
    let reason = meta["close_reason"].as_str().unwrap();
    assert!(
        reason.contains("acl.block_private_destinations") && reason.contains("link-local"),
        "{reason}"
    );
    let text = metrics(&proxy).await;
    let rejected_by = |reason: &str| {
        metric(
            &text,
            &format!("rustsocks_connections_rejected_total{{reason=\"{reason}\"}}"),
        )
    };
    // Own: the API and the SOCKS port from 127.0.0.1, the API from the lab.
    assert_eq!(rejected_by("own_address"), 3, "{text}");
    assert_eq!(rejected_by("private_destination"), 7, "{text}");
    assert_eq!(rejected_by("acl"), 0, "{text}");
}

// ---------------------------------------------------------------------------------
// What a refusal leaves behind.

/// A refused request's history record names the rule (where it is written and its
/// description), the metrics count it, and the telemetry feed sums it per user and
/// destination.
#[tokio::test]
async fn a_refusal_is_recorded_counted_and_reported() {
    let http = upstream::http_file(body());
    let rules = r#"
[sessions]
batch_interval_ms = 50
[telemetry]
aggregation_interval_secs = 1
[acl]
[[acl.rules]]
action = "allow"
users = ["bob"]
[[acl.rules]]
action = "block"
users = ["alice"]
description = "alice is on leave"
"#;
    let proxy = Proxy::start(&config("", &(users(&["alice", "bob"]) + rules)));
    let api = proxy.api.unwrap();
    let u = url("127.0.0.1", http.port());
    for _ in 0..2 {
        let f = curl(&proxy, "--socks5", &u, &["--proxy-user", "alice:pw-alice"]).await;
        assert_refused(&f, "alice");
    }
    assert_fetched(
        &curl(&proxy, "--socks5", &u, &["--proxy-user", "bob:pw-bob"]).await,
        "bob",
    );

    let dest = format!("127.0.0.1:{}", http.port());
    for record in rejected(api, 2).await {
        assert_eq!(record["user"], "alice", "{record}");
        assert_eq!(record["destination"], dest.as_str(), "{record}");
        assert_eq!(record["command"], "connect", "{record}");
        let reason = record["close_reason"].as_str().unwrap();
        assert!(
            reason.contains("block by acl.rules[1] (alice is on leave)"),
            "{reason}"
        );
    }
    let text = metrics(&proxy).await;
    let decisions = |d: &str, by: &str| {
        metric(
            &text,
            &format!("rustsocks_acl_decisions_total{{decision=\"{d}\",by=\"{by}\"}}"),
        )
    };
    assert_eq!(decisions("block", "rule"), 2, "{text}");
    assert_eq!(decisions("allow", "rule"), 1, "{text}");
    assert_eq!(
        metric(
            &text,
            "rustsocks_connections_rejected_total{reason=\"acl\"}"
        ),
        2,
        "{text}"
    );
    // Summed per interval: both refusals, in one event or two.
    let alice_blocked = |v: &Value| -> u64 {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["details"]["user"] == "alice")
            .map(|e| e["details"]["count"].as_u64().unwrap())
            .sum()
    };
    let path = "/api/telemetry/events?category=access";
    let v = poll_json(api, path, "the aggregated refusals", |v| {
        alice_blocked(v) == 2
    })
    .await;
    let event = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["details"]["user"] == "alice")
        .unwrap();
    assert_eq!(event["severity"], "warning", "{event}");
    assert_eq!(event["details"]["destination"], dest.as_str(), "{event}");
    let reason = event["details"]["reason"].as_str().unwrap();
    assert!(reason.contains("acl.rules[1]"), "{event}");
}

// ---------------------------------------------------------------------------------
// UDP and BIND.

/// The payload of the answer to a round trip through the relay, if one came.
async fn round_trip_payload(
    client: &UdpSocket,
    relay: SocketAddr,
    dest: TargetAddr,
    payload: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    udp::round_trip(client, relay, dest, payload, wait)
        .await
        .map(|(_, body)| body)
}

/// Whether `target` received a datagram within a short wait.
async fn received(target: &UdpSocket) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_millis(300), target.recv_from(&mut buf))
        .await
        .is_ok()
}

/// Each datagram is judged by its destination: one to a blocked destination is
/// dropped (never sent) and counted, one to an allowed destination is relayed; a
/// reload applies to the association's next datagram.
#[tokio::test]
async fn udp_datagrams_to_blocked_destinations_are_dropped() {
    let echo = udp::echo([127, 0, 0, 1].into()).await;
    let target = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let blocked = target.local_addr().unwrap();
    let rules = |port: u16| {
        config(
            "",
            &format!(
                "[acl]\n[[acl.rules]]\naction = \"block\"\ndestinations = [\"127.0.0.1/32\"]\n\
                 ports = [{port}]\ncommands = [\"udp\"]\ndescription = \"not that port\"\n"
            ),
        )
    };
    let proxy = Proxy::start(&rules(blocked.port()));
    let (control, reply) = socks::socks5(
        proxy.addr,
        Command::UdpAssociate,
        SocketAddr::from(([0, 0, 0, 0], 0)).into(),
    )
    .await;
    assert_eq!(reply.code, ReplyCode::Succeeded);
    let TargetAddr::Ip(relay) = reply.bind else {
        panic!("the relay address is an IP")
    };
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let short = Duration::from_millis(300);
    let by_name = TargetAddr::Domain("localhost".into(), blocked.port());
    for dest in [blocked.into(), by_name] {
        assert_eq!(
            round_trip_payload(&client, relay, dest, b"blocked", short).await,
            None
        );
    }
    assert!(!received(&target).await, "a blocked datagram was sent");
    let echoed = round_trip_payload(&client, relay, echo.into(), b"allowed", LIMIT).await;
    assert_eq!(echoed.as_deref(), Some(&b"allowed"[..]));
    let text = metrics(&proxy).await;
    assert_eq!(
        metric(&text, "rustsocks_udp_dropped_total{reason=\"acl\"}"),
        2,
        "{text}"
    );

    // Now the echo's port is blocked, and the other open: the same association
    // follows the new rules.
    rewrite_config(&proxy, &rules(echo.port()));
    let reload = request(proxy.api.unwrap(), "POST", "/api/acl/reload", None).await;
    assert_eq!(reload.status, 200, "{}", reload.text());
    assert_eq!(
        round_trip_payload(&client, relay, echo.into(), b"now blocked", short).await,
        None
    );
    client
        .send_to(&datagram(blocked.into(), b"now allowed"), relay)
        .await
        .unwrap();
    assert!(received(&target).await, "an allowed datagram was not sent");
    let text = metrics(&proxy).await;
    assert_eq!(
        metric(&text, "rustsocks_udp_dropped_total{reason=\"acl\"}"),
        3,
        "{text}"
    );
    drop(control);
}

/// BIND's peer is judged like a CONNECT's destination: one the rules block gets the
/// client a second reply 0x02 (and the peer is not relayed); another is served.
#[tokio::test]
async fn a_bind_peer_the_rules_block_is_refused() {
    let rules = r#"
[acl]
[[acl.rules]]
action = "block"
destinations = ["127.0.0.2/32"]
commands = ["bind"]
description = "not from the lab"
"#;
    let proxy = Proxy::start(&config("", rules));
    let bind = |proxy: SocketAddr| async move {
        let any = SocketAddr::from(([0, 0, 0, 0], 0));
        let (control, first) = socks::socks5(proxy, Command::Bind, any.into()).await;
        assert_eq!(first.code, ReplyCode::Succeeded);
        let TargetAddr::Ip(listening) = first.bind else {
            panic!("BIND reported {:?}", first.bind)
        };
        (control, listening)
    };
    let peer_from = |ip: [u8; 4], listening: SocketAddr| async move {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::from((ip, 0))).unwrap();
        s.connect(listening).await.unwrap()
    };

    let (mut control, listening) = bind(proxy.addr).await;
    let mut lab = peer_from([127, 0, 0, 2], listening).await;
    let second = read_msg::<Reply>(&mut control).await;
    assert_eq!(second.code, ReplyCode::NotAllowed);
    assert_eq!(read_until_closed(&mut control).await, b"");
    // The peer is closed, with nothing from the client.
    assert_eq!(read_until_closed(&mut lab).await, b"");

    let (mut control, listening) = bind(proxy.addr).await;
    let mut peer = peer_from([127, 0, 0, 1], listening).await;
    let second = read_msg::<Reply>(&mut control).await;
    assert_eq!(
        (second.code, second.bind),
        (
            ReplyCode::Succeeded,
            TargetAddr::Ip(peer.local_addr().unwrap())
        )
    );
    peer.write_all(b"220 ready\r\n").await.unwrap();
    let mut got = [0u8; 11];
    tokio::time::timeout(LIMIT, control.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"220 ready\r\n");
    // Counted by the refused connection's task once it has closed.
    common::eventually_async("the refusal is counted", || async {
        let series = "rustsocks_connections_rejected_total{reason=\"acl\"}";
        metric(&metrics(&proxy).await, series) == 1
    })
    .await;
}

// ---------------------------------------------------------------------------------
// Reloading.

/// A config whose only rule blocks `port` (the SIGHUP and API tests' files).
fn blocking_port(port: u16, description: &str) -> String {
    config(
        "",
        &format!(
            "[sessions]\nbatch_interval_ms = 50\n[telemetry]\naggregation_interval_secs = 1\n\
             [acl]\n[[acl.rules]]\naction = \"block\"\nports = [{port}]\n\
             description = \"{description}\"\n"
        ),
    )
}

/// A config with a rule that does not parse: a block with host bits.
fn bad_rules() -> String {
    config(
        "",
        "[sessions]\nbatch_interval_ms = 50\n\
         [acl]\n[[acl.rules]]\naction = \"block\"\ndestinations = [\"10.0.0.1/8\"]\n",
    )
}

async fn open_tunnel(proxy: &Proxy, dest: SocketAddr) -> TcpStream {
    let mut t = socks::tunnel(proxy.addr, dest).await;
    socks::assert_echo(&mut t, b"open").await;
    t
}

/// SIGHUP with a new good file: decisions change at once, an open tunnel the new
/// rules allow keeps working, one they block is closed and recorded as terminated
/// by the rules.
#[tokio::test]
async fn sighup_reloads_the_rules_and_closes_tunnels_they_now_block() {
    let (a, b, c) = (upstream::echo(), upstream::echo(), upstream::echo());
    let proxy = Proxy::start(&blocking_port(b.port(), "b is closed"));
    let api = proxy.api.unwrap();
    assert_eq!(connect_code(&proxy, b).await, ReplyCode::NotAllowed);
    let mut to_a = open_tunnel(&proxy, a).await;
    let mut to_c = open_tunnel(&proxy, c).await;

    rewrite_config(&proxy, &blocking_port(c.port(), "c is closed now"));
    proxy.signal(libc::SIGHUP);
    wait_for_log_count(&proxy, "access rules reloaded", 1).await;

    assert_eq!(read_until_closed(&mut to_c).await, b"", "the tunnel to c");
    socks::assert_echo(&mut to_a, b"still open").await;
    assert_eq!(connect_code(&proxy, c).await, ReplyCode::NotAllowed);
    let mut to_b = socks::tunnel(proxy.addr, b).await;
    socks::assert_echo(&mut to_b, b"b is open now").await;

    let path = "/api/sessions/history?status=terminated";
    let v = poll_json(api, path, "the closed tunnel's record", |v| v["total"] == 1).await;
    let record = &v["sessions"][0];
    assert_eq!(record["destination"], c.to_string(), "{record}");
    let reason = record["close_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("acl") && reason.contains("c is closed now"),
        "{reason}"
    );
    let by_sighup = |v: &Value| {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["details"]["trigger"] == "SIGHUP")
            .cloned()
    };
    let path = "/api/telemetry/events?category=access";
    let v = poll_json(api, path, "the reload event", |v| by_sighup(v).is_some()).await;
    let reload = by_sighup(&v).unwrap();
    assert_eq!(reload["severity"], "info", "{reload}");
    assert_eq!(reload["details"]["sessions_closed"], 1, "{reload}");
}

/// SIGHUP with a file whose rules do not parse: the rules in force stay, the log
/// says so naming the key, and the telemetry feed has an error naming it.
#[tokio::test]
async fn sighup_with_a_bad_file_keeps_the_rules_in_force() {
    let (a, b) = (upstream::echo(), upstream::echo());
    let proxy = Proxy::start(&blocking_port(b.port(), "b is closed"));
    let api = proxy.api.unwrap();
    let mut to_a = open_tunnel(&proxy, a).await;

    rewrite_config(&proxy, &bad_rules());
    proxy.signal(libc::SIGHUP);
    assert!(proxy.wait_for_log("access rules not reloaded"));
    let log = proxy.log();
    let line = log
        .lines()
        .find(|l| l.contains("access rules not reloaded"))
        .unwrap();
    assert!(
        line.contains("acl.rules[0].destinations[0]") && line.contains("10.0.0.0/8"),
        "{line}"
    );
    assert!(!log.contains("access rules reloaded"), "{log}");

    assert_eq!(connect_code(&proxy, b).await, ReplyCode::NotAllowed);
    socks::assert_echo(&mut to_a, b"still open").await;
    let path = "/api/telemetry/events?category=access&severity=error";
    let v = poll_json(api, path, "the failed reload event", |v| v["count"] == 1).await;
    let event = &v["events"][0];
    assert_eq!(event["details"]["trigger"], "SIGHUP", "{event}");
    assert_eq!(
        event["details"]["keys"],
        serde_json::json!(["acl.rules[0].destinations[0]"]),
        "{event}"
    );
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .contains("acl.rules[0].destinations[0]"),
        "{event}"
    );
}

/// Not yet so: a value of the wrong kind for `action` (or `default_policy`) fails
/// the whole file's TOML parse instead of being a problem of its rule, and the
/// failed reload's event then names the value as its key (`keys: ["deny"]`).
#[tokio::test]
async fn a_bad_action_is_reported_under_its_key() {
    let b = upstream::echo();
    let proxy = Proxy::start(&blocking_port(b.port(), "b is closed"));
    rewrite_config(
        &proxy,
        &blocking_port(b.port(), "b is closed").replace("\"block\"", "\"deny\""),
    );
    proxy.signal(libc::SIGHUP);
    let path = "/api/telemetry/events?category=access&severity=error";
    let v = poll_json(proxy.api.unwrap(), path, "the failed reload", |v| {
        v["count"] == 1
    })
    .await;
    assert_eq!(
        v["events"][0]["details"]["keys"],
        serde_json::json!(["acl.rules[0].action"]),
        "{v}"
    );
}

/// A change of the file `acl.file` names is picked up by itself within a few
/// seconds (it is polled each second); a bad version keeps the rules in force.
#[tokio::test]
async fn a_change_of_acl_file_reloads_the_rules() {
    let (a, b) = (upstream::echo(), upstream::echo());
    let dir = TempDir::new();
    let file = dir.path().join("rules.toml");
    let rules = |port: u16| {
        format!(
            "[[acl.rules]]\naction = \"block\"\nports = [{port}]\ndescription = \"in the file\"\n"
        )
    };
    replace_file(&file, &rules(b.port()));
    let main = format!(
        "[sessions]\nbatch_interval_ms = 50\n[acl]\nfile = \"{}\"\n",
        file.display()
    );
    let proxy = Proxy::start(&config("", &main));
    let api = proxy.api.unwrap();
    assert_eq!(connect_code(&proxy, b).await, ReplyCode::NotAllowed);
    let _to_a = open_tunnel(&proxy, a).await;

    replace_file(&file, &rules(a.port()));
    let deadline = Instant::now() + LIMIT;
    while connect_code(&proxy, b).await != ReplyCode::Succeeded {
        assert!(Instant::now() < deadline, "the change was not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(connect_code(&proxy, a).await, ReplyCode::NotAllowed);
    // The record names the rule by its file.
    let origin = format!("block by {}: acl.rules[0] (in the file)", file.display());
    let to_a = |v: &Value| {
        v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["destination"] == a.to_string())
            .cloned()
    };
    let path = "/api/sessions/history?status=rejected&page_size=1000";
    let v = poll_json(api, path, "the refusal of a", |v| to_a(v).is_some()).await;
    let record = to_a(&v).unwrap();
    let reason = record["close_reason"].as_str().unwrap();
    assert!(reason.contains(&origin), "{reason}");
    // The tunnel open to a was closed by the change.
    poll_json(
        api,
        "/api/sessions/history?status=terminated",
        "the closed tunnel",
        |v| v["total"] == 1,
    )
    .await;

    replace_file(
        &file,
        "[[acl.rules]]\naction = \"block\"\ndestinations = [\"10.0.0.1/8\"]\n",
    );
    assert!(proxy.wait_for_log("access rules not reloaded"));
    assert_eq!(connect_code(&proxy, a).await, ReplyCode::NotAllowed);
    assert_eq!(connect_code(&proxy, b).await, ReplyCode::Succeeded);
    let key = format!("{}: acl.rules[0].destinations[0]", file.display());
    let path = "/api/telemetry/events?category=access&severity=error";
    let v = poll_json(api, path, "the failed reload event", |v| v["count"] == 1).await;
    assert_eq!(
        v["events"][0]["details"]["keys"],
        serde_json::json!([key]),
        "{v}"
    );
    assert_eq!(
        v["events"][0]["details"]["trigger"], "acl.file changed",
        "{v}"
    );
}

/// `GET /api/acl` shows the rules in force, `POST /api/acl/test` judges a request
/// without making it, `POST /api/acl/reload` reloads (200) or refuses a bad file
/// (422) keeping the rules in force.
#[tokio::test]
async fn the_api_shows_tests_and_reloads_the_rules() {
    let rules = r#"
[acl]
[[acl.groups]]
name = "staff"
members = ["bob", "carol"]
[[acl.rules]]
action = "allow"
users = ["dave"]
destinations = ["10.1.0.0/16"]
[[acl.rules]]
action = "block"
groups = ["staff"]
destinations = ["*.localhost", "10.0.0.0/8"]
ports = ["8000-9000", 22]
commands = ["connect"]
description = "staff off the lab"
"#;
    let proxy = Proxy::start(&config("", rules));
    let api = proxy.api.unwrap();
    let shown = get(api, "/api/acl", None).await;
    assert_eq!(shown.status, 200);
    let shown = shown.json();
    assert_eq!(shown["default_policy"], "allow", "{shown}");
    // A loopback listener: the guard is off unless configured.
    assert_eq!(shown["block_private_destinations"], false, "{shown}");
    assert_eq!(
        shown["block_private_destinations_configured"], false,
        "{shown}"
    );
    assert_eq!(
        shown["groups"],
        serde_json::json!([{ "name": "staff", "members": ["bob", "carol"] }])
    );
    let rule = &shown["rules"][1];
    assert_eq!(rule["index"], 1, "{rule}");
    assert_eq!(rule["origin"], "acl.rules[1]", "{rule}");
    assert_eq!(rule["action"], "block", "{rule}");
    assert_eq!(rule["groups"], serde_json::json!(["staff"]), "{rule}");
    assert_eq!(
        rule["destinations"],
        serde_json::json!(["*.localhost", "10.0.0.0/8"]),
        "{rule}"
    );
    assert_eq!(
        rule["ports"],
        serde_json::json!(["8000-9000", "22"]),
        "{rule}"
    );
    assert_eq!(rule["commands"], serde_json::json!(["connect"]), "{rule}");
    assert_eq!(rule["description"], "staff off the lab", "{rule}");
    assert_eq!(
        rule["users"],
        Value::Null,
        "absent keys match everything: {rule}"
    );
    let loaded_at = shown["loaded_at"].clone();

    let judge = |user: &str, dest: &str, port: u16, command: &str| {
        let body = serde_json::json!({
            "user": user, "client": "127.0.0.1", "destination": dest,
            "port": port, "command": command,
        })
        .to_string();
        async move {
            let r = post_json(api, "/api/acl/test", &body, None).await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()
        }
    };
    let t = judge("carol", "10.2.3.4", 8080, "connect").await;
    assert_eq!(
        (t["decision"].as_str(), t["by"].as_str()),
        (Some("block"), Some("rule")),
        "{t}"
    );
    assert_eq!(t["rule"]["origin"], "acl.rules[1]", "{t}");
    assert!(
        t["reason"].as_str().unwrap().contains("staff off the lab"),
        "{t}"
    );
    assert_eq!(t["addresses"], serde_json::json!(["10.2.3.4"]), "{t}");
    // The wildcard, by name (its lookup is local, whatever it finds).
    let t = judge("bob", "db.localhost", 22, "connect").await;
    assert_eq!(t["decision"], "block", "{t}");
    // Another port, another command, a user outside the group: the default.
    for (user, port, command) in [
        ("bob", 80, "connect"),
        ("bob", 22, "udp"),
        ("erin", 22, "connect"),
    ] {
        let t = judge(user, "10.2.3.4", port, command).await;
        assert_eq!(
            (t["decision"].as_str(), t["by"].as_str()),
            (Some("allow"), Some("default")),
            "{t}"
        );
        assert_eq!(t["rule"], Value::Null, "{t}");
    }
    let t = judge("dave", "10.1.2.3", 80, "bind").await;
    assert_eq!(t["decision"], "allow", "{t}");
    assert_eq!(t["rule"]["origin"], "acl.rules[0]", "{t}");
    let bad = r#"{"client":"127.0.0.1","destination":"x","port":1,"command":"associate"}"#;
    assert_eq!(post_json(api, "/api/acl/test", bad, None).await.status, 400);

    // A bad file: 422 naming the key, the rules in force unchanged.
    rewrite_config(&proxy, &bad_rules());
    let r = request(api, "POST", "/api/acl/reload", None).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.text().contains("acl.rules[0].destinations[0]"),
        "{}",
        r.text()
    );
    let still = get(api, "/api/acl", None).await.json();
    assert_eq!(still["loaded_at"], loaded_at);
    assert_eq!(still["rules"].as_array().unwrap().len(), 2, "{still}");

    // A good one: 200, and the new rules decide.
    rewrite_config(&proxy, &blocking_port(22, "no ssh"));
    let r = request(api, "POST", "/api/acl/reload", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let done = r.json();
    assert_eq!(
        (done["rules"].as_u64(), done["groups"].as_u64()),
        (Some(1), Some(0)),
        "{done}"
    );
    assert_eq!(done["sessions_closed"], 0, "{done}");
    let now = get(api, "/api/acl", None).await.json();
    assert_eq!(now["rules"][0]["description"], "no ssh", "{now}");
    let t = judge("erin", "10.2.3.4", 22, "connect").await;
    assert_eq!(t["decision"], "block", "{t}");
    let t = judge("carol", "10.2.3.4", 8080, "connect").await;
    assert_eq!(t["decision"], "allow", "{t}");
}

/// A SOCKS4 user id is whatever the client writes: rules naming users must not
/// match it, or any client could claim to be the user a rule lets through.
#[tokio::test]
async fn a_socks4_user_id_is_not_a_user_to_the_rules() {
    let echo = upstream::echo();
    let proxy = Proxy::start(&config(
        "",
        "[acl]\ndefault_policy = \"block\"\n\
         [[acl.rules]]\naction = \"allow\"\nusers = [\"ops\"]\ndestinations = [\"127.0.0.0/8\"]\n",
    ));
    let SocketAddr::V4(dest) = echo else {
        panic!("echo on IPv4")
    };
    for user in ["ops", ""] {
        let reply = socks4_connect_as(&proxy, dest, user).await;
        assert_eq!(reply[..2], [0, 0x5B], "SOCKS4 user id {user:?}");
    }
    let history = rejected(proxy.api.unwrap(), 2).await;
    assert!(
        history.iter().all(|r| r["close_reason"]
            .as_str()
            .unwrap()
            .contains("acl.default_policy")),
        "{history:?}"
    );
}

/// A client the rules block from UDP to every destination gets no relay: the
/// UDP ASSOCIATE itself is refused with 0x02.
#[tokio::test]
async fn udp_associate_is_refused_to_a_client_blocked_from_all_udp() {
    let proxy = Proxy::start(&config(
        "",
        "[[acl.rules]]\naction = \"block\"\nclients = [\"127.0.0.1\"]\ncommands = [\"udp\"]\n\
         description = \"no UDP from here\"\n",
    ));
    let (_, reply) = socks::socks5(
        proxy.addr,
        Command::UdpAssociate,
        SocketAddr::from(([0, 0, 0, 0], 0)).into(),
    )
    .await;
    assert_eq!(reply.code, ReplyCode::NotAllowed);
    let history = rejected(proxy.api.unwrap(), 1).await;
    let reason = history[0]["close_reason"].as_str().unwrap();
    assert!(
        reason.contains("acl.rules[0] (no UDP from here)"),
        "{reason}"
    );
    // CONNECT from the same client is not affected.
    let echo = upstream::echo();
    assert_eq!(connect_code(&proxy, echo).await, ReplyCode::Succeeded);
}

/// The system resolver decodes zone-file escapes (`exampl\e.com` is looked up as
/// `example.com`), so a name that is not a plain host name could slip past a name
/// rule: such names are refused, never looked up, whatever the rules say.
#[tokio::test]
async fn names_that_are_not_host_names_are_refused_unlooked_up() {
    let proxy = Proxy::start(&config(
        "",
        "[[acl.rules]]\naction = \"block\"\ndestinations = [\"*.example.com\", \"example.com\"]\n",
    ));
    for name in [
        r"www.exampl\e.com",
        r"exampl\101.com",
        "a b.example",
        "x;y",
        "[::1]",
    ] {
        let code = connect_code(&proxy, TargetAddr::Domain(name.into(), 443)).await;
        assert_eq!(code, ReplyCode::NotAllowed, "{name}");
    }
    // Plain names and addresses written as names still work.
    let echo = upstream::echo();
    for name in ["localhost", "LocalHost", "127.0.0.1"] {
        let code = connect_code(&proxy, TargetAddr::Domain(name.into(), echo.port())).await;
        assert_eq!(code, ReplyCode::Succeeded, "{name}");
    }
    let text = metrics(&proxy).await;
    assert_eq!(
        common::metric(
            &text,
            "rustsocks_acl_decisions_total{decision=\"block\",by=\"invalid_name\"}"
        ),
        5,
        "{text}"
    );
}
