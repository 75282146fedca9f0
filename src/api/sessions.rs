//! Sessions: `GET /api/sessions/active`, `/history`, `/stats`, `/{id}`, and
//! `POST /api/sessions/{id}/terminate`. Store queries run on the blocking pool.

use std::time::{Duration, SystemTime};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::deps::SessionsView;
use super::error::{ApiError, BadRequest, ErrorBody, SessionsDisabled, StoreFailed};
use super::query::Params;
use super::ApiState;
use crate::session::{HistoryPage, HistoryQuery, SessionRecord, SessionStats, SortKey, Status};

/// Largest page of active sessions or history, and the default.
const MAX_PAGE_SIZE: u64 = 1000;
const DEFAULT_PAGE_SIZE: u64 = 50;
/// Entries in the top-users and top-destinations lists.
const TOP: usize = 10;

/// The query parameters each operation accepts (the document lists the same; a
/// test checks it).
pub const ACTIVE_PARAMS: &[&str] = &["page", "page_size"];
pub const HISTORY_PARAMS: &[&str] = &[
    "user",
    "destination",
    "status",
    "client",
    "since",
    "until",
    "sort",
    "order",
    "page",
    "page_size",
];
pub const STATS_PARAMS: &[&str] = &["window_hours"];

/// The paging parameters of active sessions and history.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the query; `Params` reads it
pub struct PageParams {
    /// 1-based; default 1.
    #[param(minimum = 1)]
    page: Option<u64>,
    /// 1 to 1000; default 50.
    #[param(minimum = 1, maximum = 1000)]
    page_size: Option<u64>,
}

/// The filters and sort of the history.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the query; `Params` reads it
pub struct HistoryParams {
    /// Substring of the user name.
    user: Option<String>,
    /// Substring of the requested destination.
    destination: Option<String>,
    /// Only sessions with this status.
    status: Option<Status>,
    /// Substring of the client address (ip:port).
    client: Option<String>,
    /// Sessions that started at or after this RFC 3339 time, in UTC (e.g.
    /// 2026-11-27T16:00:00Z; offsets are refused).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Sessions that started before this RFC 3339 time, in UTC.
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    /// Default start.
    #[param(inline)]
    sort: Option<Sort>,
    /// Default desc.
    #[param(inline)]
    order: Option<Order>,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // documents `sort`; `SortKey` parses it
enum Sort {
    Start,
    Duration,
    Bytes,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // documents `order`
enum Order {
    Asc,
    Desc,
}

/// Statistics of the history over a window, with the count of active sessions.
#[derive(Serialize, ToSchema)]
pub struct SessionStatsResponse {
    window_hours: u64,
    /// Sessions active now.
    active: usize,
    #[serde(flatten)]
    stats: SessionStats,
}

#[derive(Serialize, ToSchema)]
pub struct Terminated {
    id: Uuid,
    terminated: bool,
}

fn sessions(state: &ApiState) -> Result<&SessionsView, ApiError> {
    state
        .inner
        .deps
        .sessions
        .as_ref()
        .ok_or(ApiError::SessionsDisabled)
}

/// `page` (1-based) and `page_size` of a paged list; the same for active sessions
/// and history.
fn page(p: &Params) -> Result<(u64, u64), ApiError> {
    Ok((
        p.int("page", 1, u32::MAX as u64, 1)?,
        p.int("page_size", 1, MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE)?,
    ))
}

/// Sessions being relayed now, with live byte counts, paged
///
/// One page of active sessions, oldest first; `total` counts them all.
#[utoipa::path(get, path = "/api/sessions/active", params(PageParams), responses(
    (status = 200, description = "One page of active sessions.", body = HistoryPage),
    (status = 400, response = BadRequest),
    (status = 404, response = SessionsDisabled),
))]
pub async fn active(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<HistoryPage>, ApiError> {
    let sessions = sessions(&state)?;
    let (page, page_size) = page(&Params::parse(raw.as_deref(), ACTIVE_PARAMS)?)?;
    let skip = usize::try_from((page - 1) * page_size).unwrap_or(usize::MAX);
    let (total, list) = sessions.active(skip, page_size as usize);
    Ok(Json(HistoryPage {
        total: total as u64,
        page,
        page_size,
        sessions: list,
    }))
}

/// Recorded sessions, filtered, sorted and paged
#[utoipa::path(get, path = "/api/sessions/history", params(HistoryParams, PageParams), responses(
    (status = 200, description = "One page.", body = HistoryPage),
    (status = 400, response = BadRequest),
    (status = 404, response = SessionsDisabled),
    (status = 500, response = StoreFailed),
))]
pub async fn history(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<HistoryPage>, ApiError> {
    let sessions = sessions(&state)?;
    let p = Params::parse(raw.as_deref(), HISTORY_PARAMS)?;
    let (page, page_size) = page(&p)?;
    let descending = match p.get("order") {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(other) => {
            let value = other.to_owned();
            return Err(ApiError::BadParam {
                name: "order",
                value,
                expected: "asc or desc".into(),
            });
        }
    };
    let q = HistoryQuery {
        user: p.get("user").map(str::to_owned),
        destination: p.get("destination").map(str::to_owned),
        client: p.get("client").map(str::to_owned),
        status: p.parsed::<Status>("status", &format!("one of {}", Status::NAMES))?,
        since: p.time("since")?,
        until: p.time("until")?,
        sort: p
            .parsed::<SortKey>("sort", "one of start, duration, bytes")?
            .unwrap_or(SortKey::Start),
        descending,
        page,
        page_size,
    };
    Ok(Json(sessions.history(q).await?))
}

/// Totals, bytes, sessions by status, top users and destinations over a window
#[utoipa::path(get, path = "/api/sessions/stats",
    params(("window_hours" = Option<u64>, Query, minimum = 1, maximum = 8784,
        description = "1 to 8784; default 24.")),
    responses(
        (status = 200, description = "Statistics.", body = SessionStatsResponse),
        (status = 400, response = BadRequest),
        (status = 404, response = SessionsDisabled),
        (status = 500, response = StoreFailed),
    ))]
pub async fn stats(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<SessionStatsResponse>, ApiError> {
    let sessions = sessions(&state)?;
    let p = Params::parse(raw.as_deref(), STATS_PARAMS)?;
    let hours = p.int("window_hours", 1, 24 * 366, 24)?;
    let since = SystemTime::now()
        .checked_sub(Duration::from_secs(hours * 3600))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let stats = sessions.stats(since, TOP).await?;
    Ok(Json(SessionStatsResponse {
        window_hours: hours,
        active: sessions.active_count(),
        stats,
    }))
}

/// The `{id}` of a path. One that is not UTF-8 gets the same JSON error as any
/// other malformed id, not axum's plain-text rejection.
fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(raw)| raw)
        .map_err(|_| ApiError::BadSessionId {
            value: "(not valid UTF-8)".into(),
        })
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::BadSessionId {
        value: raw.to_owned(),
    })
}

/// One session, active (live counts) or recorded
#[utoipa::path(get, path = "/api/sessions/{id}",
    params(("id" = Uuid, Path, description = "The session's id.")),
    responses(
        (status = 200, description = "The session.", body = SessionRecord),
        (status = 400, response = BadRequest),
        (status = 404, response = SessionsDisabled),
        (status = 500, response = StoreFailed),
    ))]
pub async fn one(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<SessionRecord>, ApiError> {
    let raw = path_id(path)?;
    let sessions = sessions(&state)?;
    match sessions.find(parse_id(&raw)?).await? {
        Some(record) => Ok(Json(record)),
        None => Err(ApiError::SessionNotFound(raw)),
    }
}

/// Close both sockets of an active session; it is recorded as terminated
#[utoipa::path(post, path = "/api/sessions/{id}/terminate",
    params(("id" = Uuid, Path, description = "The session's id.")),
    responses(
        (status = 200, description = "Terminated.", body = Terminated),
        (status = 400, response = BadRequest),
        (status = 404, response = SessionsDisabled),
        (status = 409, description = "The session exists but is no longer active.",
            body = ErrorBody),
        (status = 500, response = StoreFailed),
    ))]
pub async fn terminate(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Terminated>, ApiError> {
    let raw = path_id(path)?;
    let sessions = sessions(&state)?;
    let id = parse_id(&raw)?;
    let terminate = state.inner.deps.terminate.as_ref();
    if terminate.is_some_and(|t| t.session(id)) {
        return Ok(Json(Terminated {
            id,
            terminated: true,
        }));
    }
    match sessions.find(id).await? {
        // Ended between the two looks, or only recorded: either way not active.
        Some(_) => Err(ApiError::SessionNotActive(raw)),
        None => Err(ApiError::SessionNotFound(raw)),
    }
}
