//! Live streams of events over WebSocket and Server-Sent Events, fed by the same
//! [`crate::feed::Feed`] as GraphQL subscriptions. Each stream is opened before the
//! connection is upgraded, so a bad id or position is an ordinary problem+json answer.
//!
//! Messages are the events as `GET /api/v1/workflows/{id}/history` shows them (`type`,
//! `workflow_id`, `seq`, `at_ms`, and the event's fields); task updates add `queue`.
//!
//! SSE ids: with `?workflow_id=` the id is the event's `seq` in its run; without it, the id
//! is a [`Position`] in the whole topic (the next offset of every partition). Either way a
//! reconnect with `Last-Event-ID` continues after that event, with no gap and no repeat.

use super::{AppState, parse_workflow_id};
use crate::error::ApiError;
use crate::feed::{EventStream, Position, TaskUpdate};
use crate::problem::Problem;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{
    CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use distorch_domain::event::EventEnvelope;
use futures::StreamExt;
use serde_json::Value;
use std::convert::Infallible;

/// WebSocket close code 1011, "internal error": the server hit an error (IANA registry of
/// RFC 6455 close codes).
const CLOSE_INTERNAL: u16 = 1011;

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RunStreamQuery {
    /// Start after this seq (the last one the client saw); default 0: from the first event.
    after_seq: Option<u64>,
}

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TaskStreamQuery {
    /// Only tasks of this queue; default: every queue.
    queue: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventStreamQuery {
    /// Only this run's events (UUID); the SSE ids are then its seqs.
    workflow_id: Option<String>,
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

fn upgrade(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, ApiError> {
    ws.map_err(|e| {
        ApiError::BadRequest(format!(
            "this endpoint is a WebSocket; connect with a WebSocket client ({})",
            e.body_text()
        ))
    })
}

/// A run's events over WebSocket: its history after `after_seq`, then live, each once.
#[utoipa::path(
    get,
    path = "/ws/workflows/{id}",
    tag = "streams",
    params(("id" = String, Path, description = "Run id (UUID)"), RunStreamQuery),
    responses(
        (status = 101, description = "WebSocket: one JSON text message per event, in seq order"),
        (status = 400, description = "Malformed id, or not a WebSocket request", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown run", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn ws_workflow(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<RunStreamQuery>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let id = parse_workflow_id(&id)?;
    let q = query(q)?;
    let ws = upgrade(ws)?;
    let stream = state.feed.run_events(id, q.after_seq.unwrap_or(0)).await?;
    Ok(ws
        .on_upgrade(move |socket| pump(socket, stream, |e| event_json(&e)))
        .into_response())
}

/// Task updates over WebSocket, from now on: every task event of `queue` (or of every
/// queue) with the task's `queue`.
#[utoipa::path(
    get,
    path = "/ws/tasks/stream",
    tag = "streams",
    params(TaskStreamQuery),
    responses(
        (status = 101, description = "WebSocket: one JSON text message per task event"),
        (status = 400, description = "Not a WebSocket request", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn ws_tasks(
    State(state): State<AppState>,
    q: Result<Query<TaskStreamQuery>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let ws = upgrade(ws)?;
    let queue = q.queue.filter(|q| !q.is_empty());
    let stream = state.feed.task_updates(queue).await?;
    Ok(ws
        .on_upgrade(move |socket| pump(socket, stream, |u| task_json(&u)))
        .into_response())
}

/// Events as Server-Sent Events, resumable with `Last-Event-ID`.
///
/// With `workflow_id`, the run's history and then its live events, each with `id: <seq>`.
/// Without, every event from now on, each with `id:` a position in the whole log (opaque;
/// send it back as `Last-Event-ID`). The `event:` name is the event type.
#[utoipa::path(
    get,
    path = "/api/v1/events/stream",
    tag = "streams",
    params(
        EventStreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id"),
    ),
    responses(
        (status = 200, description = "An endless `text/event-stream`", content_type = "text/event-stream", body = String),
        (status = 400, description = "Malformed run id or Last-Event-ID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown run", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn sse_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<EventStreamQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let last_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::BadRequest("Last-Event-ID must be visible ASCII".into()))?,
        ),
    }
    .map(str::trim)
    .filter(|v| !v.is_empty());
    let events: EventStream<SseEvent> = match q.workflow_id.as_deref().filter(|w| !w.is_empty()) {
        Some(raw) => {
            let id = parse_workflow_id(raw)?;
            let after = match last_id {
                None => 0,
                Some(v) => v.parse().map_err(|_| {
                    ApiError::BadRequest(format!(
                        "Last-Event-ID {v:?} is not a seq (events of one run have numeric ids)"
                    ))
                })?,
            };
            let stream = state.feed.run_events(id, after).await?;
            Box::pin(stream.map(|item| item.map(|e| sse_event(&e).id(e.seq.to_string()))))
        }
        None => {
            let from = last_id
                .map(|v| Position::parse(v, state.feed.partitions()))
                .transpose()?;
            let stream = state.feed.all_events(from).await?;
            Box::pin(stream.map(|item| {
                item.map(|(position, e)| sse_event(&e.envelope).id(position.to_string()))
            }))
        }
    };
    // An error ends the stream with an `error` event that says why.
    let body = events
        .scan(false, |ended, item| {
            let out = match item {
                _ if *ended => None,
                Ok(event) => Some(event),
                Err(e) => {
                    *ended = true;
                    tracing::warn!(error = %e, "event stream ended");
                    Some(SseEvent::default().event("error").data(e.to_string()))
                }
            };
            futures::future::ready(out)
        })
        .map(Ok::<_, Infallible>);
    Ok(Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn event_json(e: &EventEnvelope) -> String {
    serde_json::to_string(e).unwrap_or_default()
}

fn task_json(u: &TaskUpdate) -> String {
    let mut v = serde_json::to_value(u.envelope.as_ref()).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("queue".into(), Value::String(u.queue.clone()));
    }
    v.to_string()
}

fn sse_event(e: &EventEnvelope) -> SseEvent {
    SseEvent::default()
        .event(e.event.name())
        .data(event_json(e))
}

/// Sends the stream's items as text messages until the stream ends or the client leaves;
/// an error closes the socket with its message.
async fn pump<T>(mut socket: WebSocket, mut stream: EventStream<T>, render: fn(T) -> String) {
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(item)) => {
                    if socket.send(Message::Text(render(item).into())).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    let frame = CloseFrame {
                        code: CLOSE_INTERNAL,
                        reason: close_reason(&e.to_string()).into(),
                    };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
                None => return,
            },
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Most bytes a close frame's reason may hold (RFC 6455: 125 bytes of payload, 2 of them the
/// code).
const MAX_CLOSE_REASON: usize = 123;

/// `reason` cut to fit a close frame, at a character boundary, marked with `…` when cut.
fn close_reason(reason: &str) -> String {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason.to_owned();
    }
    let mut end = MAX_CLOSE_REASON - '…'.len_utf8();
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &reason[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_close_frame() {
        assert_eq!(close_reason("log unavailable"), "log unavailable");
        let long = "é".repeat(100);
        let cut = close_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON, "{} bytes", cut.len());
        assert!(cut.ends_with('…'), "{cut}");
        assert!(long.starts_with(cut.trim_end_matches('…')));
    }
}
