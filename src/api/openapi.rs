//! `GET /api/openapi.json`: the OpenAPI 3 description of every route, kept in a
//! file beside this one; a unit test checks it lists exactly the served routes and
//! an integration test calls every documented operation.

use axum::http::header;
use axum::response::IntoResponse;

pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn get() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
