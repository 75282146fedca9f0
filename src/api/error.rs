//! The API's one error type, and its JSON form.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("query parameter `{name}` = {value:?}: expected {expected}")]
    BadParam {
        name: &'static str,
        value: String,
        expected: String,
    },
    #[error("unknown query parameter `{0}`")]
    UnknownParam(String),
    #[error("query parameter `{0}` given more than once")]
    RepeatedParam(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error(
        "{0}: without api.token the API answers only requests whose Host is a loopback \
         name or address (localhost, 127.0.0.0/8, [::1]), so that a web page cannot reach \
         it by DNS rebinding"
    )]
    ForbiddenHost(HostProblem),
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    #[error("method {method} not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("`{value}` is not a session id (expected a UUID)")]
    BadSessionId { value: String },
    #[error("no session {0}")]
    SessionNotFound(String),
    #[error("session {0} is not active")]
    SessionNotActive(String),
    #[error("session tracking is off ([sessions] enabled = false)")]
    SessionsDisabled,
    #[error("session store: {0}")]
    Store(#[from] crate::session::StoreError),
}

/// Why a request's `Host` header was refused.
#[derive(Debug, thiserror::Error)]
pub enum HostProblem {
    #[error("the request has no Host header")]
    Missing,
    #[error("the request has more than one Host header")]
    Repeated,
    #[error("Host header `{0}` is not a loopback name or address")]
    NotLoopback(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadParam { .. } | Self::UnknownParam(_) | Self::RepeatedParam(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::ForbiddenHost(_) => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadSessionId { .. } => StatusCode::BAD_REQUEST,
            Self::SessionNotFound(_) | Self::SessionsDisabled => StatusCode::NOT_FOUND,
            Self::SessionNotActive(_) => StatusCode::CONFLICT,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::BadParam { .. } | Self::UnknownParam(_) | Self::RepeatedParam(_) => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::ForbiddenHost(_) => "forbidden_host",
            Self::NotFound { .. } => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::BadSessionId { .. } => "bad_request",
            Self::SessionNotFound(_) => "not_found",
            Self::SessionNotActive(_) => "not_active",
            Self::SessionsDisabled => "sessions_disabled",
            Self::Store(_) => "store_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code(), "message": self.to_string() });
        match &self {
            Self::BadParam { name, .. } => body["parameter"] = json!(name),
            Self::UnknownParam(name) | Self::RepeatedParam(name) => body["parameter"] = json!(name),
            Self::ForbiddenHost(_) => body["header"] = json!("Host"),
            _ => {}
        }
        let mut response = (self.status(), Json(body)).into_response();
        if matches!(self, Self::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
