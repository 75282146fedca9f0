//! Every operation of the management API, called on a server with data in every
//! list (a pooled destination, active and recorded sessions, an event), answers as
//! the OpenAPI document it serves says: a documented status, content type, and a
//! body that validates against the generated schema.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::http::{self, get};
use common::schema::{assert_documented, validate};
use common::socks::{self, assert_echo};
use common::{config, upstream, Proxy};
use rustsocks::protocol::socks5::{Command, ReplyCode};
use rustsocks::protocol::TargetAddr;
use serde_json::{json, Value};

/// Polls `path` until `ready` holds for its JSON body (bounded).
async fn wait_for(api: SocketAddr, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        last = get(api, path, None).await.json();
        if ready(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never got ready: {last}");
}

/// The path of an operation with its parameters filled in.
fn concrete(path: &str, id: &str, file: &str) -> String {
    path.replace("{id}", id).replace("{file}", file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_as_its_schema_says() {
    let proxy = Proxy::start(&config(
        "",
        "[server.pool]\nenabled = true\n[sessions]\nbatch_interval_ms = 50\n\
         [telemetry]\naggregation_interval_secs = 1\n",
    ));
    let api = proxy.api.expect("API enabled");
    let echo = upstream::echo();
    // A closed session, a failed one (and its event), and one still open.
    let mut done = socks::tunnel(proxy.addr, echo).await;
    assert_echo(&mut done, b"x").await;
    drop(done);
    let refused = TargetAddr::from(upstream::closed_port());
    let (_, reply) = socks::socks5(proxy.addr, Command::Connect, refused).await;
    assert_eq!(reply.code, ReplyCode::ConnectionRefused);
    let mut open = socks::tunnel(proxy.addr, echo).await;
    assert_echo(&mut open, b"y").await;
    let history = wait_for(api, "/api/sessions/history?status=closed", |v| {
        v["total"].as_u64() >= Some(1)
    })
    .await;
    let recorded = history["sessions"][0]["id"].as_str().unwrap().to_owned();
    wait_for(api, "/api/sessions/history?status=failed", |v| {
        v["total"].as_u64() >= Some(1)
    })
    .await;
    wait_for(api, "/api/telemetry/events", |v| {
        v["count"].as_u64() >= Some(1)
    })
    .await;
    let active = get(api, "/api/sessions/active", None).await.json();
    let live = active["sessions"][0]["id"].as_str().unwrap().to_owned();

    let doc = get(api, "/api/openapi.json", None).await.json();
    let unknown = "00000000-0000-4000-8000-000000000000";
    let mut answered = BTreeSet::new();
    let mut ops: Vec<(String, String)> = Vec::new();
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for method in methods.as_object().unwrap().keys() {
            ops.push((method.to_uppercase(), path.clone()));
        }
    }
    // Terminating the live session last, so that every read sees it.
    ops.sort_by_key(|(method, _)| method == "POST");
    for (method, path) in &ops {
        if path.ends_with("/stream") {
            continue; // never ends; its status and content type are checked below
        }
        let op = &doc["paths"][path][method.to_lowercase()];
        let documents = |code: &str| op["responses"].get(code).is_some();
        let mut calls = vec![concrete(path, &live, "app.js")];
        if documents("400") {
            calls.push(if path.contains("{id}") {
                concrete(path, "not-a-uuid", "")
            } else {
                format!("{path}?unknown=1")
            });
        }
        if documents("404") && path.contains('{') {
            calls.push(concrete(path, unknown, "nope.js"));
        }
        if documents("409") {
            calls.push(concrete(path, &recorded, ""));
        }
        if path == "/api/acl/test" {
            // The one operation with a request body: a good one and a bad one.
            let good = r#"{"user":"alice","client":"10.1.2.3","destination":"localhost","port":22,"command":"connect"}"#;
            for body in [good, r#"{"client":"10.1.2.3"}"#] {
                let r = http::post_json(api, path, body, None).await;
                assert_documented(&doc, method, path, &r);
                answered.insert((method.clone(), path.clone(), r.status));
            }
            continue;
        }
        for call in calls {
            let r = http::request(api, method, &call, None).await;
            assert_documented(&doc, method, path, &r);
            answered.insert((method.clone(), path.clone(), r.status));
        }
    }
    let (status, _stream) = http::open_stream(api, "/api/telemetry/stream", None).await;
    assert_eq!(status, 200);
    // Every operation was answered with a success, and the errors it documents that
    // a healthy server can be made to give (not 401/403: see tests/api.rs; not 500).
    for (method, path) in ops.iter().filter(|(_, p)| !p.ends_with("/stream")) {
        assert!(
            answered.contains(&(method.clone(), path.clone(), 200)),
            "{method} {path}: no 200 in {answered:?}"
        );
    }
    let errors: BTreeSet<String> = answered
        .iter()
        .filter(|(_, _, status)| *status != 200)
        .map(|(method, path, status)| format!("{method} {path} {status}"))
        .collect();
    let expected = [
        "GET /api/sessions/active 400",
        "POST /api/acl/test 400",
        "GET /api/sessions/history 400",
        "GET /api/sessions/stats 400",
        "GET /api/sessions/{id} 400",
        "GET /api/sessions/{id} 404",
        "GET /api/telemetry/events 400",
        "GET /assets/{file} 404",
        "POST /api/sessions/{id}/terminate 400",
        "POST /api/sessions/{id}/terminate 404",
        "POST /api/sessions/{id}/terminate 409",
    ];
    assert_eq!(errors, expected.map(String::from).into(), "{answered:?}");
    drop(open);
}

/// The validator itself: each kind of mismatch the document could have with a
/// response fails it.
#[test]
fn the_validator_catches_each_kind_of_drift() {
    let doc = json!({"components": {"schemas": {
        "Item": {"type": "object", "required": ["id"], "properties": {
            "id": {"type": "integer", "minimum": 0},
            "when": {"type": ["string", "null"], "format": "date-time"},
            "kind": {"type": "string", "enum": ["a", "b"]},
        }},
        "Both": {"allOf": [
            {"$ref": "#/components/schemas/Item"},
            {"type": "object", "properties": {"extra": {"type": "boolean"}}},
        ]},
    }}});
    let item = json!({"$ref": "#/components/schemas/Item"});
    let both = json!({"$ref": "#/components/schemas/Both"});
    let ok = json!({"id": 1, "when": "2026-11-27T16:00:00Z", "kind": "a"});
    validate(&doc, &item, &ok).unwrap();
    validate(&doc, &item, &json!({"id": 1, "when": null})).unwrap();
    validate(&doc, &both, &json!({"id": 1, "extra": true})).unwrap();
    for bad in [
        json!({"when": null}),
        json!({"id": -1}),
        json!({"id": 1.5}),
        json!({"id": 1, "kind": "c"}),
        json!({"id": 1, "when": "yesterday"}),
        json!({"id": 1, "renamed": 2}),
        json!([1]),
    ] {
        assert!(validate(&doc, &item, &bad).is_err(), "{bad}");
    }
    assert!(validate(&doc, &both, &json!({"id": 1, "other": true})).is_err());
    let list = json!({"type": "array", "items": {"$ref": "#/components/schemas/Item"}});
    assert!(validate(&doc, &list, &json!([ok, {"id": "x"}])).is_err());
    let nullable = json!({"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Item"}]});
    validate(&doc, &nullable, &json!(null)).unwrap();
    assert!(validate(&doc, &nullable, &json!({"id": "x"})).is_err());
    let dangling = json!({"$ref": "#/components/schemas/Gone"});
    assert!(validate(&doc, &dangling, &json!({})).is_err());
}
