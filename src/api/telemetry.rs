//! `GET /api/telemetry/events` (newest first, filtered) and
//! `GET /api/telemetry/stream` (the same events live, as Server-Sent Events).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, BadRequest};
use super::query::Params;
use super::ApiState;
use crate::telemetry::{Category, Event, EventFilter, Severity};

/// Events returned when `limit` is not given.
const DEFAULT_LIMIT: u64 = 100;

/// The query parameters each operation accepts (the document lists the same; a
/// test checks it).
pub const EVENTS_PARAMS: &[&str] = &["severity", "category", "since", "limit"];
pub const STREAM_PARAMS: &[&str] = &["severity", "category"];

/// The filters of the list and the stream.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the query; `Params` reads it
pub struct FilterParams {
    /// Only events of this severity.
    severity: Option<Severity>,
    /// Only events of this category.
    category: Option<Category>,
}

#[derive(Serialize, ToSchema)]
pub struct EventList {
    count: usize,
    /// Signals dropped because the feed was backed up.
    lost: u64,
    events: Vec<Event>,
}

fn filter(params: &Params) -> Result<EventFilter, ApiError> {
    Ok(EventFilter {
        severity: params.parsed::<Severity>("severity", &format!("one of {}", Severity::NAMES))?,
        category: params.parsed::<Category>("category", &format!("one of {}", Category::NAMES))?,
        since: params.time("since")?,
    })
}

/// Recent operational events, newest first
#[utoipa::path(get, path = "/api/telemetry/events",
    params(
        FilterParams,
        ("since" = Option<String>, Query, format = DateTime,
            description = "Only events at or after this RFC 3339 time, in UTC (e.g. \
                2026-11-27T16:00:00Z; offsets are refused)."),
        ("limit" = Option<u64>, Query, minimum = 1,
            description = "At most this many events (default 100; values above \
                telemetry.max_events, the most kept, return all kept)."),
    ),
    responses(
        (status = 200, description = "Events.", body = EventList),
        (status = 400, response = BadRequest),
    ))]
pub async fn events(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> Result<Json<EventList>, ApiError> {
    let params = Params::parse(query.as_deref(), EVENTS_PARAMS)?;
    // No more than the buffer holds can exist; asking for more is not an error
    // (the dashboard asks for 100 whatever `max_events` is).
    let telemetry = &state.inner.deps.telemetry;
    let max = telemetry.max_events() as u64;
    let limit = params.int("limit", 1, u64::MAX, DEFAULT_LIMIT)?.min(max);
    let filter = filter(&params)?;
    let events = telemetry.events(&filter, limit as usize);
    Ok(Json(EventList {
        count: events.len(),
        lost: telemetry.lost(),
        events,
    }))
}

/// Events as they are recorded, as Server-Sent Events (event: telemetry, data: an
/// Event)
#[utoipa::path(get, path = "/api/telemetry/stream", params(FilterParams), responses(
    (status = 200, description = "An event stream.", body = String,
        content_type = "text/event-stream"),
    (status = 400, response = BadRequest),
))]

pub async fn stream(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let params = Params::parse(query.as_deref(), STREAM_PARAMS)?;
    let filter = filter(&params)?;
    let rx = state.inner.deps.telemetry.subscribe();
    let shutdown = state.inner.shutdown.clone();
    // Ends when the server shuts down, so graceful shutdown does not wait on it.
    let events = stream::unfold(
        (rx, filter, shutdown),
        |(mut rx, filter, shutdown)| async move {
            loop {
                let received = tokio::select! {
                    r = rx.recv() => r,
                    () = shutdown.cancelled() => return None,
                };
                match received {
                    Ok(event) if filter.matches(&event) => {
                        let data = serde_json::to_string(&event).unwrap_or_default();
                        let sse = SseEvent::default()
                            .event("telemetry")
                            .id(event.id.to_string())
                            .data(data);
                        return Some((Ok(sse), (rx, filter, shutdown)));
                    }
                    Ok(_) => continue,
                    // A slow reader skipped some events; it goes on with the newest.
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
