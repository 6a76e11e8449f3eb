//! The live feed of workflow events that GraphQL subscriptions, WebSockets and SSE serve.
//!
//! # Shape
//! One shared tail reader per partition of the events topic long-polls the log
//! ([`EventLog::read`]) and fans each batch out through a `tokio::sync::broadcast` channel,
//! so a thousand subscribers cost one log reader per partition, not a thousand. A reader
//! starts with its first subscriber and stops when the last one has gone.
//!
//! # Every event once, in order, resumable
//! - Offsets: each broadcast batch says which offsets it covers. A subscriber (`cursor.rs`)
//!   tracks the next offset it needs; whenever a batch starts past it (the subscriber
//!   lagged and the channel dropped batches, or it asked to start earlier than the tail),
//!   it reads the missing range from the log itself before taking the batch. A slow
//!   subscriber therefore never loses events silently, and never slows the others down.
//! - Per run ([`Feed::run_events`]): a run's events are in one partition, numbered 1, 2, 3...
//!   without gaps. The subscriber first notes the projector's committed offset `C` of that
//!   partition, then reads the run's history from the read store (which holds every event
//!   before `C`, because the projector commits only after the store has them), then follows
//!   the partition from `C`. Events already delivered (by seq) are dropped, so the join
//!   has neither a gap nor a duplicate, and a client that reconnects with the last seq it
//!   saw (`after_seq`) continues exactly after it. Should a seq gap still show (a projector
//!   with another group name), the missing events are taken from the store once it has them.
//! - Across runs ([`Feed::all_events`]): positions are the next offset of every partition
//!   ([`Position`]), so a resumed stream continues each partition where it stopped.

mod cursor;
mod position;
mod stream;

pub use position::Position;
pub use stream::{EventStream, TaskUpdate};

use crate::bus::ensure_topic;
use crate::error::ApiError;
use distorch_domain::event::EventEnvelope;
use distorch_eventlog::{EventLog, Record};
use distorch_store::ReadStore;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// Batches a partition's channel keeps for subscribers that fall behind; beyond it they
/// catch up from the log.
const TAIL_CAPACITY: usize = 64;
/// Records per log read.
const READ_MAX: usize = 512;
/// Long-poll wait of a tail reader; bounds how long an idle reader outlives its subscribers.
const TAIL_WAIT: Duration = Duration::from_secs(5);
/// Pause after a failed log read.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Consecutive records of one partition, `from..next`, decoded (undecodable ones skipped).
#[derive(Debug)]
pub(crate) struct Batch {
    from: u64,
    next: u64,
    events: Vec<FeedEvent>,
}

/// One event with where it sits in the log.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    /// Partition of the events topic it was read from.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
    /// The decoded event, shared by every subscriber that receives it.
    pub envelope: Arc<EventEnvelope>,
}

/// A running tail reader of one partition.
struct Tail {
    tx: broadcast::Sender<Arc<Batch>>,
    /// The offset its next batch starts at. Sends and subscriptions happen under the slot's
    /// lock, so a new receiver gets every batch from this offset on, and nothing before.
    next: u64,
}

type Slot = Arc<Mutex<Option<Tail>>>;

/// Subscriptions to the events topic. Cheap to clone.
#[derive(Clone)]
pub struct Feed {
    inner: Arc<Inner>,
}

struct Inner {
    log: Arc<dyn EventLog>,
    store: Arc<dyn ReadStore>,
    topic: String,
    /// Consumer group of the projector that fills `store`: its committed offsets say which
    /// events the store is sure to have.
    projector_group: String,
    tails: Vec<Slot>,
}

impl Feed {
    /// Creates the events topic if missing (with `partitions`) and learns its real size.
    pub async fn start(
        log: Arc<dyn EventLog>,
        store: Arc<dyn ReadStore>,
        topic: String,
        partitions: u32,
        projector_group: String,
    ) -> Result<Self, ApiError> {
        ensure_topic(log.as_ref(), &topic, partitions).await?;
        let partitions = log.partitions(&topic).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                log,
                store,
                topic,
                projector_group,
                tails: (0..partitions).map(|_| Slot::default()).collect(),
            }),
        })
    }

    /// Partitions of the events topic.
    pub fn partitions(&self) -> u32 {
        self.inner.tails.len() as u32
    }

    /// A receiver of the partition's batches and the offset its first batch will start
    /// at, starting the partition's tail reader at the log's end if none runs.
    async fn subscribe(
        &self,
        partition: u32,
    ) -> Result<(broadcast::Receiver<Arc<Batch>>, u64), ApiError> {
        let slot = &self.inner.tails[partition as usize];
        if let Some(joined) = join(slot) {
            return Ok(joined);
        }
        let end = self.end_offset(partition).await?;
        let mut guard = lock(slot);
        // Another subscriber may have started one meanwhile.
        if let Some(tail) = guard.as_ref() {
            return Ok((tail.tx.subscribe(), tail.next));
        }
        let (tx, rx) = broadcast::channel(TAIL_CAPACITY);
        *guard = Some(Tail {
            tx: tx.clone(),
            next: end,
        });
        let reader = TailReader {
            log: self.inner.log.clone(),
            topic: self.inner.topic.clone(),
            partition,
            slot: slot.clone(),
            tx,
        };
        tokio::spawn(reader.run(end));
        Ok((rx, end))
    }

    /// Reads up to `max` records of a partition from `from` without waiting; returns them
    /// decoded with the offset after the last one read (`None`: nothing there).
    async fn read(
        &self,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<(Vec<FeedEvent>, Option<u64>), ApiError> {
        let records = self
            .inner
            .log
            .read(&self.inner.topic, partition, from, max, Duration::ZERO)
            .await?;
        let next = records.last().map(|r| r.offset + 1);
        Ok((decode(records), next))
    }

    async fn end_offset(&self, partition: u32) -> Result<u64, ApiError> {
        Ok(self
            .inner
            .log
            .end_offset(&self.inner.topic, partition)
            .await?)
    }
}

/// The one reader of a partition's tail.
struct TailReader {
    log: Arc<dyn EventLog>,
    topic: String,
    partition: u32,
    slot: Slot,
    tx: broadcast::Sender<Arc<Batch>>,
}

impl TailReader {
    async fn run(self, mut next: u64) {
        loop {
            match self
                .log
                .read(&self.topic, self.partition, next, READ_MAX, TAIL_WAIT)
                .await
            {
                Ok(records) => {
                    let from = next;
                    next = records.last().map_or(next, |r| r.offset + 1);
                    let events = decode(records);
                    if !self.publish(from, next, events) {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "feed: reading the log failed; retrying");
                    if !self.publish(next, next, Vec::new()) {
                        return;
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// Sends a batch (if it covers any offsets) and moves the tail on; false, after
    /// leaving the slot empty, when nobody listens any more.
    fn publish(&self, from: u64, next: u64, events: Vec<FeedEvent>) -> bool {
        let mut guard = lock(&self.slot);
        if self.tx.receiver_count() == 0 {
            *guard = None;
            return false;
        }
        if next > from {
            // Receivers exist, so this cannot fail.
            let _ = self.tx.send(Arc::new(Batch { from, next, events }));
        }
        if let Some(tail) = guard.as_mut() {
            tail.next = next;
        }
        true
    }
}

fn lock(slot: &Slot) -> std::sync::MutexGuard<'_, Option<Tail>> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

/// Joins the partition's running tail, if any.
fn join(slot: &Slot) -> Option<(broadcast::Receiver<Arc<Batch>>, u64)> {
    lock(slot)
        .as_ref()
        .map(|tail| (tail.tx.subscribe(), tail.next))
}

fn decode(records: Vec<Record>) -> Vec<FeedEvent> {
    records
        .into_iter()
        .filter_map(|r| match serde_json::from_slice::<EventEnvelope>(&r.payload) {
            Ok(envelope) => Some(FeedEvent {
                partition: r.partition,
                offset: r.offset,
                envelope: Arc::new(envelope),
            }),
            Err(e) => {
                tracing::warn!(partition = r.partition, offset = r.offset, error = %e, "feed: skipping an undecodable event");
                None
            }
        })
        .collect()
}
