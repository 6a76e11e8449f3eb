#![warn(missing_docs)]
//! The event log port: a Kafka-shaped, durable, partitioned log that every DisTorch service
//! talks through (commands, events, task queues, replies, definitions), and its backends.
//!
//! This crate owns the [`EventLog`] contract and its implementations; it knows nothing of
//! workflows (payloads are opaque bytes). Entry points: [`EventLog`], [`Consumer`],
//! [`sqlite::SqliteLog`], `kafka::KafkaLog` (cargo feature `kafka`), [`partition_for`], the
//! [`conformance`] suite every backend runs, and [`rpc`], the request/reply client over any
//! backend (commands out, answers back on a replies topic).
//!
//! # Contract (every backend MUST honour it)
//! - Topics have a fixed number of partitions. A record with key `k` goes to partition
//!   [`partition_for`]`(k, n)` (Kafka's Java-client murmur2 partitioner), so all records of a
//!   key are totally ordered.
//! - Offsets within a partition start at 0 and grow by one per record, without gaps.
//! - [`EventLog::append`] returns only once every record of the batch is durable (on disk,
//!   fsynced, or acknowledged by the broker's in-sync replicas); the returned positions are in
//!   input order. Records of one key keep their order within a batch. A batch MAY be written
//!   atomically (the embedded log does); callers MUST NOT rely on it.
//! - A [`Consumer`] belongs to a group. It receives the records of its assigned partitions in
//!   offset order, starting after the group's committed offset (or at the beginning when
//!   nothing is committed). A record is delivered at least once: after a crash, everything
//!   after the last commit is delivered again. Commits are durable when `commit` returns.
//! - [`Consumer::poll`] SHOULD wake as soon as new records arrive (long-poll), and returns an
//!   empty batch when `wait` elapses.
//! - A failed [`EventLog::append`] MAY have stored some of its records; a caller that retries
//!   it may store them twice (delivery is at least once; consumers deduplicate by id).
//!
//! # Groups with several members (distributed backends)
//! - The partitions of a group's topics are shared among its members, and the share MAY
//!   change during any [`Consumer::poll`] as members join and leave. [`Consumer::assignment`]
//!   is the share as of the last `poll`; a new member's starts empty and fills in during its
//!   first polls. Callers that keep per-partition state MUST compare it after each `poll`.
//! - A partition that (re)joins a member's share resumes after the group's committed offset:
//!   records that any member polled but did not commit are delivered again.
//! - `poll` MUST NOT return records of a partition that is no longer in the share.
//! - A `commit` of a partition no longer in the member's share, or one the group rejects
//!   because it rebalanced meanwhile, MAY be dropped (its records are then delivered again,
//!   never lost); `commit` still returns `Ok`.
//! - Transient broker trouble is retried inside `poll`; an error from it means the member
//!   cannot go on.
//!
//! # Fenced topics
//! A topic whose partitions each have one writer (the engine's events) is read through
//! [`fence::FencedLog`]: in such a partition, a record stamped with an ownership epoch lower
//! than that of a marker before it was written by an owner that had lost the partition
//! without noticing, and no reader sees it. The rule is the same for every backend (it only
//! needs headers and ordered offsets) and is part of the conformance suite.

#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
pub mod fence;
pub mod journal;
#[cfg(feature = "kafka")]
pub mod kafka;
mod local;
pub mod offsets;
mod partitioner;
pub mod rpc;
pub mod sqlite;

pub use local::LocalLog;
pub use partitioner::{murmur2, partition_for};

use async_trait::async_trait;
use std::time::Duration;

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// Topic to append to; it must already exist.
    pub topic: String,
    /// Partitioning key; also delivered with the record.
    pub key: String,
    /// Name/value pairs delivered with the record, in order; names may repeat.
    pub headers: Vec<(String, String)>,
    /// The record's body, opaque to the log.
    pub payload: Vec<u8>,
}

impl NewRecord {
    /// A record without headers.
    pub fn new(topic: impl Into<String>, key: impl Into<String>, payload: Vec<u8>) -> Self {
        Self {
            topic: topic.into(),
            key: key.into(),
            headers: Vec::new(),
            payload,
        }
    }
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Topic the record was appended to.
    pub topic: String,
    /// Partition of the topic it landed in ([`partition_for`] of its key).
    pub partition: u32,
    /// Its offset within the partition: 0 for the first record, one more for each next.
    pub offset: u64,
    /// The partitioning key it was appended with.
    pub key: String,
    /// The headers it was appended with, in their original order.
    pub headers: Vec<(String, String)>,
    /// The body it was appended with, byte for byte.
    pub payload: Vec<u8>,
    /// Append time, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// Partition of the record's topic.
    pub partition: u32,
    /// Offset of the record within that partition.
    pub offset: u64,
}

/// Why an [`EventLog`] or [`Consumer`] call failed; only [`LogError::Storage`] is worth
/// retrying (see [`LogError::is_retryable`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// The named topic does not exist on this log (it was never created).
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// A call named a partition at or past the topic's partition count.
    #[error("topic {topic:?} has {partitions} partitions; partition {partition} does not exist")]
    UnknownPartition {
        /// The topic asked about.
        topic: String,
        /// How many partitions the topic has (valid ones are `0..partitions`).
        partitions: u32,
        /// The partition asked for.
        partition: u32,
    },
    /// [`EventLog::create_topic`] found the topic already there with another partition count.
    #[error("topic {topic:?} already exists with {existing} partitions, not {requested}")]
    PartitionMismatch {
        /// The topic being created.
        topic: String,
        /// Its partition count as it exists.
        existing: u32,
        /// The partition count the caller asked for.
        requested: u32,
    },
    /// A request the log can never satisfy as given (e.g. a topic with 0 partitions).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The log or consumer was shut down (its writer task or connection is gone) before or
    /// while serving the call; nothing will succeed on it any more.
    #[error("the log is closed")]
    Closed,
    /// The storage or broker failed in a way that may pass (I/O, a broker unreachable or
    /// moving a partition): retryable.
    #[error("storage error: {0}")]
    Storage(String),
    /// The backend refused the request in a way no retry fixes (credentials, permissions, a
    /// broker too old for the request, a record too large).
    #[error("backend refused the request: {0}")]
    Fatal(String),
}

impl LogError {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, LogError::Storage(_))
    }
}

/// The result of every event log call.
pub type Result<T> = std::result::Result<T, LogError>;

/// A durable, partitioned log of records: the port every backend implements (see the crate
/// contract).
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Creates the topic if missing. Idempotent; an existing topic with another partition
    /// count is an error.
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<()>;

    /// Number of partitions of an existing topic.
    async fn partitions(&self, topic: &str) -> Result<u32>;

    /// Appends a batch durably (see the crate contract). Topics MUST exist.
    async fn append(&self, records: Vec<NewRecord>) -> Result<Vec<Position>>;

    /// The offset the next appended record of this partition will get.
    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64>;

    /// Reads up to `max` records of one partition starting at `from`, waiting up to `wait`
    /// for the first one when there is none yet. For replays and for readers that track
    /// their own position (engine recovery, reply and subscription feeds).
    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Record>>;

    /// [`EventLog::read`], plus the offset after the last record it looked at. On a plain log
    /// that is the offset after the last record returned (or `from`); on a
    /// [`fence::FencedLog`] it also passes the records a reader must not see (markers, a
    /// fenced owner's records), so that a reader that goes on from it, or compares it with
    /// the end offset, knows how far it got even when nothing was returned.
    async fn read_through(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<(Vec<Record>, u64)> {
        let records = self.read(topic, partition, from, max, wait).await?;
        let next = records.last().map_or(from, |r| r.offset + 1);
        Ok((records, next))
    }

    /// Joins `group` for `topics`. The embedded log assigns every partition of the topics to
    /// the one member; a distributed backend assigns a share and rebalances.
    async fn consumer(&self, group: &str, topics: &[String]) -> Result<Box<dyn Consumer>>;

    /// The committed next-offset of `group` on a partition, if any.
    async fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<Option<u64>>;
}

/// One member of a consumer group: polls the records of its assigned partitions and commits
/// how far the group got (see the crate contract).
#[async_trait]
pub trait Consumer: Send {
    /// Up to `max` records from the assigned partitions, each partition in offset order.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>>;

    /// Durably records, for each `(topic, partition)`, the offset of the next record to
    /// deliver to this group (the last processed offset + 1). Partitions no longer assigned
    /// to this member may be skipped (see the crate docs on groups).
    async fn commit(&mut self, offsets: &[(String, u32, u64)]) -> Result<()>;

    /// The partitions assigned to this member as of the last `poll`.
    fn assignment(&self) -> Vec<(String, u32)>;

    /// How many times the group has handed this member an assignment, as of the last
    /// `poll`: it moves at every rebalance, even one that hands back the same partitions
    /// (which [`Consumer::assignment`] alone cannot show). A member of a group that never
    /// rebalances (the embedded log's) stays at 0, the default.
    fn rebalances(&self) -> u64 {
        0
    }

    /// Asks a member of a group that handles every record it polls promptly (and so commits
    /// steadily) to guard against brokers that never hand a dead member's partitions on: when
    /// a partition it does not own has records waiting behind a committed offset that stood
    /// still for longer than `after`, the member leaves and rejoins the group during a `poll`,
    /// which makes the broker rebalance. Its assignment then changes like in any rebalance.
    /// A group whose members hold records for long (a task queue waiting for workers) must
    /// not ask: its quiet partitions would look orphaned. Backends whose groups always
    /// rebalance, or have one member, ignore it (the default).
    fn rejoin_when_orphaned(&mut self, after: Duration) {
        let _ = after;
    }
}
