//! Hands task attempts from the `tasks.<queue>` topics to long-polling workers.
//!
//! One [`QueueDispatcher`] per queue: a [`TaskFeed`] (a member of group `api-poll` on the
//! queue's topic; the consumer log workers use too) and the process's
//! [`Starter`](distorch_tasks::Starter). A poll takes claims, starts their attempts with one
//! batch of `StartTask` commands, and returns the ones the engine accepted. A start the engine
//! did not answer (it was failing over) is asked again, with the same command id, by the
//! queue's next poll. With several API replicas, a poll its replica cannot fill is topped
//! up by the others ([`crate::replicas`]).

use crate::bus::{CommandBus, ensure_topic};
use crate::error::ApiError;
use crate::metrics::ApiMetrics;
use crate::replicas::Replicas;
use distorch_domain::topics::{TaskDispatch, Topics};
use distorch_eventlog::EventLog;
use distorch_tasks::{Claim, FeedConfig, Share, TaskFeed};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// While a poll waits, how often it looks again whether other replicas have attempts of its
/// queue waiting (their heartbeats tell; asking them costs nothing until one does).
pub const RECHECK: Duration = Duration::from_millis(250);

/// Consumer group of the poll endpoint on every `tasks.<queue>` topic.
pub const GROUP: &str = "api-poll";

/// The dispatchers of every queue polled so far, created on first use.
pub struct Dispatchers {
    log: Arc<dyn EventLog>,
    topics: Topics,
    partitions: u32,
    prefetch: usize,
    queues: Mutex<HashMap<String, Arc<OnceCell<Arc<QueueDispatcher>>>>>,
}

impl Dispatchers {
    /// No dispatcher yet; a queue's topic is created with `partitions` when missing, and its
    /// feed buffers up to `prefetch` records.
    pub fn new(log: Arc<dyn EventLog>, topics: Topics, partitions: u32, prefetch: usize) -> Self {
        Self {
            log,
            topics,
            partitions,
            prefetch,
            queues: Mutex::default(),
        }
    }

    /// The queue's dispatcher, started on the first call: creates the queue's topic if
    /// missing and joins group [`GROUP`] on it. Concurrent first calls start one.
    pub async fn get(&self, queue: &str) -> Result<Arc<QueueDispatcher>, ApiError> {
        let cell = self
            .queues
            .lock()
            .expect("queues lock")
            .entry(queue.to_owned())
            .or_default()
            .clone();
        let dispatcher = cell
            .get_or_try_init(|| async {
                let topic = self.topics.tasks(queue);
                // Created here (the engine creates it too) so a worker may poll a queue
                // before its first task.
                ensure_topic(self.log.as_ref(), &topic, self.partitions).await?;
                let feed = TaskFeed::start(
                    self.log.clone(),
                    FeedConfig {
                        topic: topic.clone(),
                        group: GROUP.to_owned(),
                        prefetch: self.prefetch,
                    },
                );
                tracing::info!(queue, topic, "queue dispatcher started");
                Ok::<_, ApiError>(Arc::new(QueueDispatcher {
                    queue: queue.to_owned(),
                    log: self.log.clone(),
                    feed,
                }))
            })
            .await?;
        Ok(dispatcher.clone())
    }

    /// Dispatchers started so far (for the queue-depth gauge).
    pub fn started(&self) -> Vec<Arc<QueueDispatcher>> {
        let queues = self.queues.lock().expect("queues lock");
        queues
            .values()
            .filter_map(|cell| cell.get().cloned())
            .collect()
    }
}

/// Hands out the task attempts of one queue: its [`TaskFeed`] of claimed records, and the
/// poll that starts them.
pub struct QueueDispatcher {
    queue: String,
    log: Arc<dyn EventLog>,
    feed: TaskFeed,
}

impl QueueDispatcher {
    /// The queue's name (not its topic's).
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Marks claims as settled so their offsets can be committed.
    pub fn settle<'a>(&self, claims: impl IntoIterator<Item = &'a Claim>) {
        for claim in claims {
            self.feed.settle(claim);
        }
    }

    /// What this replica holds of the queue right now.
    pub fn share(&self) -> Share {
        self.feed.share()
    }

    /// Rejoins the queue's group so the broker rebalances (see [`TaskFeed::rejoin`]).
    pub fn rejoin(&self) {
        self.feed.rejoin();
    }

    /// Up to `max` attempts for `worker_id`, waiting up to `wait` for the first: those this
    /// replica holds first, and with `forward`, topped up from the other `replicas` that
    /// have some waiting (as their heartbeats tell; looked at again every [`RECHECK`] of
    /// the wait). Without `replicas` (`standalone`) or `forward` (a take forwarded here),
    /// only this replica's.
    #[allow(clippy::too_many_arguments)]
    pub async fn poll(
        self: &Arc<Self>,
        bus: &CommandBus,
        metrics: &ApiMetrics,
        replicas: Option<&Arc<Replicas>>,
        forward: bool,
        worker_id: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<TaskDispatch>, ApiError> {
        let deadline = Instant::now() + wait;
        let mut slice = Duration::ZERO;
        let forward_to = replicas.filter(|_| forward);
        loop {
            let mut tasks = self
                .take(bus, metrics, replicas, worker_id, max, slice)
                .await?;
            if let Some(replicas) = forward_to
                && tasks.len() < max
            {
                // Counted as handed out by the replica that started them.
                tasks.extend(
                    replicas
                        .take(&self.queue, worker_id, max - tasks.len())
                        .await,
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !tasks.is_empty() || left.is_zero() {
                return Ok(tasks);
            }
            slice = match forward_to {
                Some(_) => left.min(RECHECK),
                None => left,
            };
        }
    }

    /// Takes attempts of this replica for `worker_id` (waiting up to `wait` for the first),
    /// starts them, and returns those the engine accepted (a rejected one is stale:
    /// superseded, cancelled, already running or done). An attempt read from a partition
    /// that a gone replica held is taken over from it if it started it.
    async fn take(
        self: &Arc<Self>,
        bus: &CommandBus,
        metrics: &ApiMetrics,
        replicas: Option<&Arc<Replicas>>,
        worker_id: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<TaskDispatch>, ApiError> {
        let claims = self.feed.take(max, wait).await;
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        // From here on the claims must be settled or given back even if the worker hangs up,
        // so the rest runs in its own task that a dropped request cannot cancel.
        let this = self.clone();
        let starter = bus.starter();
        let worker_id = worker_id.to_owned();
        let replicas = replicas.cloned();
        let started = tokio::spawn(async move {
            let gone = |partition| {
                let replicas = replicas.as_ref()?;
                replicas.gone_holder(&this.queue, partition)
            };
            let started = starter
                .start_replacing(&this.feed, &worker_id, claims, gone)
                .await;
            if let Ok(started) = &started {
                // Handed to the worker with the response: the attempt's timeouts take over.
                this.settle(&started.accepted);
            }
            started
        })
        .await
        .map_err(|e| ApiError::Unavailable(format!("starting tasks failed: {e}")))?
        .map_err(|e| ApiError::Unavailable(format!("could not append StartTask: {e}")))?;
        for (outcome, n) in [
            ("accepted", started.accepted.len()),
            ("rejected", started.stale + started.malformed),
            ("timeout", started.unanswered),
        ] {
            metrics.commands_n("StartTask", outcome, n);
        }
        metrics.tasks_handed_out(&self.queue, started.accepted.len());
        Ok(started.accepted.into_iter().map(|c| c.dispatch).collect())
    }

    /// Records on the queue not yet settled by this group: end offsets minus commits.
    pub async fn depth(&self) -> Result<u64, ApiError> {
        let topic = self.feed.topic();
        let mut depth = 0;
        for partition in 0..self.log.partitions(topic).await? {
            let end = self.log.end_offset(topic, partition).await?;
            let committed = self.log.committed(GROUP, topic, partition).await?;
            depth += end.saturating_sub(committed.unwrap_or(0));
        }
        Ok(depth)
    }
}
