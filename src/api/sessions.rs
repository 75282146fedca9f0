//! Sessions: `GET /api/sessions/active`, `/history`, `/stats`, `/{id}`, and
//! `POST /api/sessions/{id}/terminate`. Store queries run on the blocking pool.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde_json::{json, Value};
use uuid::Uuid;

use super::error::ApiError;
use super::query::Params;
use super::ApiState;
use crate::session::{
    ActiveSession, HistoryQuery, SessionStore, Sessions, SortKey, Status, StoreError,
};

/// Largest page of active sessions or history, and the default.
const MAX_PAGE_SIZE: u64 = 1000;
const DEFAULT_PAGE_SIZE: u64 = 50;
/// Entries in the top-users and top-destinations lists.
const TOP: usize = 10;

fn sessions(state: &ApiState) -> Result<&Arc<Sessions>, ApiError> {
    state
        .inner
        .deps
        .sessions
        .as_ref()
        .ok_or(ApiError::SessionsDisabled)
}

/// Runs a store query off the async workers.
async fn query<T: Send + 'static>(
    store: Arc<dyn SessionStore>,
    f: impl FnOnce(&dyn SessionStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let result = tokio::task::spawn_blocking(move || f(store.as_ref())).await;
    Ok(result.map_err(|_| StoreError::Interrupted)??)
}

/// An active session as the API shows it: its record with live counts.
fn live(s: &ActiveSession) -> Value {
    let mut v = serde_json::to_value(&s.record).unwrap_or_default();
    v["bytes_client_to_upstream"] = json!(s.counters.client_to_upstream.load(Relaxed));
    v["bytes_upstream_to_client"] = json!(s.counters.upstream_to_client.load(Relaxed));
    v["datagrams_client_to_upstream"] =
        json!(s.counters.datagrams_client_to_upstream.load(Relaxed));
    v["datagrams_upstream_to_client"] =
        json!(s.counters.datagrams_upstream_to_client.load(Relaxed));
    let elapsed = SystemTime::now()
        .duration_since(s.record.started_at)
        .unwrap_or_default();
    v["duration_ms"] = json!(elapsed.as_millis() as u64);
    v
}

/// `page` (1-based) and `page_size` of a paged list; the same for active sessions
/// and history.
fn page(p: &Params) -> Result<(u64, u64), ApiError> {
    Ok((
        p.int("page", 1, u32::MAX as u64, 1)?,
        p.int("page_size", 1, MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE)?,
    ))
}

/// Active sessions, oldest first, one page at a time: a busy server has thousands,
/// and live counts are read for the page only.
pub async fn active(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let sessions = sessions(&state)?;
    let (page, page_size) = page(&Params::parse(raw.as_deref(), &["page", "page_size"])?)?;
    let all = sessions.registry().snapshot();
    let skip = usize::try_from((page - 1) * page_size).unwrap_or(usize::MAX);
    let list: Vec<Value> = all
        .iter()
        .skip(skip)
        .take(page_size as usize)
        .map(|s| live(s))
        .collect();
    Ok(Json(json!({
        "total": all.len(),
        "page": page,
        "page_size": page_size,
        "sessions": list,
    })))
}

pub async fn history(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let store = sessions(&state)?.store();
    let p = Params::parse(
        raw.as_deref(),
        &[
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
        ],
    )?;
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
    let page = query(store, move |s| s.history(&q)).await?;
    Ok(Json(serde_json::to_value(page).unwrap_or_default()))
}

pub async fn stats(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let sessions = sessions(&state)?;
    let p = Params::parse(raw.as_deref(), &["window_hours"])?;
    let hours = p.int("window_hours", 1, 24 * 366, 24)?;
    let since = SystemTime::now()
        .checked_sub(Duration::from_secs(hours * 3600))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let stats = query(sessions.store(), move |s| s.stats(since, TOP)).await?;
    let mut v = serde_json::to_value(stats).unwrap_or_default();
    v["window_hours"] = json!(hours);
    v["active"] = json!(sessions.registry().len());
    Ok(Json(v))
}

/// A session found by id: live in the registry, or only in the store.
enum Found {
    Active(Arc<ActiveSession>),
    Recorded(Box<crate::session::SessionRecord>),
}

async fn find(sessions: &Sessions, raw: &str) -> Result<Found, ApiError> {
    let id = Uuid::parse_str(raw).map_err(|_| ApiError::BadSessionId {
        value: raw.to_owned(),
    })?;
    if let Some(s) = sessions.registry().get(&id) {
        return Ok(Found::Active(s));
    }
    match query(sessions.store(), move |s| s.get(id)).await? {
        Some(record) => Ok(Found::Recorded(Box::new(record))),
        None => Err(ApiError::SessionNotFound(raw.to_owned())),
    }
}

/// The `{id}` of a path; one that is not UTF-8 gets the same JSON error as any
/// other malformed id, not axum's plain-text rejection.
fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(raw)| raw)
        .map_err(|_| ApiError::BadSessionId {
            value: "(not valid UTF-8)".into(),
        })
}

pub async fn one(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let raw = path_id(path)?;
    match find(sessions(&state)?, &raw).await? {
        Found::Active(s) => Ok(Json(live(&s))),
        Found::Recorded(record) => Ok(Json(serde_json::to_value(record).unwrap_or_default())),
    }
}

pub async fn terminate(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let raw = path_id(path)?;
    match find(sessions(&state)?, &raw).await? {
        Found::Active(s) => {
            s.terminate.cancel();
            Ok(Json(json!({ "id": s.record.id, "terminated": true })))
        }
        Found::Recorded(_) => Err(ApiError::SessionNotActive(raw)),
    }
}
