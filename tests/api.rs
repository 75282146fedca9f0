//! The management API against the real binary on loopback.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;

use common::http::{self, get};
use common::schema::assert_documented;
use common::{config, run_cli, upstream, Proxy, TempDir};
use rustsocks::protocol::socks5::{Command, ReplyCode};
use rustsocks::protocol::TargetAddr;

const TOKEN: &str = "t0ken-for-tests";

fn api(proxy: &Proxy) -> SocketAddr {
    proxy.api.expect("API enabled")
}

/// One documented operation: method, path, the response codes it documents, and
/// whether it is public (`security: []`).
struct Op {
    method: String,
    path: String,
    codes: Vec<u16>,
    public: bool,
}

/// Every documented operation from the served OpenAPI document.
async fn documented(addr: SocketAddr, token: Option<&str>) -> Vec<Op> {
    let doc = get(addr, "/api/openapi.json", token).await.json();
    let mut ops = Vec::new();
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            let codes = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|c| c.parse().unwrap())
                .collect();
            let public = op["security"].as_array().is_some_and(|a| a.is_empty());
            ops.push(Op {
                method: method.to_uppercase(),
                path: path.clone(),
                codes,
                public,
            });
        }
    }
    ops
}

/// A concrete path for a documented one: path parameters get well-formed values
/// (a session id that names no session, a dashboard file that exists).
fn concrete(path: &str) -> String {
    path.replace("{id}", "00000000-0000-4000-8000-000000000000")
        .replace("{file}", "app.js")
}

#[tokio::test]
async fn health_reports_status_version_and_uptime() {
    let proxy = Proxy::start(&config("", ""));
    let r = get(api(&proxy), "/health", None).await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_secs"].as_f64().unwrap() >= 0.0);
    assert_eq!(body["auth_required"], false);
}

#[tokio::test]
async fn with_a_token_every_route_but_health_needs_it() {
    let dir = TempDir::new();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let proxy = Proxy::start(&config(
        "",
        &format!(
            "[api]\nport = 0\ntoken_file = \"{}\"\n",
            token_file.display()
        ),
    ));
    let addr = api(&proxy);
    let health = get(addr, "/health", None).await;
    assert_eq!(
        (health.status, health.json()["auth_required"].as_bool()),
        (200, Some(true))
    );
    let doc = get(addr, "/api/openapi.json", Some(TOKEN)).await.json();
    let ops = documented(addr, Some(TOKEN)).await;
    assert!(ops.len() >= 13, "{} operations", ops.len());
    let public: Vec<&str> = ops
        .iter()
        .filter(|o| o.public)
        .map(|o| o.path.as_str())
        .collect();
    assert_eq!(public, ["/", "/assets/{file}", "/health"]);
    for op in ops.iter().filter(|o| !o.public) {
        let (method, path) = (&op.method, concrete(&op.path));
        let no_token = http::request(addr, method, &path, None).await;
        assert_eq!(no_token.status, 401, "{method} {path} without a token");
        assert_documented(&doc, method, &op.path, &no_token);
        assert_eq!(no_token.json()["error"], "unauthorized");
        assert_eq!(no_token.header("www-authenticate"), Some("Bearer"));
        let wrong = http::request(addr, method, &path, Some("t0ken-for-test")).await;
        assert_eq!(wrong.status, 401, "{method} {path} with a wrong token");
    }
    // With the token, every documented operation answers with a documented code
    // and body (streams are checked apart; tests/api_schema.rs calls every
    // operation with data in every list).
    for op in ops.iter().filter(|o| !o.path.ends_with("/stream")) {
        let r = http::request(addr, &op.method, &concrete(&op.path), Some(TOKEN)).await;
        assert_documented(&doc, &op.method, &op.path, &r);
        assert!(
            r.status != 401 && op.codes.contains(&r.status),
            "{} {}: {} {}",
            op.method,
            op.path,
            r.status,
            r.text()
        );
    }
    let (status, _stream) = http::open_stream(addr, "/api/telemetry/stream", Some(TOKEN)).await;
    assert_eq!(status, 200);
}

/// A hand-written request with the given `Host` (none: no Host header) and an
/// `Origin`, as a page from another site would send it.
fn from_page(method: &str, path: &str, host: Option<&str>) -> Vec<u8> {
    from_origin(method, path, host, "http://evil.example")
}

/// A request as a page of `origin` sends it.
fn from_origin(method: &str, path: &str, host: Option<&str>, origin: &str) -> Vec<u8> {
    let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\n{host}Origin: {origin}\r\n\
         Access-Control-Request-Method: GET\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

fn assert_no_cors(r: &http::Response, what: &str) {
    let cors: Vec<_> = r
        .headers
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("access-control-"))
        .collect();
    assert!(cors.is_empty(), "{what}: CORS headers {cors:?}");
}

/// A page that rebinds its own name to 127.0.0.1 reaches the API with its own name
/// as `Host`: without a token, only loopback names and addresses are answered.
#[tokio::test]
async fn without_a_token_only_loopback_hosts_are_answered() {
    let proxy = Proxy::start(&config("", ""));
    let addr = api(&proxy);
    let doc = get(addr, "/api/openapi.json", None).await.json();
    let port = addr.port().to_string();
    let paths = ["/health", "/", "/assets/app.js", "/api/sessions/active"];
    for host in [
        "127.0.0.1",
        "127.0.0.1:PORT",
        "127.1.2.3:PORT",
        "localhost",
        "localhost:PORT",
        "LocalHost.:PORT",
        "dashboard.localhost:PORT",
        "[::1]",
        "[::1]:PORT",
    ] {
        let host = host.replace("PORT", &port);
        for path in paths {
            // A page served from that loopback origin (the dashboard itself).
            let own = format!("http://{host}");
            let r = http::raw(addr, &from_origin("GET", path, Some(&host), &own)).await;
            assert_eq!(r.status, 200, "Host {host} GET {path}: {}", r.text());
            assert_no_cors(&r, &format!("Host {host} GET {path}"));
        }
    }
    for host in [
        Some("evil.example"),
        Some("evil.example:PORT"),
        Some("127.0.0.1.evil.example:PORT"),
        Some("localhost.evil.example"),
        Some("10.1.2.3:PORT"),
        Some("0.0.0.0:PORT"),
        Some(""),
        None,
    ] {
        let host = host.map(|h| h.replace("PORT", &port));
        for (method, path) in paths.iter().map(|p| ("GET", *p)).chain([
            ("POST", "/api/sessions/{id}/terminate"),
            ("OPTIONS", "/health"),
        ]) {
            let documented = if path.starts_with("/assets/") {
                "/assets/{file}"
            } else {
                path
            };
            let path = concrete(path);
            let what = format!("Host {host:?} {method} {path}");
            let r = http::raw(addr, &from_page(method, &path, host.as_deref())).await;
            assert_eq!(r.status, 403, "{what}: {}", r.text());
            if method != "OPTIONS" {
                assert_documented(&doc, method, documented, &r);
            }
            assert_no_cors(&r, &what);
            let body = r.json();
            assert_eq!(body["error"], "forbidden_host", "{what}");
            assert_eq!(body["header"], "Host", "{what}");
            let message = body["message"].as_str().unwrap();
            assert!(message.contains("DNS rebinding"), "{what}: {message}");
            match &host {
                Some(h) => assert!(
                    message.contains(&format!("Host header `{h}` is not a loopback")),
                    "{what}: {message}"
                ),
                None => assert!(message.contains("no Host header"), "{what}: {message}"),
            }
        }
    }
    // HTTP/1.0 has no Host requirement; the guard still wants one.
    let r = http::raw(addr, b"GET /health HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 403, "{}", r.text());
    let twice = format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\nConnection: close\r\n\r\n");
    let r = http::raw(addr, twice.as_bytes()).await;
    assert_ne!(r.status, 200, "two Host headers: {}", r.text());
}

/// With a token the token is the protection: any Host is answered, and a request
/// from a page still gets no CORS permission.
#[tokio::test]
async fn with_a_token_the_host_is_not_checked() {
    let proxy = Proxy::start(&config(
        "",
        &format!("[api]\nport = 0\ntoken = \"{TOKEN}\"\n"),
    ));
    let addr = api(&proxy);
    let r = http::raw(addr, &from_page("GET", "/health", Some("evil.example"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_no_cors(&r, "GET /health");
    let r = http::raw(
        addr,
        &from_page("GET", "/api/pool/stats", Some("evil.example")),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_no_cors(&r, "GET /api/pool/stats without the token");
    let with_token = format!(
        "GET /api/pool/stats HTTP/1.1\r\nHost: evil.example\r\nOrigin: http://evil.example\r\n\
         Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    let r = http::raw(addr, with_token.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_no_cors(&r, "GET /api/pool/stats with the token");
}

/// A request with `kib` filler headers of exactly 1 KiB each (as cookies would be),
/// plus the request line and `Host`.
fn request_with_headers(addr: SocketAddr, kib: usize) -> Vec<u8> {
    let mut head = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for n in 0..kib {
        let name = format!("X-Filler-{n:04}: ");
        head.push_str(&name);
        head.push_str(&"a".repeat(1024 - name.len() - 2));
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[tokio::test]
async fn request_headers_over_16_kb_get_431_and_the_connection_closes() {
    let proxy = Proxy::start(&config("", ""));
    let addr = api(&proxy);
    // `raw` reads until the server closes, under a time limit: a hang fails it.
    let r = http::raw(addr, &request_with_headers(addr, 17)).await;
    assert_eq!(r.status, 431, "{}", r.text());
    let r = http::raw(addr, &request_with_headers(addr, 64)).await;
    assert_eq!(r.status, 431, "{}", r.text());
    // Headers just under the limit are still served.
    let r = http::raw(addr, &request_with_headers(addr, 15)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(addr, "/health", None).await.json()["status"], "ok");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let proxy = Proxy::start(&config("", ""));
    let r = get(api(&proxy), "/api/nothing-here", None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not_found");
    let r = http::request(api(&proxy), "POST", "/api/pool/stats", None).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"], "method_not_allowed");
}

/// `POST /api/acl/test` takes a JSON body from whoever holds the API: every kind of
/// bad body is a 400 that says what is wrong, and nothing is judged.
#[tokio::test]
async fn acl_test_refuses_bad_bodies_with_a_reason() {
    let proxy = Proxy::start(&config("", ""));
    let api = api(&proxy);
    let long = format!(
        r#"{{"client":"10.0.0.1","destination":"{}","port":1,"command":"connect"}}"#,
        "a".repeat(300)
    );
    let cases: [(&str, &str); 9] = [
        (
            r#"{"client":"10.0.0.1","destination":"x","port":0,"command":"connect"}"#,
            "port 0",
        ),
        ("", "EOF"),
        ("{", "EOF"),
        ("[]", "expected struct"),
        (
            r#"{"client":"10.0.0.1","destination":"x","port":1,"command":"connect","extra":1}"#,
            "unknown field",
        ),
        (
            r#"{"client":"not-an-ip","destination":"x","port":1,"command":"connect"}"#,
            "client \"not-an-ip\": expected an IP address",
        ),
        (
            r#"{"client":"10.0.0.1","destination":"x","port":70000,"command":"connect"}"#,
            "70000",
        ),
        (
            r#"{"client":"10.0.0.1","destination":"x","port":1,"command":"associate"}"#,
            "connect, bind, udp",
        ),
        (&long, "1 to 255 bytes"),
    ];
    for (body, needle) in cases {
        let r = http::post_json(api, "/api/acl/test", body, None).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let json = r.json();
        assert_eq!(json["error"], "bad_request", "{body}");
        let message = json["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{body}: {message}");
    }
    let good = r#"{"client":"10.0.0.1","destination":"192.0.2.1","port":22,"command":"bind"}"#;
    let r = http::post_json(api, "/api/acl/test", good, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["decision"], "allow");
    assert_eq!(r.json()["by"], "default");
}

/// Without a token, a page of another site could still send requests to the
/// loopback API (a POST needs no permission to be sent): a request whose Origin is
/// not loopback is refused, naming the header.
#[tokio::test]
async fn without_a_token_a_foreign_origin_is_refused() {
    let proxy = Proxy::start(&config("", ""));
    let addr = api(&proxy);
    let post = |origin: &str| {
        format!(
            "POST /api/acl/reload HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\n\
             Connection: close\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let r = http::raw(addr, post("https://evil.example").as_bytes()).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["header"], "Origin");
    let r = http::raw(addr, post(&format!("http://{addr}")).as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn pool_stats_say_disabled_or_show_the_flows() {
    let proxy = Proxy::start(&config("", ""));
    let body = get(api(&proxy), "/api/pool/stats", None).await.json();
    assert_eq!(body["enabled"], false);
    assert_eq!(body["config"]["max_idle_per_dest"], 4);
    assert!(body["stats"].is_null());

    let echo = upstream::echo();
    let proxy = Proxy::start(&config(
        "",
        "[server.pool]\nenabled = true\nmax_idle_per_dest = 2\nmax_total_idle = 10\n",
    ));
    for _ in 0..5 {
        let mut s = common::socks::tunnel(proxy.addr, echo).await;
        common::socks::assert_echo(&mut s, b"x").await;
        drop(s);
        // Give the refill started by this checkout time to land.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let body = get(api(&proxy), "/api/pool/stats", None).await.json();
    assert_eq!(body["enabled"], true);
    assert_eq!(body["config"]["max_total_idle"], 10);
    let stats = &body["stats"];
    assert_eq!(
        stats["hits"].as_u64().unwrap() + stats["misses"].as_u64().unwrap(),
        5
    );
    assert!(stats["hits"].as_u64().unwrap() >= 1, "{stats}");
    let reuse = body["reuse_rate"].as_f64().unwrap();
    let expected = stats["reused_connections"].as_f64().unwrap()
        / (stats["reused_connections"].as_f64().unwrap()
            + stats["new_connections"].as_f64().unwrap());
    assert!((reuse - expected).abs() < 1e-9);
    let util = body["utilisation"].as_f64().unwrap();
    assert!((util - stats["total_idle"].as_f64().unwrap() / 10.0).abs() < 1e-9);
    let dests = stats["per_destination"].as_array().unwrap();
    assert_eq!(dests.len(), 1);
    assert_eq!(dests[0]["destination"], echo.to_string());
}

/// A refused CONNECT and failed logins, each repeated: one aggregated event each.
#[tokio::test]
async fn telemetry_events_aggregate_filter_and_reject_bad_parameters() {
    let users =
        "[auth]\nsocks_method = \"userpass\"\n[[auth.users]]\nusername = \"u\"\npassword = \"p\"\n\
                 [telemetry]\naggregation_interval_secs = 1\n";
    let proxy = Proxy::start(&config("", users));
    let addr = api(&proxy);
    let refused = TargetAddr::from(upstream::closed_port());
    for _ in 0..3 {
        assert!(common::socks::login(proxy.addr, "u", "wrong")
            .await
            .is_none());
        let mut s = common::socks::login(proxy.addr, "u", "p")
            .await
            .expect("login");
        use rustsocks::protocol::Encode;
        use tokio::io::AsyncWriteExt;
        let req = rustsocks::protocol::socks5::Request {
            command: Command::Connect,
            dest: refused.clone(),
        };
        s.write_all(&req.to_bytes()).await.unwrap();
        let reply = common::socks::read_msg::<rustsocks::protocol::socks5::Reply>(&mut s).await;
        assert_eq!(reply.code, ReplyCode::ConnectionRefused);
    }
    // Failures are summed per interval: three may land in one event or be split
    // across two intervals, so the counts are summed over events.
    let count = |events: &serde_json::Value, category: &str| -> u64 {
        let list = events["events"].as_array().unwrap();
        list.iter()
            .filter(|e| e["category"] == category)
            .map(|e| e["details"]["count"].as_u64().unwrap())
            .sum()
    };
    let mut events = serde_json::Value::Null;
    for _ in 0..200 {
        events = get(addr, "/api/telemetry/events", None).await.json();
        if count(&events, "upstream") == 3 && count(&events, "auth") == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        (count(&events, "upstream"), count(&events, "auth")),
        (3, 3),
        "{events}"
    );
    let list = events["events"].as_array().unwrap();
    let upstream_ev = list
        .iter()
        .find(|e| e["category"] == "upstream")
        .expect("upstream event");
    assert_eq!(upstream_ev["details"]["destination"], refused.to_string());
    let auth_ev = list
        .iter()
        .find(|e| e["category"] == "auth")
        .expect("auth event");
    assert_eq!(auth_ev["details"]["client"], "127.0.0.1");
    assert!(
        !events.to_string().contains("wrong"),
        "a password reached telemetry"
    );
    let ids: Vec<u64> = list.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "not newest first: {ids:?}"
    );
    // The plain-text password in the config was reported at start-up.
    assert!(list.iter().any(|e| e["category"] == "config"));

    let only = get(
        addr,
        "/api/telemetry/events?category=upstream&severity=warning",
        None,
    )
    .await
    .json();
    assert!(only["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["category"] == "upstream"));
    assert_eq!(
        get(addr, "/api/telemetry/events?limit=1", None)
            .await
            .json()["count"],
        1
    );
    let later = get(
        addr,
        "/api/telemetry/events?since=2999-01-01T00:00:00Z",
        None,
    )
    .await
    .json();
    assert_eq!(later["count"], 0);
    // More than the buffer keeps is "all there is", not an error.
    let all = get(addr, "/api/telemetry/events?limit=1000000", None).await;
    assert_eq!(all.status, 200, "{}", all.text());
    for (query, param) in [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("severity=loud", "severity"),
        ("category=nope", "category"),
        ("since=yesterday", "since"),
        ("limt=5", "limt"),
        ("limit=5&limit=6", "limit"),
        ("since=2026-11-27T16:00:00%2B02:00", "since"),
    ] {
        let r = get(addr, &format!("/api/telemetry/events?{query}"), None).await;
        assert_eq!(r.status, 400, "{query}");
        assert_eq!(r.json()["parameter"], param, "{query}: {}", r.text());
    }
}

#[tokio::test]
async fn telemetry_stream_delivers_events_as_they_happen() {
    let proxy = Proxy::start(&config("", "[telemetry]\naggregation_interval_secs = 1\n"));
    let addr = api(&proxy);
    let (status, mut stream) =
        http::open_stream(addr, "/api/telemetry/stream?category=upstream", None).await;
    assert_eq!(status, 200);
    let (_s, reply) =
        common::socks::socks5(proxy.addr, Command::Connect, upstream::closed_port().into()).await;
    assert_eq!(reply.code, ReplyCode::ConnectionRefused);
    let seen = http::read_until(&mut stream, "\"category\":\"upstream\"").await;
    assert!(seen.contains("event: telemetry"), "{seen}");
    let r = get(addr, "/api/telemetry/stream?severity=loud", None).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn metrics_parse_and_count_real_traffic() {
    let echo = upstream::echo();
    let proxy = Proxy::start(&config("", "[server.pool]\nenabled = true\n"));
    for _ in 0..3 {
        let mut s = common::socks::tunnel(proxy.addr, echo).await;
        common::socks::assert_echo(&mut s, &[1u8; 1000]).await;
    }
    let (_s, reply) =
        common::socks::socks5(proxy.addr, Command::Connect, upstream::closed_port().into()).await;
    assert_eq!(reply.code, ReplyCode::ConnectionRefused);
    let mut bad = common::socks::connect(proxy.addr).await;
    tokio::io::AsyncWriteExt::write_all(&mut bad, &[9, 9])
        .await
        .unwrap();
    common::socks::read_until_closed(&mut bad).await;

    let addr = api(&proxy);
    // Each is counted just after the client sees its connection close.
    let mut samples = Vec::new();
    for _ in 0..100 {
        let text = get(addr, "/metrics", None).await.text();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("exposition format parses");
        samples = scrape.samples;
        let seen = |name, label| value(&samples, name, Some(label));
        let done = seen(
            "rustsocks_relay_bytes_total",
            ("direction", "upstream_to_client"),
        ) >= 3000.0
            && seen(
                "rustsocks_handshake_failures_total",
                ("reason", "malformed"),
            ) >= 1.0
            && seen(
                "rustsocks_upstream_connect_failures_total",
                ("reply", "connection_refused"),
            ) >= 1.0;
        if done {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let documented = include_str!("../docs/metrics.md");
    let names: HashSet<&str> = samples.iter().map(|s| s.metric.as_str()).collect();
    for name in names.iter().filter(|n| n.starts_with("rustsocks_")) {
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            documented.contains(&format!("`{base}`")),
            "{name} is not in docs/metrics.md"
        );
    }
    assert!(value(&samples, "rustsocks_connections_accepted_total", None) >= 5.0);
    assert_eq!(
        value(
            &samples,
            "rustsocks_relay_bytes_total",
            Some(("direction", "client_to_upstream"))
        ),
        3000.0
    );
    assert_eq!(
        value(
            &samples,
            "rustsocks_relay_bytes_total",
            Some(("direction", "upstream_to_client"))
        ),
        3000.0
    );
    assert_eq!(
        value(
            &samples,
            "rustsocks_upstream_connect_failures_total",
            Some(("reply", "connection_refused"))
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "rustsocks_handshake_failures_total",
            Some(("reason", "malformed"))
        ),
        1.0
    );
    assert_eq!(
        value(&samples, "rustsocks_pool_hits_total", None)
            + value(&samples, "rustsocks_pool_misses_total", None),
        4.0
    );
    assert!(names.contains("rustsocks_upstream_connect_seconds_count"));
    assert!(names.contains("rustsocks_sessions_active"));
}

fn value(samples: &[prometheus_parse::Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
    let s = samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no sample {name} {label:?}"));
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: unexpected {other:?}"),
    }
}

#[test]
fn api_on_a_public_address_needs_a_token() {
    let dir = TempDir::new();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[server]\nbind_port = 0\n[api]\nbind_address = \"0.0.0.0\"\nport = 0\n",
    )
    .unwrap();
    let (status, _, stderr) = run_cli(&["--config", path.to_str().unwrap()], "");
    assert!(!status.success());
    assert!(
        stderr.contains("api.bind_address = \"0.0.0.0\""),
        "{stderr}"
    );
}
