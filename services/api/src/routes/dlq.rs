//! The commands dead-letter queue: records of the commands topic the engine could not apply
//! and could not answer (malformed JSON, a body that is no command, a start naming an
//! unregistered definition or an input failing its schema, published without `reply_to`).
//!
//! The DLQ topic itself is the source: the engine moves a record there unchanged, with a
//! `reason` and a `source` header, so this view reads the topic page by page instead of
//! keeping a copy in the read store.

use super::AppState;
use crate::error::ApiError;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use distorch_domain::view::rfc3339;
use distorch_eventlog::{EventLog, Record};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// `GET /api/v1/dlq/commands` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct DeadCommandsQuery {
    /// `next_cursor` of the previous page (the `id` of its last record); absent: from the
    /// oldest record.
    pub cursor: Option<String>,
    /// Records per page, 1 to 1000 (default 100).
    pub limit: Option<usize>,
}

/// `GET /api/v1/dlq/commands` body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadCommands {
    /// The records of this page, oldest first.
    pub items: Vec<DeadCommand>,
    /// Pass as `cursor` for the next page; absent when this page reached the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A command record moved to the DLQ, as it was published.
#[derive(Debug, Clone, Serialize, ToSchema, async_graphql::SimpleObject)]
pub struct DeadCommand {
    /// Its place in the DLQ topic, `partition:offset`.
    pub id: String,
    /// Why the engine could not apply it, e.g. `malformed command: missing field `type``
    /// or `start_workflow names nothing known: definition "x" is not registered`.
    pub reason: String,
    /// Where it was read from: `topic[partition]@offset`; `null` when the record does not
    /// say.
    pub source: Option<String>,
    /// The record key it was published with.
    pub key: String,
    /// When it was moved to the DLQ (RFC 3339).
    pub dead_lettered_at: String,
    /// The record's body: its JSON when it parses, else the text (invalid UTF-8 replaced).
    pub payload: Value,
    /// Every header of the record, the publisher's included.
    pub headers: Vec<RecordHeader>,
}

/// One header of a log record.
#[derive(Debug, Clone, Serialize, ToSchema, async_graphql::SimpleObject)]
pub struct RecordHeader {
    /// Header name.
    pub name: String,
    /// Header value, as text.
    pub value: String,
}

/// Command records the engine moved to the dead-letter queue, oldest first, with the reason.
#[utoipa::path(
    get,
    path = "/api/v1/dlq/commands",
    tag = "ops",
    params(DeadCommandsQuery),
    responses(
        (status = 200, description = "Dead-lettered command records", body = DeadCommands),
        (status = 400, description = "Invalid cursor or limit", body = crate::problem::Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn dead_commands(
    State(state): State<AppState>,
    query: Result<Query<DeadCommandsQuery>, QueryRejection>,
) -> Result<Json<DeadCommands>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = match query.limit {
        None => DEFAULT_LIMIT,
        Some(n @ 1..=MAX_LIMIT) => n,
        Some(n) => {
            return Err(ApiError::BadRequest(format!(
                "limit must be between 1 and {MAX_LIMIT}, got {n}"
            )));
        }
    };
    let from = query.cursor.as_deref().map(dlq_cursor_after).transpose()?;
    Ok(Json(
        dlq_page(state.log.as_ref(), &state.dlq_topic, from, limit).await?,
    ))
}

/// The position after the record `id` (`partition:offset`, a record's `id`).
pub(crate) fn dlq_cursor_after(id: &str) -> Result<(u32, u64), ApiError> {
    id.split_once(':')
        .and_then(|(p, o)| Some((p.parse().ok()?, o.parse::<u64>().ok()?.checked_add(1)?)))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "cursor {id:?} is not the id of a dead-lettered command (partition:offset)"
            ))
        })
}

/// Up to `limit` records from `from` (partition, offset) on, partitions in order.
pub(crate) async fn dlq_page(
    log: &dyn EventLog,
    topic: &str,
    from: Option<(u32, u64)>,
    limit: usize,
) -> Result<DeadCommands, ApiError> {
    let partitions = log.partitions(topic).await?;
    let (mut partition, mut offset) = from.unwrap_or((0, 0));
    let mut items = Vec::new();
    while partition < partitions {
        let end = log.end_offset(topic, partition).await?;
        while offset < end && items.len() < limit {
            let records = log
                .read(
                    topic,
                    partition,
                    offset,
                    limit - items.len(),
                    Duration::ZERO,
                )
                .await?;
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            items.extend(records.iter().map(dead_command));
        }
        if items.len() == limit {
            let more = offset < end || partition + 1 < partitions;
            let next_cursor = more.then(|| items[limit - 1].id.clone());
            return Ok(DeadCommands { items, next_cursor });
        }
        partition += 1;
        offset = 0;
    }
    Ok(DeadCommands {
        items,
        next_cursor: None,
    })
}

fn dead_command(rec: &Record) -> DeadCommand {
    let header = |name: &str| {
        rec.headers
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    DeadCommand {
        id: format!("{}:{}", rec.partition, rec.offset),
        reason: header("reason").unwrap_or_else(|| "no reason recorded".into()),
        source: header("source"),
        key: rec.key.clone(),
        dead_lettered_at: rfc3339(rec.timestamp_ms),
        payload: serde_json::from_slice(&rec.payload)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&rec.payload).into_owned())),
        headers: rec
            .headers
            .iter()
            .map(|(name, value)| RecordHeader {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_continues_after_the_record_it_names() {
        assert_eq!(dlq_cursor_after("0:17").unwrap(), (0, 18));
        assert_eq!(dlq_cursor_after("3:0").unwrap(), (3, 1));
        for bad in ["", "17", "a:1", "0:-1", "0:1:2"] {
            let err = dlq_cursor_after(bad).unwrap_err().to_string();
            assert!(err.contains("partition:offset"), "{bad}: {err}");
        }
    }
}
