//! One running worker's share of `<prefix>.tasks.<queue>`: [`QueueFeed`].
//!
//! A fetcher task owns the group consumer. It keeps up to `prefetch` records decoded in a
//! buffer; the worker's poll loops take from it, start the attempts with one batch of
//! `StartTask` commands, and hand the accepted ones to handlers with a [`Settle`]. Settled
//! offsets travel back to the fetcher, which commits each partition up to its lowest
//! unsettled offset every [`COMMIT_INTERVAL`] (and once more when the worker stops).
//!
//! Rebalances: after each poll the fetcher drops buffered records (and bookkeeping) of
//! partitions it no longer owns; the new owner gets them from the committed offset. A record
//! delivered twice (to two members around a rebalance, or after a crash) costs one more
//! `StartTask`, which the engine rejects: a started attempt cannot be started again.

use super::{LogSource, log_error};
use crate::Error;
use crate::backoff::Backoff;
use crate::client::Task;
use crate::source::Receipt;
use crate::worker::stopped;
use distorch_domain::command::{Command, Outcome};
use distorch_domain::topics::TaskDispatch;
use distorch_eventlog::offsets::COMMIT_INTERVAL;
use distorch_eventlog::offsets::OffsetTracker;
use distorch_eventlog::{Consumer, LogError, Record};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long one consumer poll waits for records; bounds how late settled offsets are
/// committed while records keep the fetcher busy.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// While the buffer is full the fetcher still polls (for one record) this often: a Kafka
/// member that stops polling is dropped from its group after `max.poll.interval.ms`, and
/// rebalances are served only inside a poll.
const KEEPALIVE_POLL: Duration = Duration::from_secs(1);
/// How often a worker looks for a task topic that does not exist yet.
const TOPIC_WAIT: Duration = Duration::from_secs(1);

/// A record taken from the queue and not yet settled.
#[derive(Debug)]
struct Claim {
    partition: u32,
    offset: u64,
    dispatch: TaskDispatch,
    /// The id of the `StartTask` already sent for it without an answer; a retry reuses it,
    /// so the engine applies the start once.
    start_id: Option<String>,
}

impl Claim {
    fn task(&self) -> Task {
        let d = &self.dispatch;
        Task {
            task_id: d.task_id.0.clone(),
            workflow_id: d.workflow_id.to_string(),
            step_id: d.step_id.clone(),
            task: d.task.clone(),
            attempt: d.attempt,
            input: d.input.clone(),
            checkpoint: d.checkpoint.clone(),
            heartbeat_timeout_ms: d.heartbeat_timeout_ms,
        }
    }
}

/// Marks one delivered record as settled, letting its offset be committed.
#[derive(Debug)]
pub(crate) struct Settle {
    tx: mpsc::UnboundedSender<(u32, u64)>,
    partition: u32,
    offset: u64,
}

impl Settle {
    pub fn settle(self) {
        // A stopped fetcher commits nothing more: the record is then delivered again.
        let _ = self.tx.send((self.partition, self.offset));
    }
}

struct Shared {
    buffer: Mutex<VecDeque<Claim>>,
    /// Fetcher → pollers: records arrived.
    arrived: Notify,
    /// Pollers → fetcher: the buffer was drained.
    demand: Notify,
}

impl Shared {
    fn buffer(&self) -> std::sync::MutexGuard<'_, VecDeque<Claim>> {
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The consumer side of one running worker (see the module docs).
pub(crate) struct QueueFeed {
    source: LogSource,
    queue: String,
    shared: Arc<Shared>,
    settled: mpsc::UnboundedSender<(u32, u64)>,
    stop: watch::Sender<bool>,
    fetcher: Option<JoinHandle<()>>,
}

impl Drop for QueueFeed {
    fn drop(&mut self) {
        // Not closed (the worker's future was dropped): stop at once. Dropping the consumer
        // leaves the group; uncommitted records go to the next owner.
        if let Some(fetcher) = self.fetcher.take() {
            fetcher.abort();
        }
    }
}

impl QueueFeed {
    pub(crate) fn start(source: LogSource, queue: &str, prefetch: usize) -> Self {
        let shared = Arc::new(Shared {
            buffer: Mutex::default(),
            arrived: Notify::new(),
            demand: Notify::new(),
        });
        let (settled, settled_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let fetcher = Fetcher {
            source: source.clone(),
            queue: queue.to_owned(),
            topic: source.inner.topics.tasks(queue),
            group: format!("workers.{queue}"),
            shared: shared.clone(),
            settled: settled_rx,
            stop: stop_rx,
            prefetch: prefetch.max(1),
            consumer: None,
            offsets: OffsetTracker::default(),
            last_commit: Instant::now(),
            last_poll: Instant::now(),
        };
        Self {
            source,
            queue: queue.to_owned(),
            shared,
            settled,
            stop,
            fetcher: Some(tokio::spawn(fetcher.run())),
        }
    }

    /// Takes up to `max` records (waiting at most `wait` for the first), starts their
    /// attempts for `worker_id` and returns those the engine accepted.
    ///
    /// Only the wait is cut short by `stop`: once claims are taken their starts are seen
    /// through (at most one reply timeout), so an attempt is never started and then
    /// abandoned by a worker shutting down.
    pub(crate) async fn poll(
        &self,
        worker_id: &str,
        max: usize,
        wait: Duration,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Vec<(Task, Receipt)>, Error> {
        let claims = tokio::select! {
            biased;
            () = stopped(stop) => return Ok(Vec::new()),
            claims = self.take(max.max(1), wait) => claims,
        };
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        self.start_attempts(worker_id, claims).await
    }

    /// Commits what is settled and leaves the group. Call once every delivered attempt has
    /// been settled (or abandoned).
    pub(crate) async fn close(mut self) {
        self.stop.send_replace(true);
        if let Some(fetcher) = self.fetcher.take()
            && let Err(e) = fetcher.await
        {
            tracing::error!(queue = %self.queue, error = %e, "task fetcher failed");
        }
    }

    async fn take(&self, max: usize, wait: Duration) -> Vec<Claim> {
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking, so records that arrive in between wake us.
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            {
                let mut buffer = self.shared.buffer();
                if !buffer.is_empty() {
                    let n = max.min(buffer.len());
                    let claims: Vec<Claim> = buffer.drain(..n).collect();
                    drop(buffer);
                    self.shared.demand.notify_one();
                    return claims;
                }
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Vec::new();
            }
        }
    }

    /// Puts claims back at the front of the buffer, in order.
    fn requeue(&self, claims: Vec<Claim>) {
        if claims.is_empty() {
            return;
        }
        let mut buffer = self.shared.buffer();
        for claim in claims.into_iter().rev() {
            buffer.push_front(claim);
        }
        drop(buffer);
        self.shared.arrived.notify_waiters();
    }

    fn settle_of(&self, claim: &Claim) -> Settle {
        Settle {
            tx: self.settled.clone(),
            partition: claim.partition,
            offset: claim.offset,
        }
    }

    async fn start_attempts(
        &self,
        worker_id: &str,
        claims: Vec<Claim>,
    ) -> Result<Vec<(Task, Receipt)>, Error> {
        let mut sent = Vec::with_capacity(claims.len());
        let mut requests = Vec::with_capacity(claims.len());
        for mut claim in claims {
            let id = claim
                .start_id
                .get_or_insert_with(|| self.source.next_id())
                .clone();
            let command = Command::StartTask {
                task_id: claim.dispatch.task_id.clone(),
                attempt: claim.dispatch.attempt,
                worker_id: worker_id.to_owned(),
            };
            match self.source.request(&id, command) {
                Ok(request) => {
                    requests.push(request);
                    sent.push(claim);
                }
                Err(e) => {
                    // No engine can ever start it; holding it back would stall the partition.
                    tracing::warn!(queue = %self.queue, task_id = %claim.dispatch.task_id, error = %e, "skipping a task record");
                    self.settle_of(&claim).settle();
                }
            }
        }
        if sent.is_empty() {
            return Ok(Vec::new());
        }

        let timeout = self.source.inner.reply_timeout;
        let answers = match self.source.inner.rpc.request(requests, timeout).await {
            Ok(answers) => answers,
            Err(e) => {
                self.requeue(sent);
                return Err(log_error(e));
            }
        };
        let mut accepted = Vec::new();
        let mut unanswered = Vec::new();
        for (claim, answer) in sent.into_iter().zip(answers) {
            match answer {
                Ok(Outcome::Accepted { .. }) => {
                    let receipt = Receipt {
                        log: Some(self.settle_of(&claim)),
                    };
                    accepted.push((claim.task(), receipt));
                }
                Ok(Outcome::Rejected { rejection }) => {
                    tracing::debug!(
                        queue = %self.queue,
                        task_id = %claim.dispatch.task_id,
                        attempt = claim.dispatch.attempt,
                        %rejection,
                        "dropping a stale task attempt"
                    );
                    self.settle_of(&claim).settle();
                }
                Err(_) => unanswered.push(claim),
            }
        }
        if !unanswered.is_empty() {
            tracing::warn!(
                queue = %self.queue,
                count = unanswered.len(),
                ?timeout,
                "no reply to StartTask; asking again"
            );
            self.requeue(unanswered);
        }
        Ok(accepted)
    }
}

struct Fetcher {
    source: LogSource,
    queue: String,
    topic: String,
    group: String,
    shared: Arc<Shared>,
    settled: mpsc::UnboundedReceiver<(u32, u64)>,
    stop: watch::Receiver<bool>,
    prefetch: usize,
    consumer: Option<Box<dyn Consumer>>,
    offsets: OffsetTracker,
    last_commit: Instant,
    last_poll: Instant,
}

impl Fetcher {
    async fn run(mut self) {
        let mut failures = 0u32;
        let mut waiting_for_topic = false;
        while !*self.stop.borrow() {
            self.drain_settled();
            if self.consumer.is_none() {
                let join = join(self.source.clone(), self.topic.clone(), self.group.clone());
                let joined = tokio::select! {
                    biased;
                    _ = self.stop.changed() => continue,
                    r = join => r,
                };
                match joined {
                    Ok(consumer) => {
                        tracing::info!(queue = %self.queue, group = %self.group, topic = %self.topic, "joined the queue's consumer group");
                        self.consumer = Some(consumer);
                        failures = 0;
                    }
                    Err(LogError::UnknownTopic(_)) => {
                        // The engine creates it with the first task for the queue.
                        if !waiting_for_topic {
                            tracing::info!(queue = %self.queue, topic = %self.topic, "waiting for the task topic to be created");
                            waiting_for_topic = true;
                        }
                        tokio::select! {
                            _ = self.stop.changed() => {}
                            () = tokio::time::sleep(TOPIC_WAIT) => {}
                        }
                        continue;
                    }
                    Err(e) => {
                        self.pause(&mut failures, &e, "cannot consume the task topic")
                            .await;
                        continue;
                    }
                }
            }
            if self.last_commit.elapsed() >= COMMIT_INTERVAL {
                self.commit().await;
            }

            let buffered = self.shared.buffer().len();
            let mut want = self.prefetch.saturating_sub(buffered);
            if want == 0 {
                if self.last_poll.elapsed() < KEEPALIVE_POLL {
                    tokio::select! {
                        () = self.shared.demand.notified() => {}
                        Some(settled) = self.settled.recv() => self.mark_settled(settled),
                        _ = self.stop.changed() => {}
                        () = tokio::time::sleep(COMMIT_INTERVAL) => {}
                    }
                    continue;
                }
                want = 1;
            }
            let wait = if buffered > 0 {
                Duration::from_millis(100)
            } else {
                FETCH_WAIT
            };
            self.last_poll = Instant::now();
            let consumer = self.consumer.as_mut().expect("joined above");
            match consumer.poll(want, wait).await {
                Ok(records) => {
                    failures = 0;
                    self.accept(records);
                }
                Err(e) => {
                    // The member cannot go on: rejoin. What it had not committed is
                    // delivered again, to this member or another.
                    self.consumer = None;
                    self.offsets.clear();
                    self.shared.buffer().clear();
                    self.pause(
                        &mut failures,
                        &e,
                        "polling the task topic failed; rejoining",
                    )
                    .await;
                }
            }
        }
        // Stopping: the worker has settled everything it will settle.
        self.drain_settled();
        self.commit().await;
        if let Some(consumer) = self.consumer.take() {
            // Leaves the group, so the remaining members take over at once.
            drop(consumer);
            tracing::info!(queue = %self.queue, group = %self.group, "left the queue's consumer group");
        }
    }

    async fn pause(&mut self, failures: &mut u32, error: &LogError, what: &str) {
        let delay = Backoff::RETRY.delay_random(*failures);
        *failures = failures.saturating_add(1);
        tracing::warn!(queue = %self.queue, %error, retry_in = ?delay, "{what}");
        tokio::select! {
            _ = self.stop.changed() => {}
            () = tokio::time::sleep(delay) => {}
        }
    }

    fn drain_settled(&mut self) {
        while let Ok(settled) = self.settled.try_recv() {
            self.mark_settled(settled);
        }
    }

    fn mark_settled(&mut self, (partition, offset): (u32, u64)) {
        self.offsets.settle(partition, offset);
    }

    /// Buffers new records of the partitions this member owns.
    fn accept(&mut self, records: Vec<Record>) {
        let owned: HashSet<u32> = self
            .consumer
            .as_ref()
            .map(|c| c.assignment())
            .unwrap_or_default()
            .into_iter()
            .filter(|(topic, _)| *topic == self.topic)
            .map(|(_, partition)| partition)
            .collect();
        self.offsets.retain(|p| owned.contains(&p));
        let mut claims = Vec::with_capacity(records.len());
        for record in records {
            if record.topic != self.topic || !owned.contains(&record.partition) {
                continue;
            }
            if !self.offsets.fetched(record.partition, record.offset) {
                // Delivered again while still buffered or running here.
                continue;
            }
            match serde_json::from_slice::<TaskDispatch>(&record.payload) {
                Ok(dispatch) => {
                    self.offsets.hold(record.partition, record.offset);
                    claims.push(Claim {
                        partition: record.partition,
                        offset: record.offset,
                        dispatch,
                        start_id: None,
                    });
                }
                Err(e) => tracing::warn!(
                    queue = %self.queue,
                    partition = record.partition,
                    offset = record.offset,
                    error = %e,
                    "skipping an undecodable task record"
                ),
            }
        }
        let mut buffer = self.shared.buffer();
        buffer.retain(|c| owned.contains(&c.partition));
        if claims.is_empty() {
            return;
        }
        buffer.extend(claims);
        drop(buffer);
        self.shared.arrived.notify_waiters();
    }

    async fn commit(&mut self) {
        self.last_commit = Instant::now();
        let Some(consumer) = self.consumer.as_mut() else {
            return;
        };
        let offsets = self.offsets.to_commit(&self.topic);
        if offsets.is_empty() {
            return;
        }
        match consumer.commit(&offsets).await {
            Ok(()) => self.offsets.committed(&offsets),
            Err(e) => {
                tracing::warn!(queue = %self.queue, error = %e, "committing task offsets failed")
            }
        }
    }
}

/// Joins the queue's group on its task topic (which must exist).
async fn join(
    source: LogSource,
    topic: String,
    group: String,
) -> Result<Box<dyn Consumer>, LogError> {
    source
        .inner
        .log
        .consumer(&group, std::slice::from_ref(&topic))
        .await
}
