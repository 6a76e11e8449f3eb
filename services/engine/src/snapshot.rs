//! Partition snapshots: the state of every run of one partition, so that a new owner
//! restores it and replays only the events written after it, instead of the partition's
//! whole history.
//!
//! Layout. Snapshots of commands partition `p` go to partition `p` of the snapshots topic.
//! A snapshot is one append of one or more chunk records (a broker caps record size, and a
//! partition may hold many runs); every chunk names the snapshot, its index and the count.
//! A snapshot is complete when its last chunk is in the log and the `count - 1` records
//! before it are its other chunks. A writer that dies mid-append leaves a torn tail; every
//! chunk carries the offset of the last chunk of the previous complete snapshot (`prev`),
//! so a reader steps back over a torn one.
//!
//! A snapshot taken when the partition's events end at offset `E` holds exactly the fold of
//! the events before `E`; restoring it and folding the events from `E` on gives the state a
//! full replay gives. Snapshots are an optimisation: any of them is a correct start, and with
//! none the owner replays from offset 0.

use distorch_domain::WorkflowId;
use distorch_domain::workflow::{Status, WorkflowSnapshot};
use distorch_eventlog::fence::{Epoch, outranked};
use distorch_eventlog::{EventLog, NewRecord};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::EngineError;

/// Chunks stay well under Kafka's default 1 MiB record limit.
const CHUNK_BYTES: usize = 256 * 1024;

/// A run that has ended: all a partition owner keeps of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedRun {
    /// The run's id.
    pub id: WorkflowId,
    /// The terminal status it ended in.
    pub status: Status,
    /// Sequence number of its last event.
    pub last_seq: u64,
}

/// One partition's state as of `events_offset`.
#[derive(Debug, Default)]
pub struct Image {
    /// Next offset of the events partition not folded into this image.
    pub events_offset: u64,
    /// Offset of the snapshot's last chunk in the snapshots partition.
    pub last_chunk: u64,
    /// The full state of every run still going, as of `events_offset`.
    pub runs: Vec<WorkflowSnapshot>,
    /// What is kept of every run that had ended by then.
    pub ended: Vec<EndedRun>,
}

#[derive(Serialize, Deserialize)]
struct Chunk<R> {
    snapshot: String,
    partition: u32,
    index: u32,
    count: u32,
    events_offset: u64,
    /// Offset of the last chunk of the previous complete snapshot, if any.
    prev: Option<u64>,
    /// The ownership epoch of the events partition its writer held (absent in snapshots
    /// written before fencing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epoch: Option<String>,
    runs: Vec<R>,
    ended: Vec<EndedRun>,
}

/// Where a snapshot goes and what it covers.
pub struct Header<'a> {
    /// The snapshots topic.
    pub topic: &'a str,
    /// A key that lands on `partition` (`distorch_eventlog::fence::key_for_partition`).
    pub key: &'a str,
    /// The commands partition the snapshot is of, which is also the snapshots partition it
    /// goes to; recorded in every chunk.
    pub partition: u32,
    /// Unique per snapshot of a partition.
    pub id: &'a str,
    /// Next offset of the events partition not folded into the snapshot: the owner that
    /// restores it replays from there.
    pub events_offset: u64,
    /// Offset of the last chunk of the previous complete snapshot.
    pub prev: Option<u64>,
    /// The epoch under which its writer owns the events partition.
    pub epoch: Option<&'a Epoch>,
}

/// Splits a partition's image into chunk records. `runs` are the serialised run snapshots.
pub fn records(h: &Header<'_>, runs: Vec<Box<RawValue>>, ended: Vec<EndedRun>) -> Vec<NewRecord> {
    let mut chunks: Vec<(Vec<Box<RawValue>>, Vec<EndedRun>)> = Vec::new();
    let mut current = (Vec::new(), Vec::new());
    let mut size = 0;
    for run in runs {
        size += run.get().len();
        current.0.push(run);
        if size >= CHUNK_BYTES {
            chunks.push(std::mem::take(&mut current));
            size = 0;
        }
    }
    // An ended run is ~100 bytes of JSON.
    for e in ended {
        size += 100;
        current.1.push(e);
        if size >= CHUNK_BYTES {
            chunks.push(std::mem::take(&mut current));
            size = 0;
        }
    }
    if !current.0.is_empty() || !current.1.is_empty() || chunks.is_empty() {
        chunks.push(current);
    }
    let count = chunks.len() as u32;
    chunks
        .into_iter()
        .enumerate()
        .map(|(index, (runs, ended))| {
            let chunk = Chunk {
                snapshot: h.id.to_string(),
                partition: h.partition,
                index: index as u32,
                count,
                events_offset: h.events_offset,
                prev: h.prev,
                epoch: h.epoch.map(ToString::to_string),
                runs,
                ended,
            };
            let payload = serde_json::to_vec(&chunk).expect("snapshot chunks serialise");
            NewRecord::new(h.topic, h.key, payload)
        })
        .collect()
}

/// The latest complete, current snapshot in `partition` of the snapshots topic, if any.
/// `in_force(e)` is the epoch in force at offset `e` of the events partition: a snapshot
/// covering the events before `e` written under an older epoch was written by an owner that
/// had been fenced, and may hold its ignored events.
pub async fn latest(
    log: &dyn EventLog,
    topic: &str,
    partition: u32,
    in_force: impl Fn(u64) -> Option<Epoch>,
) -> Result<Option<Image>, EngineError> {
    let end = log.end_offset(topic, partition).await?;
    let mut last = end.checked_sub(1);
    while let Some(at) = last {
        let tail: Chunk<WorkflowSnapshot> = read_one(log, topic, partition, at).await?;
        let prev = tail.prev;
        let written_under = tail.epoch.as_deref().and_then(|e| e.parse::<Epoch>().ok());
        if outranked(
            written_under.as_ref(),
            in_force(tail.events_offset).as_ref(),
        ) {
            tracing::warn!(
                partition,
                offset = at,
                "skipping a snapshot a fenced engine wrote"
            );
        } else if tail.index + 1 == tail.count
            && let Some(image) = assemble(log, topic, partition, at, tail).await?
        {
            return Ok(Some(image));
        } else {
            tracing::warn!(partition, offset = at, "skipping a torn engine snapshot");
        }
        // Step back to the snapshot before it.
        last = prev;
    }
    Ok(None)
}

/// The whole snapshot whose last chunk, at `at`, is `tail`; `None` if a chunk is missing.
async fn assemble(
    log: &dyn EventLog,
    topic: &str,
    partition: u32,
    at: u64,
    tail: Chunk<WorkflowSnapshot>,
) -> Result<Option<Image>, EngineError> {
    let Some(first) = (at + 1).checked_sub(u64::from(tail.count)) else {
        return Ok(None);
    };
    let mut image = Image {
        events_offset: tail.events_offset,
        last_chunk: at,
        ..Image::default()
    };
    let mut next_index = 0;
    let mut from = first;
    while from < at {
        let batch = log
            .read(topic, partition, from, 64, std::time::Duration::ZERO)
            .await?;
        let Some(last) = batch.last() else {
            return Ok(None);
        };
        from = last.offset + 1;
        for rec in batch.iter().filter(|r| r.offset < at) {
            let chunk: Chunk<WorkflowSnapshot> = crate::decode(rec)?;
            if chunk.snapshot != tail.snapshot || chunk.index != next_index {
                return Ok(None);
            }
            next_index += 1;
            image.runs.extend(chunk.runs);
            image.ended.extend(chunk.ended);
        }
    }
    if next_index + 1 != tail.count {
        return Ok(None);
    }
    image.runs.extend(tail.runs);
    image.ended.extend(tail.ended);
    Ok(Some(image))
}

async fn read_one<T: serde::de::DeserializeOwned>(
    log: &dyn EventLog,
    topic: &str,
    partition: u32,
    at: u64,
) -> Result<T, EngineError> {
    let recs = log
        .read(topic, partition, at, 1, std::time::Duration::ZERO)
        .await?;
    let rec = recs
        .into_iter()
        .find(|r| r.offset == at)
        .ok_or_else(|| EngineError::Corrupt {
            topic: topic.to_string(),
            partition,
            offset: at,
            reason: "snapshot record missing below the end offset".into(),
        })?;
    crate::decode(&rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(partition: u32, events_offset: u64, prev: Option<u64>) -> Header<'static> {
        Header {
            topic: "t",
            key: "k",
            partition,
            id: "s",
            events_offset,
            prev,
            epoch: None,
        }
    }

    #[test]
    fn a_large_image_is_split_into_chunks_under_the_record_limit() {
        let run = RawValue::from_string(format!("{{\"pad\":\"{}\"}}", "x".repeat(10_000)))
            .expect("valid json");
        let runs = vec![run; 100];
        let ended = vec![
            EndedRun {
                id: WorkflowId::from_idempotency_key("d", "k"),
                status: Status::Completed,
                last_seq: 7,
            };
            5000
        ];
        let recs = records(&header(0, 42, Some(3)), runs, ended);
        assert!(recs.len() > 1, "1 MB of runs must not fit one chunk");
        for (i, r) in recs.iter().enumerate() {
            assert!(r.payload.len() < 1024 * 1024, "chunk {i} too large");
            let c: Chunk<serde_json::Value> = serde_json::from_slice(&r.payload).unwrap();
            assert_eq!((c.index, c.count), (i as u32, recs.len() as u32));
            assert_eq!((c.events_offset, c.prev), (42, Some(3)));
        }
        let total_runs: usize = recs
            .iter()
            .map(|r| {
                serde_json::from_slice::<Chunk<serde_json::Value>>(&r.payload)
                    .unwrap()
                    .runs
                    .len()
            })
            .sum();
        assert_eq!(total_runs, 100);
    }

    #[test]
    fn an_empty_partition_still_writes_one_chunk() {
        let recs = records(&header(2, 0, None), Vec::new(), Vec::new());
        assert_eq!(recs.len(), 1);
    }
}
