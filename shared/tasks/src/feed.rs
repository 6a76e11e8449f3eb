//! [`TaskFeed`]: one consumer-group member's share of a queue's topic.
//!
//! A fetcher task owns the group consumer. It reads records in batches into a buffer and
//! serves waiting takers in arrival order (each takes up to its `max`); a take that finds
//! nothing waits on a oneshot the fetcher completes the moment records arrive, so nothing
//! sleeps in a loop. Settled offsets travel back to the fetcher, which commits each partition
//! up to its lowest unsettled record every [`COMMIT_INTERVAL`] (and once more on
//! [`TaskFeed::close`]).
//!
//! Rebalances: after each poll the fetcher drops buffered claims (and bookkeeping) of
//! partitions it no longer owns; their next owner reads them from the committed offset. A
//! record delivered twice (to two members around a rebalance, or after a crash) costs one
//! more `StartTask`, which the engine rejects: a started attempt cannot be started again.

use distorch_domain::topics::TaskDispatch;
use distorch_eventlog::offsets::{COMMIT_INTERVAL, OffsetTracker};
use distorch_eventlog::{Consumer, EventLog, LogError, Record};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long one consumer poll waits for records; bounds how late settled offsets are
/// committed while the buffer is empty.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// Upper bound of records fetched at once.
const MAX_FETCH: usize = 4096;
/// While the buffer is full the fetcher still polls (for one record) this often: a Kafka
/// member that stops polling is dropped from its group after `max.poll.interval.ms`, and
/// rebalances are served only inside a poll.
const KEEPALIVE_POLL: Duration = Duration::from_secs(1);
/// How often the fetcher looks for a topic that does not exist yet.
const TOPIC_WAIT: Duration = Duration::from_secs(1);
/// Pauses after failures to join or poll: doubling from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// What a [`TaskFeed`] consumes.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// The queue's topic (`<prefix>.tasks.<queue>`). The feed never creates it: until it
    /// exists (the engine creates it with the queue's first task) the feed waits for it.
    pub topic: String,
    /// The consumer group; the broker shares the topic's partitions among its members.
    pub group: String,
    /// Records kept decoded ahead of demand.
    pub prefetch: usize,
}

/// A dispatch record taken from the queue and not yet settled.
#[derive(Debug, Clone)]
pub struct Claim {
    /// Partition of the queue's topic the dispatch record was read from.
    pub partition: u32,
    /// Offset of the dispatch record; settling the claim lets the feed commit past it.
    pub offset: u64,
    /// The decoded dispatch: the task attempt to start.
    pub dispatch: TaskDispatch,
    /// The `StartTask` sent for it that got no answer; the next start asks again with it.
    pub(crate) pending: Option<PendingStart>,
}

/// A `StartTask` that was appended but not answered: asked again exactly as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingStart {
    pub id: String,
    pub worker_id: String,
    pub replaces: Option<String>,
}

/// One consumer-group member's share of a queue's topic (see the module docs).
pub struct TaskFeed {
    topic: String,
    shared: Arc<Shared>,
    settled: mpsc::UnboundedSender<(u32, u64)>,
    stop: watch::Sender<bool>,
    rejoin: Arc<AtomicBool>,
    fetcher: Option<JoinHandle<()>>,
}

/// What a [`TaskFeed`] holds of its topic right now (see [`TaskFeed::share`]); API replicas
/// tell each other theirs in their heartbeats.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Share {
    /// The partitions the group assigned to this member, ascending.
    pub partitions: Vec<u32>,
    /// Claims buffered and waiting for a taker.
    pub buffered: usize,
}

impl std::fmt::Debug for TaskFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFeed")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Drop for TaskFeed {
    fn drop(&mut self) {
        // Not closed: stop at once. Dropping the consumer leaves the group; uncommitted
        // records go to the next owner.
        if let Some(fetcher) = self.fetcher.take() {
            fetcher.abort();
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Wakes a fetcher that idles because the buffer is full and nobody waits.
    demand: Notify,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct State {
    buffer: VecDeque<Claim>,
    waiters: VecDeque<Waiter>,
    next_waiter: u64,
    /// The partitions of the topic this member owned as of its last poll, ascending.
    held: Vec<u32>,
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

impl TaskFeed {
    /// Joins `config.group` on `config.topic` in the background and starts fetching.
    pub fn start(log: Arc<dyn EventLog>, config: FeedConfig) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            demand: Notify::new(),
        });
        let (settled, settled_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let rejoin = Arc::new(AtomicBool::new(false));
        let fetcher = Fetcher {
            rejoin: rejoin.clone(),
            log,
            topic: config.topic.clone(),
            group: config.group,
            shared: shared.clone(),
            settled: settled_rx,
            stop: stop_rx,
            prefetch: config.prefetch.max(1),
            consumer: None,
            offsets: OffsetTracker::default(),
            last_commit: Instant::now(),
            last_poll: Instant::now(),
        };
        Self {
            topic: config.topic,
            shared,
            settled,
            stop,
            rejoin,
            fetcher: Some(tokio::spawn(fetcher.run())),
        }
    }

    /// The partitions this member holds and the claims it has buffered for nobody.
    pub fn share(&self) -> Share {
        let state = self.shared.state();
        Share {
            partitions: state.held.clone(),
            buffered: state.buffer.len(),
        }
    }

    /// Leaves the group and joins it again, which makes the broker rebalance: for a member
    /// that learns another member died, on a broker that keeps a dead member in its group
    /// until someone rejoins. What this member has settled is committed first; its
    /// buffered claims go back to the group.
    pub fn rejoin(&self) {
        self.rejoin.store(true, Ordering::Relaxed);
        self.shared.demand.notify_one();
    }

    /// The topic consumed.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Up to `max` claims: those buffered now, or else the first to arrive within `wait`;
    /// empty when the wait ends. Every claim returned MUST be settled, started (see
    /// [`Starter::start`](crate::Starter::start)) or given back with
    /// [`requeue`](Self::requeue). Dropping the future mid-wait loses nothing.
    pub async fn take(&self, max: usize, wait: Duration) -> Vec<Claim> {
        let max = max.max(1);
        let (id, rx) = {
            let mut state = self.shared.state();
            if !state.buffer.is_empty() {
                let n = max.min(state.buffer.len());
                let claims = state.buffer.drain(..n).collect();
                drop(state);
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
        let mut guard = WaitGuard {
            shared: &self.shared,
            id,
            rx: Some(rx),
        };
        let rx = guard.rx.as_mut().expect("receiver present");
        match tokio::time::timeout(wait, rx).await {
            Ok(claims) => {
                guard.rx = None;
                claims.unwrap_or_default()
            }
            Err(_) => guard.leave(),
        }
    }

    /// Gives claims back, in order, at the front of the buffer: the next take gets them.
    pub fn requeue(&self, claims: Vec<Claim>) {
        if claims.is_empty() {
            return;
        }
        let mut state = self.shared.state();
        state.requeue(claims);
        state.serve();
    }

    /// The claim's record is done with: its offset may be committed. A feed that has
    /// stopped commits nothing more, and the record is then delivered again.
    pub fn settle(&self, claim: &Claim) {
        let _ = self.settled.send((claim.partition, claim.offset));
    }

    /// A handle that settles `claim` later, from anywhere.
    pub fn settler(&self, claim: &Claim) -> Settle {
        Settle {
            tx: self.settled.clone(),
            partition: claim.partition,
            offset: claim.offset,
        }
    }

    /// Commits what is settled and leaves the group. Call once every claim taken has been
    /// settled (or abandoned: it is then delivered again to the group).
    pub async fn close(mut self) {
        self.stop.send_replace(true);
        if let Some(fetcher) = self.fetcher.take()
            && let Err(e) = fetcher.await
        {
            tracing::error!(topic = %self.topic, error = %e, "task fetcher failed");
        }
    }
}

/// The right to settle one claim later, from anywhere: call [`Settle::settle`] (dropping it
/// settles nothing, and the record is then delivered again). See [`TaskFeed::settler`].
#[derive(Debug)]
pub struct Settle {
    tx: mpsc::UnboundedSender<(u32, u64)>,
    partition: u32,
    offset: u64,
}

impl Settle {
    /// Settles the claim, like [`TaskFeed::settle`]; does nothing once the feed has stopped.
    pub fn settle(self) {
        let _ = self.tx.send((self.partition, self.offset));
    }
}

/// Leaves the waiter queue however a wait ends. Claims sent to a take that is then dropped
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
        let mut state = self.shared.state();
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
            let mut state = self.shared.state();
            state.requeue(claims);
            state.serve();
        }
    }
}

struct Fetcher {
    log: Arc<dyn EventLog>,
    rejoin: Arc<AtomicBool>,
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
            if self.rejoin.swap(false, Ordering::Relaxed) && self.consumer.is_some() {
                self.commit().await;
                self.leave();
                tracing::info!(group = %self.group, topic = %self.topic, "rejoining the queue's consumer group");
            }
            if self.consumer.is_none() {
                let joined = tokio::select! {
                    biased;
                    _ = self.stop.changed() => continue,
                    r = self.log.consumer(&self.group, std::slice::from_ref(&self.topic)) => r,
                };
                match joined {
                    Ok(consumer) => {
                        tracing::info!(group = %self.group, topic = %self.topic, "joined the queue's consumer group");
                        self.consumer = Some(consumer);
                        failures = 0;
                    }
                    Err(LogError::UnknownTopic(_)) => {
                        if !waiting_for_topic {
                            tracing::info!(topic = %self.topic, "waiting for the task topic to be created");
                            waiting_for_topic = true;
                        }
                        self.sleep(TOPIC_WAIT).await;
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

            let (buffered, mut want) = {
                let state = self.shared.state();
                let buffered = state.buffer.len();
                let want = state.demand().max(self.prefetch).saturating_sub(buffered);
                (buffered, want.min(MAX_FETCH))
            };
            if want == 0 {
                // Full and nobody waiting: idle until a take drains the buffer, but keep the
                // membership alive while the excess stays small.
                if self.last_poll.elapsed() < KEEPALIVE_POLL || buffered >= 2 * self.prefetch {
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
            let polled = tokio::select! {
                biased;
                _ = self.stop.changed() => continue,
                r = consumer.poll(want, wait) => r,
            };
            match polled {
                Ok(records) => {
                    failures = 0;
                    self.accept(records);
                }
                Err(e) => {
                    // The member cannot go on: rejoin. What it had not committed is delivered
                    // again, to this member or another.
                    self.leave();
                    self.pause(
                        &mut failures,
                        &e,
                        "polling the task topic failed; rejoining",
                    )
                    .await;
                }
            }
        }
        // Stopping: the caller has settled everything it will settle.
        self.drain_settled();
        self.commit().await;
        if self.consumer.take().is_some() {
            // Dropped: it left the group, so the remaining members take over at once.
            tracing::info!(group = %self.group, topic = %self.topic, "left the queue's consumer group");
        }
    }

    async fn sleep(&mut self, how_long: Duration) {
        tokio::select! {
            _ = self.stop.changed() => {}
            () = tokio::time::sleep(how_long) => {}
        }
    }

    async fn pause(&mut self, failures: &mut u32, error: &LogError, what: &str) {
        let delay = RETRY_FIRST
            .saturating_mul(1 << (*failures).min(8))
            .min(RETRY_MAX);
        *failures = failures.saturating_add(1);
        tracing::warn!(topic = %self.topic, %error, retry_in = ?delay, "{what}");
        self.sleep(delay).await;
    }

    /// Drops the member (it leaves the group) and everything it held: what it had not
    /// committed is delivered again, to this member once it rejoins or to another.
    fn leave(&mut self) {
        self.consumer = None;
        self.offsets.clear();
        let mut state = self.shared.state();
        state.buffer.clear();
        state.held.clear();
    }

    fn drain_settled(&mut self) {
        while let Ok(settled) = self.settled.try_recv() {
            self.mark_settled(settled);
        }
    }

    fn mark_settled(&mut self, (partition, offset): (u32, u64)) {
        self.offsets.settle(partition, offset);
    }

    /// Buffers new records of the partitions this member owns and serves waiting takers.
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
                // Delivered again while still buffered or in hand here.
                continue;
            }
            match serde_json::from_slice::<TaskDispatch>(&record.payload) {
                Ok(dispatch) => {
                    self.offsets.hold(record.partition, record.offset);
                    claims.push(Claim {
                        partition: record.partition,
                        offset: record.offset,
                        dispatch,
                        pending: None,
                    });
                }
                Err(e) => tracing::warn!(
                    topic = %self.topic,
                    partition = record.partition,
                    offset = record.offset,
                    error = %e,
                    "skipping an undecodable task record"
                ),
            }
        }
        let mut state = self.shared.state();
        state.buffer.retain(|c| owned.contains(&c.partition));
        state.buffer.extend(claims);
        state.held = owned.into_iter().collect();
        state.held.sort_unstable();
        state.serve();
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
                tracing::warn!(topic = %self.topic, error = %e, "committing task offsets failed")
            }
        }
    }
}
