//! The embedded event log: one SQLite file, same contract as Kafka.
//!
//! Layout of the implementation:
//! - `writer`: one OS thread owns the only write connection and group-commits every queued
//!   mutation in one transaction (one fsync), assigning offsets from memory;
//! - `reader`: a pool of read connections used on blocking threads (WAL readers never wait
//!   for the writer);
//! - `topic`: per-topic end offsets (atomics published after commit) and long-poll wake-ups;
//! - `consumer`: consumer-group members with in-memory positions and durable commits.
//!
//! Durability: WAL with `synchronous=FULL`, and a caller is answered only after `COMMIT`
//! returned, so an acknowledged append or commit survives `kill -9` and power loss.
//!
//! One process at a time: the writer assigns offsets from memory, so a second writer on the
//! same file would collide. [`SqliteLog::open`] takes an exclusive lock on `<path>.lock`
//! and fails clearly instead.

mod consumer;
mod reader;
mod schema;
mod topic;
mod writer;

use async_trait::async_trait;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::{Consumer, EventLog, LogError, NewRecord, Position, Record, Result};
use consumer::SqliteConsumer;
use reader::{ReadPool, Source, group_offset, read_records};
use topic::Topics;
use writer::{Op, Writer};

/// The embedded, durable [`EventLog`] backed by one SQLite database file.
///
/// Cheap to share: wrap it in an `Arc` (it is usable as `Arc<dyn EventLog>`). Dropping the
/// last handle (including consumers, which keep the log alive) stops the writer thread after
/// it finished the group in flight, and releases the file.
#[derive(Debug)]
pub struct SqliteLog {
    inner: Arc<Inner>,
}

/// Shared by the log handle and its consumers.
#[derive(Debug)]
struct Inner {
    topics: Arc<Topics>,
    readers: Arc<ReadPool>,
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
        // "dropped" mean "closed", so the file can be reopened right away. Nothing can be in
        // flight here: every in-flight call holds a reference to the log.
        self.tx.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("event log writer thread panicked");
        }
    }
}

impl SqliteLog {
    /// Opens (creating if missing) the log stored at `path`.
    ///
    /// Blocking: it opens the file, creates the schema and loads every partition's end
    /// offset (one index seek each). Call it at startup, or from `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let lock = lock_file(path)?;
        let mut conn = schema::open_connection(path)?;
        schema::create_schema(&mut conn)?;
        let loaded: Vec<_> = schema::load_topics(&conn)?
            .into_iter()
            .map(Arc::new)
            .collect();
        let topics = Arc::new(Topics::default());
        for topic in &loaded {
            topics.insert(Arc::clone(topic));
        }

        let (tx, rx) = mpsc::channel();
        let writer = Writer::new(conn, Arc::clone(&topics), loaded);
        let thread = std::thread::Builder::new()
            .name("eventlog-writer".to_owned())
            .spawn(move || writer.run(rx))
            .map_err(|e| LogError::Storage(format!("starting the writer thread: {e}")))?;

        Ok(Self {
            inner: Arc::new(Inner {
                topics,
                readers: Arc::new(ReadPool::new(path.to_path_buf())),
                writer: WriterHandle {
                    tx: Some(tx),
                    thread: Some(thread),
                },
                _lock: lock,
            }),
        })
    }
}

/// Takes the exclusive process lock next to the database (released by the OS if the process
/// dies, so a crash never leaves the log locked).
fn lock_file(path: &Path) -> Result<File> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| LogError::Storage(format!("opening {}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(LogError::Storage(format!(
            "the event log {} is already open (by another process or SqliteLog)",
            path.display()
        ))),
        Err(TryLockError::Error(e)) => Err(LogError::Storage(format!(
            "locking {}: {e}",
            lock_path.display()
        ))),
    }
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
}

/// `now + wait`, saturating: callers may pass `Duration::MAX` to mean "forever".
fn deadline(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}

#[async_trait]
impl EventLog for SqliteLog {
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
            .readers
            .run(move |conn| read_records(conn, &source, from, max))
            .await
    }

    async fn consumer(&self, group: &str, topics: &[String]) -> Result<Box<dyn Consumer>> {
        let consumer = SqliteConsumer::join(Arc::clone(&self.inner), group, topics).await?;
        Ok(Box::new(consumer))
    }

    async fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<Option<u64>> {
        let topic = self.inner.topics.get(topic)?;
        topic.check_partition(partition)?;
        let source = Source::new(&topic, partition);
        let group = group.to_owned();
        self.inner
            .readers
            .run(move |conn| group_offset(conn, &group, &source))
            .await
    }
}
