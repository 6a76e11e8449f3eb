//! What the two embedded logs share: one process owns the storage, one writer thread
//! group-commits every mutation, and the latest records of each partition are served from
//! memory. The storages differ only in how they put bytes on disk and get old ones back:
//! [`crate::journal`] appends checksummed frames to a file, [`crate::sqlite`] inserts rows.
//!
//! Layout:
//! - `writer`: one OS thread owns the [`StorageWriter`] and writes every queued mutation as
//!   one group (one sync), assigning offsets from memory;
//! - `topic`: per-topic end offsets (atomics published after the sync), the in-memory tails
//!   and the long-poll wake-ups;
//! - `consumer`: consumer-group members with in-memory positions and durable commits;
//! - the [`Storage`] reads records that left the tail and committed group offsets, on
//!   tokio's blocking threads.
//!
//! One process at a time: the writer assigns offsets from memory, so a second writer on the
//! same storage would collide. [`LocalLog::start`] takes an exclusive lock on `<path>.lock`
//! and fails clearly instead.

mod consumer;
pub(crate) mod headers;
pub(crate) mod topic;
mod writer;

use async_trait::async_trait;
use std::fs::File;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::{Consumer, EventLog, LogError, NewRecord, Position, Record, Result};
use consumer::LocalConsumer;
pub(crate) use topic::Topic;
use topic::Topics;
use writer::{Op, Writer};

/// The read side of an embedded log's storage. Blocking: called on tokio's blocking threads.
pub(crate) trait Storage: Send + Sync + std::fmt::Debug + 'static {
    /// Up to `max` committed records of one partition from offset `from`, in offset order.
    fn read(&self, source: &Source, from: u64, max: usize) -> Result<Vec<Record>>;

    /// The committed next-offset of `group` on a partition, if any.
    fn group_offset(&self, group: &str, source: &Source) -> Result<Option<u64>>;
}

/// The write side, owned by the writer thread. A group is `begin`, any number of mutations,
/// then `commit` (durable when it returns) or, after any error, `abort`.
pub(crate) trait StorageWriter: Send + 'static {
    fn begin(&mut self) -> Result<()>;
    /// Stores a new topic and returns its id (unique within the storage).
    fn create_topic(&mut self, name: &str, partitions: u32) -> Result<i64>;
    fn append(
        &mut self,
        topic_id: i64,
        partition: u32,
        offset: u64,
        record: &NewRecord,
        now_ms: i64,
    ) -> Result<()>;
    fn commit_offset(
        &mut self,
        group: &str,
        topic_id: i64,
        partition: u32,
        next: u64,
    ) -> Result<()>;
    fn commit(&mut self) -> Result<()>;
    /// Drops what the group wrote, as far as the storage can.
    fn abort(&mut self);
    /// Every topic with its end offsets as stored, to resynchronise after a failed group.
    fn reload(&mut self) -> Result<Vec<Topic>>;
}

/// An embedded, durable [`EventLog`]; `B` names the storage it was opened on
/// ([`crate::sqlite::SqliteLog`], [`crate::journal::JournalLog`]).
///
/// Cheap to share: wrap it in an `Arc` (it is usable as `Arc<dyn EventLog>`). Dropping the
/// last handle (including consumers, which keep the log alive) stops the writer thread after
/// it finished the group in flight, and releases the storage.
#[derive(Debug)]
pub struct LocalLog<B> {
    inner: Arc<Inner>,
    backend: PhantomData<fn() -> B>,
}

/// Shared by the log handle and its consumers.
#[derive(Debug)]
struct Inner {
    topics: Arc<Topics>,
    storage: Arc<dyn Storage>,
    writer: WriterHandle,
    /// Held for the lifetime of the log; declared last so it is released after the writer
    /// thread has stopped.
    _lock: File,
}

#[derive(Debug)]
struct WriterHandle {
    tx: Option<mpsc::Sender<Op>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        // Closing the channel lets the writer drain what is queued and exit; joining makes
        // "dropped" mean "closed", so the storage can be reopened right away. Nothing can be
        // in flight here: every in-flight call holds a reference to the log.
        self.tx.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("event log writer thread panicked");
        }
    }
}

/// Where a read or write goes: a topic's id and name, and a partition.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub(crate) topic_id: i64,
    pub(crate) topic: String,
    pub(crate) partition: u32,
}

impl Source {
    pub(crate) fn new(topic: &Topic, partition: u32) -> Self {
        Self {
            topic_id: topic.id,
            topic: topic.name.clone(),
            partition,
        }
    }
}

impl<B> LocalLog<B> {
    /// Starts the writer thread over storage that is already open and recovered, with
    /// `topics` as stored. `lock` is the exclusive lock from [`lock_file`].
    pub(crate) fn start<W: StorageWriter>(
        lock: File,
        storage: Arc<dyn Storage>,
        writer: W,
        loaded: Vec<Topic>,
    ) -> Result<Self> {
        let loaded: Vec<_> = loaded.into_iter().map(Arc::new).collect();
        let topics = Arc::new(Topics::default());
        for topic in &loaded {
            topics.insert(Arc::clone(topic));
        }
        let (tx, rx) = mpsc::channel();
        let writer = Writer::new(writer, Arc::clone(&topics), loaded);
        let thread = std::thread::Builder::new()
            .name("eventlog-writer".to_owned())
            .spawn(move || writer.run(rx))
            .map_err(|e| LogError::Storage(format!("starting the writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                topics,
                storage,
                writer: WriterHandle {
                    tx: Some(tx),
                    thread: Some(thread),
                },
                _lock: lock,
            }),
            backend: PhantomData,
        })
    }
}

/// Takes the exclusive process lock next to the storage at `path` (released by the OS if the
/// process dies, so a crash never leaves the log locked).
pub(crate) fn lock_file(path: &Path) -> Result<File> {
    distorch_embedded::lock_file(path, true).map_err(|e| match e {
        distorch_embedded::LockError::InUse => LogError::Storage(format!(
            "the event log {} is already open (by another process or log handle)",
            path.display()
        )),
        distorch_embedded::LockError::Io { lock_path, error } => {
            LogError::Storage(format!("locking {}: {error}", lock_path.display()))
        }
    })
}

impl Inner {
    /// Hands an op to the writer and waits for its post-commit answer.
    async fn submit<T>(&self, op: impl FnOnce(oneshot::Sender<Result<T>>) -> Op) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .tx
            .as_ref()
            .ok_or(LogError::Closed)?
            .send(op(reply))
            .map_err(|_| LogError::Closed)?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    /// Runs a blocking storage call on tokio's blocking threads.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Storage) -> Result<T> + Send + 'static,
    {
        let storage = Arc::clone(&self.storage);
        tokio::task::spawn_blocking(move || f(storage.as_ref()))
            .await
            .map_err(|e| LogError::Storage(format!("read task failed: {e}")))?
    }
}

/// `now + wait`, saturating: callers may pass `Duration::MAX` to mean "forever".
fn deadline(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}

#[async_trait]
impl<B: 'static> EventLog for LocalLog<B> {
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        if partitions == 0 {
            return Err(LogError::Invalid(format!(
                "topic {topic:?} needs at least one partition"
            )));
        }
        let name = topic.to_owned();
        self.inner
            .submit(|reply| Op::CreateTopic {
                name,
                partitions,
                reply,
            })
            .await
    }

    async fn partitions(&self, topic: &str) -> Result<u32> {
        Ok(self.inner.topics.get(topic)?.partitions())
    }

    async fn append(&self, records: Vec<NewRecord>) -> Result<Vec<Position>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        self.inner
            .submit(|reply| Op::Append { records, reply })
            .await
    }

    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        self.inner.topics.get(topic)?.end(partition)
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Record>> {
        let topic = self.inner.topics.get(topic)?;
        if topic.end(partition)? <= from {
            if max == 0 {
                return Ok(Vec::new());
            }
            let wake = Arc::new(Notify::new());
            topic.subscribe(&wake);
            let deadline = deadline(wait);
            while topic.end(partition)? <= from {
                if tokio::time::timeout_at(deadline, wake.notified())
                    .await
                    .is_err()
                {
                    return Ok(Vec::new());
                }
            }
        }
        if max == 0 {
            return Ok(Vec::new());
        }
        if let Some(records) = topic.read_tail(partition, from, max) {
            return Ok(records);
        }
        let source = Source::new(&topic, partition);
        self.inner
            .blocking(move |storage| storage.read(&source, from, max))
            .await
    }

    async fn consumer(&self, group: &str, topics: &[String]) -> Result<Box<dyn Consumer>> {
        let consumer = LocalConsumer::join(Arc::clone(&self.inner), group, topics).await?;
        Ok(Box::new(consumer))
    }

    async fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<Option<u64>> {
        let topic = self.inner.topics.get(topic)?;
        topic.check_partition(partition)?;
        let source = Source::new(&topic, partition);
        let group = group.to_owned();
        self.inner
            .blocking(move |storage| storage.group_offset(&group, &source))
            .await
    }
}
