use std::collections::BTreeSet;

use serde_json::Value;

fn doc() -> Value {
    serde_json::from_str(super::document()).expect("valid JSON")
}

/// A schema or parameter, following a `$ref` into the components.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => {
            let path = r.strip_prefix("#/").expect("a local reference");
            path.split('/').fold(doc, |node, key| &node[key])
        }
        None => v,
    }
}

fn strings(v: &Value) -> Vec<String> {
    let list = v.as_array().expect("a list");
    list.iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn openapi_document_lists_exactly_the_routes() {
    let doc = doc();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let served: BTreeSet<_> = crate::api::routes()
        .into_iter()
        .map(|(m, p, _)| (m.to_owned(), p.to_owned()))
        .collect();
    assert_eq!(documented, served);
}

#[test]
fn openapi_event_categories_are_the_ones_the_code_emits() {
    let doc = doc();
    let code: Vec<String> = crate::telemetry::Category::NAMES
        .split(", ")
        .map(str::to_owned)
        .collect();
    let event = &doc["components"]["schemas"]["Event"]["properties"]["category"];
    assert_eq!(strings(&resolve(&doc, event)["enum"]), code);
    for path in ["/api/telemetry/events", "/api/telemetry/stream"] {
        let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
        let category = params.iter().find(|p| p["name"] == "category").unwrap();
        let schema = resolve(&doc, &category["schema"]);
        assert_eq!(strings(&schema["enum"]), code, "{path}");
    }
}

#[test]
fn documented_query_parameters_are_the_ones_each_handler_accepts() {
    use crate::api::{sessions, telemetry};
    let doc = doc();
    let cases = [
        ("/api/telemetry/events", telemetry::EVENTS_PARAMS),
        ("/api/telemetry/stream", telemetry::STREAM_PARAMS),
        ("/api/sessions/active", sessions::ACTIVE_PARAMS),
        ("/api/sessions/history", sessions::HISTORY_PARAMS),
        ("/api/sessions/stats", sessions::STATS_PARAMS),
    ];
    for (path, accepted) in cases {
        let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
        let documented: BTreeSet<&str> = params
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let accepted: BTreeSet<&str> = accepted.iter().copied().collect();
        assert_eq!(documented, accepted, "{path}");
    }
}

#[test]
fn every_error_response_has_the_error_body() {
    let doc = doc();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for (code, response) in op["responses"].as_object().unwrap() {
                if code.starts_with('2') {
                    continue;
                }
                let response = resolve(&doc, response);
                let schema = &response["content"]["application/json"]["schema"];
                assert_eq!(
                    schema["$ref"], "#/components/schemas/Error",
                    "{method} {path} {code}"
                );
            }
        }
    }
}
