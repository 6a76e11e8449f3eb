//! Hands task attempts from the `tasks.<queue>` topics to long-polling workers.
//!
//! One [`QueueDispatcher`] per queue owns a consumer of group `api-poll`. A fetcher task
//! reads records in batches into a small buffer and serves waiting polls in arrival order
//! (each takes up to its `max_tasks`); a poll that finds nothing waits on a oneshot that
//! the fetcher completes the moment records arrive, so nothing sleeps in a loop.
//!
//! Offsets are committed only once the attempts they carry are settled (the engine answered
//! the `StartTask`, or the record was undecodable), and only up to the lowest unsettled
//! offset of each partition: after a crash the unsettled attempts are delivered again, and
//! the engine rejects the ones that were in fact started (stale attempt).

use crate::bus::{CommandBus, ensure_topic};
use crate::error::ApiError;
use crate::metrics::ApiMetrics;
use distorch_domain::command::{Command, Outcome};
use distorch_domain::topics::TaskDispatch;
use distorch_eventlog::offsets::COMMIT_INTERVAL;
use distorch_eventlog::offsets::OffsetTracker;
use distorch_eventlog::{Consumer, EventLog};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OnceCell, mpsc, oneshot};
use tokio::task::JoinHandle;

/// Consumer group of the poll endpoint on every `tasks.<queue>` topic.
pub const GROUP: &str = "api-poll";
/// How long one consumer poll waits; bounds how late settled offsets get committed.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// Upper bound of records fetched at once.
const MAX_FETCH: usize = 4096;

/// A record taken from the queue and not yet settled.
#[derive(Debug, Clone)]
pub struct Claim {
    pub partition: u32,
    pub offset: u64,
    pub dispatch: TaskDispatch,
}

/// The dispatchers of every queue polled so far, created on first use.
pub struct Dispatchers {
    log: Arc<dyn EventLog>,
    topics: distorch_domain::topics::Topics,
    partitions: u32,
    prefetch: usize,
    queues: Mutex<HashMap<String, Arc<OnceCell<Arc<QueueDispatcher>>>>>,
}

impl Dispatchers {
    pub fn new(
        log: Arc<dyn EventLog>,
        topics: distorch_domain::topics::Topics,
        partitions: u32,
        prefetch: usize,
    ) -> Self {
        Self {
            log,
            topics,
            partitions,
            prefetch,
            queues: Mutex::default(),
        }
    }

    pub async fn get(&self, queue: &str) -> Result<Arc<QueueDispatcher>, ApiError> {
        let cell = self
            .queues
            .lock()
            .expect("queues lock")
            .entry(queue.to_owned())
            .or_default()
            .clone();
        let dispatcher = cell
            .get_or_try_init(|| {
                QueueDispatcher::start(
                    self.log.clone(),
                    queue,
                    self.topics.tasks(queue),
                    self.partitions,
                    self.prefetch,
                )
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

pub struct QueueDispatcher {
    queue: String,
    topic: String,
    log: Arc<dyn EventLog>,
    shared: Arc<Shared>,
    settled: mpsc::UnboundedSender<Vec<(u32, u64)>>,
    fetcher: JoinHandle<()>,
}

impl Drop for QueueDispatcher {
    fn drop(&mut self) {
        self.fetcher.abort();
    }
}

struct Shared {
    state: Mutex<State>,
    /// Wakes a fetcher that stopped because the buffer was full and nobody was waiting.
    demand: Notify,
}

#[derive(Default)]
struct State {
    buffer: VecDeque<Claim>,
    waiters: VecDeque<Waiter>,
    next_waiter: u64,
}

struct Waiter {
    id: u64,
    max: usize,
    tx: oneshot::Sender<Vec<Claim>>,
}

impl State {
    /// Hands buffered claims to waiters, oldest first. Invariant afterwards: the buffer is
    /// empty or nobody is waiting.
    fn serve(&mut self) {
        while !self.buffer.is_empty() {
            let Some(waiter) = self.waiters.pop_front() else {
                break;
            };
            let n = waiter.max.min(self.buffer.len());
            let claims: Vec<Claim> = self.buffer.drain(..n).collect();
            if let Err(claims) = waiter.tx.send(claims) {
                self.requeue(claims);
            }
        }
    }

    fn requeue(&mut self, claims: Vec<Claim>) {
        for claim in claims.into_iter().rev() {
            self.buffer.push_front(claim);
        }
    }

    fn demand(&self) -> usize {
        self.waiters.iter().map(|w| w.max).sum()
    }
}

impl QueueDispatcher {
    async fn start(
        log: Arc<dyn EventLog>,
        queue: &str,
        topic: String,
        partitions: u32,
        prefetch: usize,
    ) -> Result<Arc<Self>, ApiError> {
        ensure_topic(log.as_ref(), &topic, partitions).await?;
        let consumer = log.consumer(GROUP, std::slice::from_ref(&topic)).await?;
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            demand: Notify::new(),
        });
        let (settled, settled_rx) = mpsc::unbounded_channel();
        let fetcher = Fetcher {
            queue: queue.to_owned(),
            topic: topic.clone(),
            consumer,
            shared: shared.clone(),
            settled: settled_rx,
            prefetch: prefetch.max(1),
            offsets: OffsetTracker::default(),
            last_commit: std::time::Instant::now(),
        };
        tracing::info!(queue, topic, "queue dispatcher started");
        Ok(Arc::new(Self {
            queue: queue.to_owned(),
            topic,
            log,
            shared,
            settled,
            fetcher: tokio::spawn(fetcher.run()),
        }))
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Up to `max` claims: those buffered now, or else the first ones to arrive within
    /// `wait`; empty when the wait ends. The caller MUST [`settle`](Self::settle) them.
    pub async fn take(&self, max: usize, wait: Duration) -> Vec<Claim> {
        let max = max.max(1);
        let (id, rx) = {
            let mut state = self.shared.state.lock().expect("dispatch lock");
            if !state.buffer.is_empty() {
                let n = max.min(state.buffer.len());
                let claims = state.buffer.drain(..n).collect();
                self.shared.demand.notify_one();
                return claims;
            }
            let (tx, rx) = oneshot::channel();
            let id = state.next_waiter;
            state.next_waiter += 1;
            state.waiters.push_back(Waiter { id, max, tx });
            (id, rx)
        };
        self.shared.demand.notify_one();
        let mut wait_guard = WaitGuard {
            shared: &self.shared,
            id,
            rx: Some(rx),
        };
        let rx = wait_guard.rx.as_mut().expect("receiver present");
        match tokio::time::timeout(wait, rx).await {
            Ok(claims) => {
                wait_guard.rx = None;
                claims.unwrap_or_default()
            }
            Err(_) => wait_guard.leave(),
        }
    }

    /// Marks claims as settled so their offsets can be committed.
    pub fn settle(&self, claims: impl IntoIterator<Item = (u32, u64)>) {
        let _ = self.settled.send(claims.into_iter().collect());
    }

    /// Takes attempts for `worker_id`, starts them with one group-committed batch of
    /// `StartTask` commands, and returns those the engine accepted (a rejected one is stale:
    /// superseded, cancelled or already done).
    pub async fn poll(
        self: &Arc<Self>,
        bus: &CommandBus,
        metrics: &ApiMetrics,
        worker_id: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<TaskDispatch>, ApiError> {
        let claims = self.take(max, wait).await;
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        // From here on the claims must be settled even if the worker hangs up, so the rest
        // runs in its own task that a dropped request cannot cancel.
        let this = self.clone();
        let bus = bus.clone();
        let worker_id = worker_id.to_owned();
        let started = tokio::spawn(async move {
            let commands = claims
                .iter()
                .map(|c| Command::StartTask {
                    task_id: c.dispatch.task_id.clone(),
                    attempt: c.dispatch.attempt,
                    worker_id: worker_id.clone(),
                })
                .collect();
            let outcomes = bus.send_many(commands).await;
            // Settle even on failure: the StartTasks that were appended will be applied, and
            // the engine's timeouts reschedule an attempt no worker received.
            this.settle(claims.iter().map(|c| (c.partition, c.offset)));
            let outcomes = outcomes?;
            let mut accepted = Vec::with_capacity(claims.len());
            for (claim, outcome) in claims.into_iter().zip(outcomes) {
                match outcome {
                    Ok(Outcome::Accepted { .. }) => accepted.push(claim.dispatch),
                    Ok(Outcome::Rejected { rejection }) => tracing::debug!(
                        task_id = %claim.dispatch.task_id,
                        attempt = claim.dispatch.attempt,
                        %rejection,
                        "dropping stale task attempt"
                    ),
                    Err(e) => tracing::warn!(
                        task_id = %claim.dispatch.task_id,
                        error = %e,
                        "no answer to StartTask; the engine's timeouts will reschedule it"
                    ),
                }
            }
            Ok::<_, ApiError>(accepted)
        });
        let accepted = started
            .await
            .map_err(|e| ApiError::Unavailable(format!("starting tasks failed: {e}")))??;
        metrics.tasks_handed_out(&self.queue, accepted.len());
        Ok(accepted)
    }

    /// Records on the queue not yet settled by this group: end offsets minus commits.
    pub async fn depth(&self) -> Result<u64, ApiError> {
        let mut depth = 0;
        for partition in 0..self.log.partitions(&self.topic).await? {
            let end = self.log.end_offset(&self.topic, partition).await?;
            let committed = self.log.committed(GROUP, &self.topic, partition).await?;
            depth += end.saturating_sub(committed.unwrap_or(0));
        }
        Ok(depth)
    }
}

/// Leaves the waiter queue however a wait ends. Claims sent to a poll that is then dropped
/// (the worker hung up) go back to the front of the buffer instead of being lost.
struct WaitGuard<'a> {
    shared: &'a Shared,
    id: u64,
    rx: Option<oneshot::Receiver<Vec<Claim>>>,
}

impl WaitGuard<'_> {
    /// Under the lock, either the waiter is still queued (nothing was sent) or the fetcher
    /// already sent its claims, which are then in the channel.
    fn leave(&mut self) -> Vec<Claim> {
        let Some(mut rx) = self.rx.take() else {
            return Vec::new();
        };
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pos) = state.waiters.iter().position(|w| w.id == self.id) {
            state.waiters.remove(pos);
            return Vec::new();
        }
        rx.try_recv().unwrap_or_default()
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if self.rx.is_none() {
            return;
        }
        let claims = self.leave();
        if !claims.is_empty() {
            let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            state.requeue(claims);
            state.serve();
        }
    }
}

struct Fetcher {
    queue: String,
    topic: String,
    consumer: Box<dyn Consumer>,
    shared: Arc<Shared>,
    settled: mpsc::UnboundedReceiver<Vec<(u32, u64)>>,
    prefetch: usize,
    offsets: OffsetTracker,
    last_commit: std::time::Instant,
}

impl Fetcher {
    async fn run(mut self) {
        loop {
            while let Ok(settled) = self.settled.try_recv() {
                self.mark_settled(settled);
            }
            // On an interval rather than per fetch: a commit is an fsync in front of the next
            // fetch, and a redelivered attempt is harmless (the engine refuses a second start).
            if self.last_commit.elapsed() >= COMMIT_INTERVAL {
                self.last_commit = std::time::Instant::now();
                self.commit().await;
            }

            let want = {
                let state = self.shared.state.lock().expect("dispatch lock");
                let want = state
                    .demand()
                    .max(self.prefetch)
                    .saturating_sub(state.buffer.len());
                want.min(MAX_FETCH)
            };
            if want == 0 {
                // Buffer full and nobody waiting: idle until a poll drains it or claims settle.
                tokio::select! {
                    () = self.shared.demand.notified() => {}
                    Some(settled) = self.settled.recv() => self.mark_settled(settled),
                }
                continue;
            }
            match self.consumer.poll(want, FETCH_WAIT).await {
                Ok(records) if records.is_empty() => {}
                Ok(records) => {
                    let mut claims = Vec::with_capacity(records.len());
                    for record in records {
                        if !self.offsets.fetched(record.partition, record.offset) {
                            // Delivered again while still buffered or handed out here.
                            continue;
                        }
                        match serde_json::from_slice::<TaskDispatch>(&record.payload) {
                            Ok(dispatch) => {
                                self.offsets.hold(record.partition, record.offset);
                                claims.push(Claim {
                                    partition: record.partition,
                                    offset: record.offset,
                                    dispatch,
                                });
                            }
                            Err(e) => tracing::warn!(
                                queue = %self.queue,
                                partition = record.partition,
                                offset = record.offset,
                                error = %e,
                                "skipping undecodable task record"
                            ),
                        }
                    }
                    let mut state = self.shared.state.lock().expect("dispatch lock");
                    state.buffer.extend(claims);
                    state.serve();
                }
                Err(e) => {
                    tracing::warn!(queue = %self.queue, error = %e, "polling tasks failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    fn mark_settled(&mut self, settled: Vec<(u32, u64)>) {
        for (partition, offset) in settled {
            self.offsets.settle(partition, offset);
        }
    }

    async fn commit(&mut self) {
        let offsets = self.offsets.to_commit(&self.topic);
        if offsets.is_empty() {
            return;
        }
        match self.consumer.commit(&offsets).await {
            Ok(()) => self.offsets.committed(&offsets),
            Err(e) => tracing::warn!(queue = %self.queue, error = %e, "committing offsets failed"),
        }
    }
}
