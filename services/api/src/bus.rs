//! The command bus: how the API asks the engine to change something and learns the answer.
//!
//! The API never changes state itself. It appends a [`CommandEnvelope`] to the commands topic
//! with `reply_to` = this process's instance id; the engine appends a [`Reply`] keyed by that
//! id to the replies topic, and a background reader completes the waiting request.
//!
//! Appends go through one writer task that drains everything queued while the previous
//! append was in flight into the next one: concurrent HTTP requests share one log append
//! (one SQLite transaction and fsync, one Kafka produce batch) without adding latency when
//! the API is idle.

use crate::error::ApiError;
use crate::metrics::ApiMetrics;
use distorch_domain::command::{Command, CommandEnvelope, Outcome, Reply};
use distorch_domain::ids::CommandId;
use distorch_domain::topics::Topics;
use distorch_eventlog::{EventLog, LogError, NewRecord, partition_for};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Records per log append; bounds the size of one group commit.
const MAX_BATCH_RECORDS: usize = 4096;
/// Appends waiting for the writer before `send` applies backpressure.
const WRITE_QUEUE: usize = 1024;
/// Long-poll wait of the reply reader; only bounds how often it loops when idle.
const REPLY_WAIT: Duration = Duration::from_secs(5);

type Waiters = Mutex<HashMap<CommandId, oneshot::Sender<Outcome>>>;

struct WriteRequest {
    records: Vec<NewRecord>,
    done: oneshot::Sender<Result<(), String>>,
}

/// Publishes commands and awaits the engine's replies. Cheap to clone.
#[derive(Clone)]
pub struct CommandBus {
    inner: Arc<Inner>,
}

struct Inner {
    instance: String,
    commands_topic: String,
    timeout: Duration,
    waiters: Arc<Waiters>,
    writes: mpsc::Sender<WriteRequest>,
    ready: Arc<AtomicBool>,
    metrics: ApiMetrics,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl CommandBus {
    /// Creates the commands and replies topics if missing, positions the reply reader at the
    /// current end of this instance's replies partition and starts it. The position is taken
    /// before this returns, so no reply to a command sent through the bus can be missed.
    pub async fn start(
        log: Arc<dyn EventLog>,
        topics: &Topics,
        partitions: &crate::Partitions,
        timeout: Duration,
        metrics: ApiMetrics,
    ) -> Result<Self, ApiError> {
        ensure_topic(log.as_ref(), &topics.commands(), partitions.commands).await?;
        ensure_topic(log.as_ref(), &topics.replies(), partitions.replies).await?;

        let instance = uuid::Uuid::new_v4().to_string();
        let replies = topics.replies();
        let partition = partition_for(&instance, log.partitions(&replies).await?);
        let from = log.end_offset(&replies, partition).await?;

        let waiters: Arc<Waiters> = Arc::default();
        let ready = Arc::new(AtomicBool::new(true));
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let reader = ReplyReader {
            log: log.clone(),
            topic: replies,
            partition,
            instance: instance.clone(),
            waiters: waiters.clone(),
            ready: ready.clone(),
        };
        let tasks = vec![
            tokio::spawn(reader.run(from)),
            tokio::spawn(write_loop(log, queue)),
        ];
        tracing::info!(%instance, partition, "command bus started");
        Ok(Self {
            inner: Arc::new(Inner {
                instance,
                commands_topic: topics.commands(),
                timeout,
                waiters,
                writes,
                ready,
                metrics,
                tasks,
            }),
        })
    }

    /// The `reply_to` value of this process.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance
    }

    /// Whether replies are being read (for `/readyz`).
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Relaxed)
            && self.inner.tasks.iter().all(|t| !t.is_finished())
    }

    /// Sends one command and waits for the engine's outcome.
    pub async fn send(&self, command: Command) -> Result<Outcome, ApiError> {
        let mut outcomes = self.send_many(vec![command]).await?;
        outcomes.pop().expect("one outcome per command")
    }

    /// Sends commands in one append and waits for every outcome (one shared deadline).
    /// The outer error means nothing was appended; an inner error (timeout) concerns only
    /// that command, which is durable and will still be applied.
    pub async fn send_many(
        &self,
        commands: Vec<Command>,
    ) -> Result<Vec<Result<Outcome, ApiError>>, ApiError> {
        let inner = &self.inner;
        let mut records = Vec::with_capacity(commands.len());
        let mut names = Vec::with_capacity(commands.len());
        let mut ids = Vec::with_capacity(commands.len());
        for command in commands {
            let id = CommandId(uuid::Uuid::new_v4().to_string());
            names.push(command.name());
            records.push(self.record(id.clone(), Some(inner.instance.clone()), command)?);
            ids.push(id);
        }

        // Register before appending: the reply may arrive before `append` returns.
        let guard = PendingGuard {
            waiters: &inner.waiters,
            ids: &ids,
        };
        let receivers: Vec<_> = {
            let mut waiters = inner.waiters.lock().expect("waiters lock");
            ids.iter()
                .map(|id| {
                    let (tx, rx) = oneshot::channel();
                    waiters.insert(id.clone(), tx);
                    rx
                })
                .collect()
        };
        if let Err(e) = self.append(records).await {
            for name in &names {
                inner.metrics.command(name, "error");
            }
            return Err(e);
        }

        let deadline = Instant::now() + inner.timeout;
        let mut outcomes = Vec::with_capacity(receivers.len());
        for (rx, name) in receivers.into_iter().zip(names) {
            let outcome = match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(outcome)) => Ok(outcome),
                Ok(Err(_)) => Err(ApiError::Unavailable(
                    "the reply reader stopped before the engine answered; the command is \
                     durable and will still be applied"
                        .into(),
                )),
                Err(_) => Err(ApiError::Timeout(inner.timeout.as_secs_f64())),
            };
            inner.metrics.command(
                name,
                match &outcome {
                    Ok(Outcome::Accepted { .. }) => "accepted",
                    Ok(Outcome::Rejected { .. }) => "rejected",
                    Err(ApiError::Timeout(_)) => "timeout",
                    Err(_) => "error",
                },
            );
            outcomes.push(outcome);
        }
        drop(guard);
        Ok(outcomes)
    }

    /// Appends a command without asking for a reply; returns once it is durable.
    pub async fn publish(&self, command: Command) -> Result<(), ApiError> {
        let name = command.name();
        let record = self.record(CommandId(uuid::Uuid::new_v4().to_string()), None, command)?;
        let result = self.append(vec![record]).await;
        self.inner
            .metrics
            .command(name, if result.is_ok() { "published" } else { "error" });
        result
    }

    fn record(
        &self,
        id: CommandId,
        reply_to: Option<String>,
        command: Command,
    ) -> Result<NewRecord, ApiError> {
        let key = command.key().ok_or_else(|| {
            ApiError::BadRequest(format!("{} names a malformed task id", command.name()))
        })?;
        let envelope = CommandEnvelope {
            id,
            reply_to,
            command,
        };
        let payload = serde_json::to_vec(&envelope).expect("commands serialise to JSON");
        Ok(NewRecord::new(
            self.inner.commands_topic.clone(),
            key,
            payload,
        ))
    }

    async fn append(&self, records: Vec<NewRecord>) -> Result<(), ApiError> {
        let (done, rx) = oneshot::channel();
        let unavailable = || ApiError::Unavailable("the command writer has stopped".into());
        self.inner
            .writes
            .send(WriteRequest { records, done })
            .await
            .map_err(|_| unavailable())?;
        rx.await
            .map_err(|_| unavailable())?
            .map_err(|e| ApiError::Unavailable(format!("could not append the command: {e}")))
    }
}

/// Removes this request's waiters however it ends (answered, timed out, or the HTTP
/// request was dropped), so abandoned requests do not leak entries.
struct PendingGuard<'a> {
    waiters: &'a Waiters,
    ids: &'a [CommandId],
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for id in self.ids {
            waiters.remove(id);
        }
    }
}

/// Creates a topic; an existing one with another partition count is accepted as is,
/// since the engine may have created it first with its own configuration.
pub(crate) async fn ensure_topic(
    log: &dyn EventLog,
    topic: &str,
    partitions: u32,
) -> Result<(), ApiError> {
    match log.create_topic(topic, partitions).await {
        Ok(()) => Ok(()),
        Err(LogError::PartitionMismatch { existing, .. }) => {
            tracing::debug!(topic, existing, requested = partitions, "topic exists");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn write_loop(log: Arc<dyn EventLog>, mut queue: mpsc::Receiver<WriteRequest>) {
    while let Some(first) = queue.recv().await {
        let mut records = first.records;
        let mut done = vec![(first.done, records.len())];
        while records.len() < MAX_BATCH_RECORDS {
            let Ok(next) = queue.try_recv() else { break };
            done.push((next.done, next.records.len()));
            records.extend(next.records);
        }
        let result = log.append(records).await.map(drop).map_err(|e| {
            tracing::warn!(error = %e, "command append failed");
            e.to_string()
        });
        for (tx, _) in done {
            let _ = tx.send(result.clone());
        }
    }
}

struct ReplyReader {
    log: Arc<dyn EventLog>,
    topic: String,
    partition: u32,
    instance: String,
    waiters: Arc<Waiters>,
    ready: Arc<AtomicBool>,
}

impl ReplyReader {
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
                        // The partition is shared with other API instances.
                        if record.key != self.instance {
                            continue;
                        }
                        match serde_json::from_slice::<Reply>(&record.payload) {
                            Ok(reply) => self.complete(reply),
                            Err(e) => tracing::warn!(
                                offset = record.offset,
                                error = %e,
                                "skipping undecodable reply"
                            ),
                        }
                    }
                }
                Err(e) => {
                    self.ready.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, "reading replies failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    fn complete(&self, reply: Reply) {
        let waiter = self
            .waiters
            .lock()
            .expect("waiters lock")
            .remove(&reply.command_id);
        // No waiter: the request timed out or was dropped; the command was applied anyway.
        if let Some(tx) = waiter {
            let _ = tx.send(reply.outcome);
        }
    }
}
