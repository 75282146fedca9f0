//! `GET /api/openapi.json`: the OpenAPI document, generated from the handlers'
//! `#[utoipa::path]` annotations and the types they answer with, so that a field
//! cannot drift from its documentation. What holds for every operation (the token,
//! the Host guard) is added here from the same rules the guard applies.
//!
//! Unit tests check the document against the router and the query parsers; an
//! integration test (`tests/api.rs`) validates every response against it.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::schema::{Object, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, PathItem, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use super::error::{
    AclNotReloaded, BadRequest, ForbiddenHost, SessionsDisabled, StoreFailed, Unauthorized,
};
use super::{acl, dashboard, health, pool, sessions, telemetry};

const DESCRIPTION: &str = "Health, sessions (live and history), upstream pool statistics, \
the operational event feed and Prometheus metrics of a RustSocks server.\n\n\
With api.token (or api.token_file) configured, every operation except /health and the \
dashboard needs `Authorization: Bearer <token>`. Without a token, every operation \
(including /health and the dashboard) answers only requests whose Host header is a \
loopback name or address (localhost, localhost., *.localhost, 127.0.0.0/8, [::1], with or \
without a port); any other Host, or none, gets 403 forbidden_host, so that a web page \
cannot reach the API by DNS rebinding. Without a token, a request with an Origin header \
(which browsers add) must also come from a loopback origin, or it gets 403 forbidden_host \
with header \"Origin\": a page of another site cannot make the API act. No response carries a CORS permission \
(Access-Control-Allow-*).\n\n\
An unknown path gets 404 not_found and a method a path does not answer gets 405 \
method_not_allowed, both with an Error body. A request whose request line and headers \
exceed 16 KiB gets 431 Request Header Fields Too Large (with no body) and the connection \
is closed.";

#[derive(OpenApi)]
#[openapi(
    info(title = "RustSocks management API"),
    paths(
        dashboard::index,
        dashboard::asset,
        health::get,
        super::metrics,
        pool::stats,
        telemetry::events,
        telemetry::stream,
        sessions::active,
        sessions::history,
        sessions::stats,
        sessions::one,
        sessions::terminate,
        acl::rules,
        acl::test,
        acl::reload,
        get,
    ),
    components(responses(
        BadRequest,
        Unauthorized,
        ForbiddenHost,
        SessionsDisabled,
        StoreFailed,
        AclNotReloaded
    )),
    modifiers(&Guarded)
)]
struct Doc;

/// The document, built once.
pub fn document() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| Doc::openapi().to_json().expect("the document serialises"))
}

/// This document
#[utoipa::path(get, path = "/api/openapi.json", responses(
    (status = 200, description = "OpenAPI 3 document.", body = Object),
))]
pub async fn get() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

/// Adds what the guard in `mod.rs` does to every operation: the bearer token on all
/// but the public paths (401 without it), and the Host check (403).
struct Guarded;

impl Modify for Guarded {
    fn modify(&self, doc: &mut Document) {
        doc.info.description = Some(DESCRIPTION.to_owned());
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        doc.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
        for (path, item) in doc.paths.paths.iter_mut() {
            let public = super::is_public(path);
            for op in operations(item) {
                let responses = &mut op.responses.responses;
                responses.insert(
                    "403".into(),
                    RefOr::Ref(Ref::from_response_name("ForbiddenHost")),
                );
                if public {
                    op.security = Some(Vec::new());
                } else {
                    responses.insert(
                        "401".into(),
                        RefOr::Ref(Ref::from_response_name("Unauthorized")),
                    );
                }
            }
        }
        list_asset_names(doc);
    }
}

/// Every operation of a path, whatever its method (a route added later with a new
/// method must not miss the guard's responses).
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// `/assets/{file}` takes one of the files compiled in; the list comes from them.
fn list_asset_names(doc: &mut Document) {
    let Some(op) = doc
        .paths
        .paths
        .get_mut("/assets/{file}")
        .and_then(|i| i.get.as_mut())
    else {
        return;
    };
    let names: Vec<&str> = dashboard::asset_names().collect();
    let schema = Object::builder()
        .schema_type(Type::String)
        .enum_values(Some(names))
        .build();
    for param in op.parameters.iter_mut().flatten() {
        if param.name == "file" {
            param.schema = Some(RefOr::T(Schema::Object(schema.clone())));
        }
    }
}

#[cfg(test)]
mod tests;
