//! `GET /api/telemetry/events` (newest first, filtered) and
//! `GET /api/telemetry/stream` (the same events live, as Server-Sent Events).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::error::ApiError;
use super::query::Params;
use super::ApiState;
use crate::telemetry::{Category, EventFilter, Severity};

/// Events returned when `limit` is not given.
const DEFAULT_LIMIT: u64 = 100;

fn filter(params: &Params) -> Result<EventFilter, ApiError> {
    Ok(EventFilter {
        severity: params.parsed::<Severity>("severity", &format!("one of {}", Severity::NAMES))?,
        category: params.parsed::<Category>("category", &format!("one of {}", Category::NAMES))?,
        since: params.time("since")?,
    })
}

pub async fn events(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(
        query.as_deref(),
        &["severity", "category", "since", "limit"],
    )?;
    // No more than the buffer holds can exist; asking for more is not an error
    // (the dashboard asks for 100 whatever `max_events` is).
    let max = state.inner.deps.max_events as u64;
    let limit = params.int("limit", 1, u64::MAX, DEFAULT_LIMIT)?.min(max);
    let filter = filter(&params)?;
    let telemetry = &state.inner.deps.telemetry;
    let events = telemetry.events(&filter, limit as usize);
    Ok(Json(
        json!({ "count": events.len(), "lost": telemetry.lost(), "events": events }),
    ))
}

pub async fn stream(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let params = Params::parse(query.as_deref(), &["severity", "category"])?;
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
