//! Request/reply over the log: requests go out through one batching writer, answers come
//! back on a replies topic keyed by the asker.
//!
//! This is the client side of DisTorch's command protocol, shared by the API's command bus
//! and by workers that take tasks straight from the log. A client appends requests whose
//! payload names it (a `reply_to` the handling service reads; this module never looks inside
//! payloads) and carries a correlation id. The service appends each answer to the replies
//! topic keyed by the asker's instance id, so every answer to one instance lands on partition
//! [`partition_for`]`(instance)`. [`Rpc`] reads that partition from its end as of
//! [`Rpc::start`], so no answer to a request sent through it is missed, and hands each answer
//! to the request waiting for its correlation id. The caller supplies the decoder.
//!
//! Appends go through one writer task that drains everything queued while the previous
//! append was in flight into the next one: concurrent callers share one append (one SQLite
//! transaction and fsync, one Kafka produce batch) without adding latency when idle.
//!
//! Contract:
//! - [`Rpc::request`] registers its waiters before appending, so an answer that arrives
//!   before the append returns is not lost.
//! - An `Err` from `request` or `append` means the append failed; like any failed
//!   [`EventLog::append`] it MAY have stored some records. Send them again with the same
//!   correlation ids: the handling service deduplicates by id and answers again.
//! - An answer for which nobody waits any more (the wait timed out or was dropped) is
//!   discarded. A caller that still needs it sends the request again with the same id.

use crate::{EventLog, LogError, NewRecord, Result, partition_for};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Records per log append; bounds the size of one group commit.
const MAX_BATCH_RECORDS: usize = 4096;
/// Appends waiting for the writer before callers are made to wait (backpressure).
const WRITE_QUEUE: usize = 1024;
/// Long-poll wait of the reply reader; only bounds how often it loops when idle.
const REPLY_WAIT: Duration = Duration::from_secs(5);
/// Pause after a failed read of the replies partition.
const READ_RETRY: Duration = Duration::from_millis(500);

/// Turns a reply record's payload into its correlation id and answer; an `Err` (its message)
/// makes the reader skip the record with a warning.
pub type Decoder<R> = fn(&[u8]) -> std::result::Result<(String, R), String>;

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unanswered {
    /// The deadline passed. The request is durable and may still be handled.
    #[error("no answer before the deadline; the request is durable and may still be handled")]
    Timeout,
    /// The reply reader stopped (the [`Rpc`] is shutting down).
    #[error("the reply reader stopped before the answer came")]
    Stopped,
}

/// Creates a topic if missing; an existing one with another partition count is accepted as
/// is, since whoever created it first chose the count from their own configuration.
pub async fn ensure_topic(log: &dyn EventLog, topic: &str, partitions: u32) -> Result<()> {
    match log.create_topic(topic, partitions).await {
        Ok(()) => Ok(()),
        Err(LogError::PartitionMismatch { existing, .. }) => {
            tracing::debug!(topic, existing, requested = partitions, "topic exists");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

type Waiters<R> = Mutex<HashMap<String, oneshot::Sender<R>>>;

struct WriteRequest {
    records: Vec<NewRecord>,
    done: oneshot::Sender<Result<()>>,
}

/// Sends requests and awaits their answers. Cheap to clone; the background tasks stop when
/// the last clone is dropped.
pub struct Rpc<R> {
    inner: Arc<Inner<R>>,
}

impl<R> Clone for Rpc<R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<R> std::fmt::Debug for Rpc<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc")
            .field("instance", &self.inner.instance)
            .finish_non_exhaustive()
    }
}

struct Inner<R> {
    instance: String,
    waiters: Arc<Waiters<R>>,
    writes: mpsc::Sender<WriteRequest>,
    ready: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl<R> Drop for Inner<R> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl<R: Send + 'static> Rpc<R> {
    /// Positions the reply reader at the current end of `instance`'s partition of
    /// `replies_topic` (which must exist) and starts it and the writer. The position is taken
    /// before this returns, so no answer to a request sent afterwards can be missed.
    ///
    /// `instance` MUST be unique among the topic's readers (a random UUID): it is the key the
    /// answers come back under.
    pub async fn start(
        log: Arc<dyn EventLog>,
        replies_topic: &str,
        instance: impl Into<String>,
        decode: Decoder<R>,
    ) -> Result<Self> {
        let instance = instance.into();
        let partition = partition_for(&instance, log.partitions(replies_topic).await?);
        let from = log.end_offset(replies_topic, partition).await?;

        let waiters: Arc<Waiters<R>> = Arc::default();
        let ready = Arc::new(AtomicBool::new(true));
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let reader = ReplyReader {
            log: log.clone(),
            topic: replies_topic.to_owned(),
            partition,
            instance: instance.clone(),
            waiters: waiters.clone(),
            ready: ready.clone(),
            decode,
        };
        let tasks = vec![
            tokio::spawn(reader.run(from)),
            tokio::spawn(write_loop(log, queue)),
        ];
        tracing::debug!(%instance, partition, topic = replies_topic, "reply reader started");
        Ok(Self {
            inner: Arc::new(Inner {
                instance,
                waiters,
                writes,
                ready,
                tasks,
            }),
        })
    }

    /// The key answers to this instance come back under (the `reply_to` to put in requests).
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Whether answers are being read: the last read of the replies partition succeeded and
    /// neither background task has stopped.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Relaxed)
            && self.inner.tasks.iter().all(|t| !t.is_finished())
    }

    /// Appends records (sharing the append with concurrent callers); returns once they are
    /// durable.
    pub async fn append(&self, records: Vec<NewRecord>) -> Result<()> {
        let (done, rx) = oneshot::channel();
        self.inner
            .writes
            .send(WriteRequest { records, done })
            .await
            .map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    /// Appends every request in one append and waits until `timeout` (one deadline for all)
    /// for the answer to each correlation id. The outer error means the append failed; the
    /// inner results are in request order.
    pub async fn request(
        &self,
        requests: Vec<(String, NewRecord)>,
        timeout: Duration,
    ) -> Result<Vec<std::result::Result<R, Unanswered>>> {
        let inner = &self.inner;
        let (ids, records): (Vec<String>, Vec<NewRecord>) = requests.into_iter().unzip();
        // Register before appending: the answer may arrive before `append` returns.
        let guard = PendingGuard {
            waiters: &inner.waiters,
            ids: &ids,
        };
        let receivers: Vec<_> = {
            let mut waiters = inner.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            ids.iter()
                .map(|id| {
                    let (tx, rx) = oneshot::channel();
                    waiters.insert(id.clone(), tx);
                    rx
                })
                .collect()
        };
        self.append(records).await?;

        let deadline = Instant::now() + timeout;
        let mut answers = Vec::with_capacity(receivers.len());
        for rx in receivers {
            answers.push(match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(_)) => Err(Unanswered::Stopped),
                Err(_) => Err(Unanswered::Timeout),
            });
        }
        drop(guard);
        Ok(answers)
    }
}

/// Removes a request's waiters however it ends (answered, timed out, or dropped), so
/// abandoned requests do not leak entries.
struct PendingGuard<'a, R> {
    waiters: &'a Waiters<R>,
    ids: &'a [String],
}

impl<R> Drop for PendingGuard<'_, R> {
    fn drop(&mut self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        for id in self.ids {
            waiters.remove(id);
        }
    }
}

async fn write_loop(log: Arc<dyn EventLog>, mut queue: mpsc::Receiver<WriteRequest>) {
    while let Some(first) = queue.recv().await {
        let mut records = first.records;
        let mut done = vec![first.done];
        while records.len() < MAX_BATCH_RECORDS {
            let Ok(next) = queue.try_recv() else { break };
            done.push(next.done);
            records.extend(next.records);
        }
        let result = log.append(records).await.map(drop);
        if let Err(e) = &result {
            tracing::warn!(error = %e, "request append failed");
        }
        for tx in done {
            let _ = tx.send(result.clone());
        }
    }
}

struct ReplyReader<R> {
    log: Arc<dyn EventLog>,
    topic: String,
    partition: u32,
    instance: String,
    waiters: Arc<Waiters<R>>,
    ready: Arc<AtomicBool>,
    decode: Decoder<R>,
}

impl<R> ReplyReader<R> {
    async fn run(self, mut from: u64) {
        loop {
            match self
                .log
                .read(&self.topic, self.partition, from, 1024, REPLY_WAIT)
                .await
            {
                Ok(records) => {
                    self.ready.store(true, Ordering::Relaxed);
                    for record in records {
                        from = record.offset + 1;
                        // The partition is shared with other instances.
                        if record.key != self.instance {
                            continue;
                        }
                        match (self.decode)(&record.payload) {
                            Ok((id, answer)) => self.complete(&id, answer),
                            Err(e) => tracing::warn!(
                                topic = %self.topic,
                                offset = record.offset,
                                error = %e,
                                "skipping undecodable reply"
                            ),
                        }
                    }
                }
                Err(e) => {
                    self.ready.store(false, Ordering::Relaxed);
                    tracing::warn!(topic = %self.topic, error = %e, "reading replies failed; retrying");
                    tokio::time::sleep(READ_RETRY).await;
                }
            }
        }
    }

    fn complete(&self, id: &str, answer: R) {
        let waiter = self
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        // No waiter: the request timed out or was dropped; see the module contract.
        if let Some(tx) = waiter {
            let _ = tx.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteLog;

    fn decode(payload: &[u8]) -> std::result::Result<(String, String), String> {
        let text = std::str::from_utf8(payload).map_err(|e| e.to_string())?;
        let (id, answer) = text.split_once('=').ok_or("no `=`")?;
        Ok((id.to_owned(), answer.to_owned()))
    }

    /// A responder that answers every request `id` on `requests` with `id=ok` to the
    /// instance named in its key, as a service would.
    async fn respond(log: Arc<dyn EventLog>, answer_twice: bool) {
        let mut from = 0;
        loop {
            let Ok(records) = log.read("requests", 0, from, 100, REPLY_WAIT).await else {
                return;
            };
            let mut out = Vec::new();
            for r in records {
                from = r.offset + 1;
                let id = String::from_utf8(r.payload).unwrap();
                let copies = if answer_twice { 2 } else { 1 };
                for _ in 0..copies {
                    out.push(NewRecord::new(
                        "replies",
                        r.key.clone(),
                        format!("{id}=ok").into_bytes(),
                    ));
                }
            }
            if !out.is_empty() {
                log.append(out).await.unwrap();
            }
        }
    }

    async fn setup() -> (tempfile::TempDir, Arc<dyn EventLog>) {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open(dir.path().join("log.db")).unwrap());
        ensure_topic(log.as_ref(), "requests", 1).await.unwrap();
        ensure_topic(log.as_ref(), "replies", 4).await.unwrap();
        // An existing topic with another count is fine.
        ensure_topic(log.as_ref(), "replies", 2).await.unwrap();
        (dir, log)
    }

    #[tokio::test]
    async fn answers_reach_the_request_waiting_for_their_id() {
        let (_dir, log) = setup().await;
        let rpc = Rpc::start(log.clone(), "replies", "me", decode)
            .await
            .unwrap();
        let other = Rpc::start(log.clone(), "replies", "other", decode)
            .await
            .unwrap();
        let responder = tokio::spawn(respond(log.clone(), true));
        let req = |id: &str, who: &str| {
            (
                id.to_owned(),
                NewRecord::new("requests", who, id.as_bytes().to_vec()),
            )
        };
        let (a, b) = tokio::join!(
            rpc.request(
                vec![req("a1", "me"), req("a2", "me")],
                Duration::from_secs(10)
            ),
            other.request(vec![req("b1", "other")], Duration::from_secs(10)),
        );
        assert_eq!(a.unwrap(), vec![Ok("ok".to_owned()), Ok("ok".to_owned())]);
        assert_eq!(b.unwrap(), vec![Ok("ok".to_owned())]);
        assert!(rpc.is_ready());
        assert!(rpc.inner.waiters.lock().unwrap().is_empty(), "no leak");
        responder.abort();
    }

    #[tokio::test]
    async fn an_unanswered_request_times_out_and_leaves_no_waiter() {
        let (_dir, log) = setup().await;
        let rpc: Rpc<String> = Rpc::start(log.clone(), "replies", "me", decode)
            .await
            .unwrap();
        let answers = rpc
            .request(
                vec![("x".into(), NewRecord::new("requests", "me", b"x".to_vec()))],
                Duration::from_millis(50),
            )
            .await
            .unwrap();
        assert_eq!(answers, vec![Err(Unanswered::Timeout)]);
        assert!(rpc.inner.waiters.lock().unwrap().is_empty());
        // The request itself is durable.
        assert_eq!(log.end_offset("requests", 0).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_failed_append_is_an_error() {
        let (_dir, log) = setup().await;
        let rpc: Rpc<String> = Rpc::start(log, "replies", "me", decode).await.unwrap();
        let err = rpc
            .request(
                vec![("x".into(), NewRecord::new("missing", "me", b"x".to_vec()))],
                Duration::from_millis(50),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, LogError::UnknownTopic(_)), "{err:?}");
        assert!(rpc.inner.waiters.lock().unwrap().is_empty());
    }
}
