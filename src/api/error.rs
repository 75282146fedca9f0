//! The API's one error type, its JSON form, and the documented error responses.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::{ToResponse, ToSchema};

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
    #[error("request body: {0}")]
    BadBody(String),
    #[error("{0}")]
    AclNotReloaded(String),
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
    #[error("Origin header `{0}` is not a loopback origin (a page of another site)")]
    Origin(String),
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
            Self::BadBody(_) => StatusCode::BAD_REQUEST,
            Self::AclNotReloaded(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    fn code(&self) -> ErrorCode {
        match self {
            Self::BadParam { .. } | Self::UnknownParam(_) | Self::RepeatedParam(_) => {
                ErrorCode::BadRequest
            }
            Self::Unauthorized => ErrorCode::Unauthorized,
            Self::ForbiddenHost(_) => ErrorCode::ForbiddenHost,
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            Self::BadSessionId { .. } => ErrorCode::BadRequest,
            Self::SessionNotFound(_) => ErrorCode::NotFound,
            Self::SessionNotActive(_) => ErrorCode::NotActive,
            Self::SessionsDisabled => ErrorCode::SessionsDisabled,
            Self::Store(_) => ErrorCode::StoreError,
            Self::BadBody(_) => ErrorCode::BadRequest,
            Self::AclNotReloaded(_) => ErrorCode::AclNotReloaded,
        }
    }

    fn body(&self) -> ErrorBody {
        let parameter = match self {
            Self::BadParam { name, .. } => Some((*name).to_owned()),
            Self::UnknownParam(name) | Self::RepeatedParam(name) => Some(name.clone()),
            _ => None,
        };
        ErrorBody {
            error: self.code(),
            message: self.to_string(),
            parameter,
            header: match self {
                Self::ForbiddenHost(HostProblem::Origin(_)) => Some("Origin"),
                Self::ForbiddenHost(_) => Some("Host"),
                _ => None,
            },
        }
    }
}

/// What went wrong, in a word a client can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    ForbiddenHost,
    NotFound,
    MethodNotAllowed,
    NotActive,
    SessionsDisabled,
    StoreError,
    AclNotReloaded,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    error: ErrorCode,
    /// What happened, for a person to read.
    message: String,
    /// The query parameter at fault, for bad_request.
    #[serde(skip_serializing_if = "Option::is_none")]
    parameter: Option<String>,
    /// The request header at fault, for forbidden_host: "Host" or "Origin".
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<&'static str>,
}

// The error responses operations share; the document refers to them by name.

/// A query parameter is unknown, repeated or invalid (`parameter` names it), or a
/// session id is not a UUID.
#[derive(ToResponse)]
#[allow(dead_code)] // a document entry; never built
pub struct BadRequest(ErrorBody);

/// Missing or wrong bearer token.
#[derive(ToResponse)]
#[allow(dead_code)] // a document entry; never built
pub struct Unauthorized(ErrorBody);

/// Only without a token: the Host header is missing or is not a loopback name or
/// address (DNS-rebinding guard); `header` is "Host" and `message` says why.
#[derive(ToResponse)]
#[allow(dead_code)] // a document entry; never built
pub struct ForbiddenHost(ErrorBody);

/// Session tracking is off ([sessions] enabled = false), or no such session.
#[derive(ToResponse)]
#[allow(dead_code)] // a document entry; never built
pub struct SessionsDisabled(ErrorBody);

/// The rules were not reloaded (the file is unreadable or invalid; the message
/// names every problem); the rules in force stay.
#[derive(ToResponse)]
#[allow(dead_code)] // a document entry; never built
pub struct AclNotReloaded(ErrorBody);

/// The session store failed; the message says how.
#[derive(ToResponse)]
#[allow(dead_code)] // a document entry; never built
pub struct StoreFailed(ErrorBody);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if matches!(self, Self::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
