#![warn(missing_docs)]
//! The projector: keeps the read models (what the API queries) up to date with the log.
//!
//! It consumes `distorch.events` and `distorch.definitions` as consumer group `projector`,
//! applies each polled batch to the [`ReadStore`] while it polls the next one, and commits
//! the offsets of applied batches every 250 ms and at shutdown, each time after a flush of
//! the stores (which may write and sync lazily). Delivery is at-least-once and the store's
//! `apply` is idempotent, so a crash between an apply and the commit just re-applies those
//! batches harmlessly. A record that
//! does not decode is logged and skipped (counted in [`ProjectorStats`]) so it cannot stall
//! its partition.
//!
//! With [`Projector::with_analytics`] it also records every event batch into the
//! [`Analytics`] port (task-attempt and run facts), beside the read store's write and before
//! the batch counts as applied; `record` is idempotent like `apply`, so a re-delivered batch
//! is harmless.
//!
//! It talks only to the [`EventLog`], [`ReadStore`] and [`Analytics`] ports: it MUST NOT
//! depend on a backend, on other services, or on a web framework. It creates no topics (their
//! partition counts belong to whoever deploys the log); it waits for them to exist.
//!
//! [`Projector::rebuild`] drops the read models and analytics and replays the whole log into
//! them (`distorch projector --rebuild`), with the projector service stopped.
//!
//! Entry points: [`Projector::new`], [`Projector::with_analytics`], [`Projector::run`],
//! [`Projector::rebuild`], [`Projector::stats`].

mod rebuild;
mod stats;

pub use rebuild::RebuildReport;
pub use stats::ProjectorStats;

use distorch_domain::event::{DefinitionRegistered, EventEnvelope};
use distorch_domain::topics::Topics;
use distorch_eventlog::offsets::COMMIT_INTERVAL;
use distorch_eventlog::offsets::PacedCommits;
use distorch_eventlog::{Consumer, EventLog, LogError, Record};
use distorch_store::analytics::Analytics;
use distorch_store::{ReadStore, StoreError};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// How long one poll waits for the first record; bounds shutdown and lag-refresh latency.
const POLL_WAIT: Duration = Duration::from_millis(200);
/// End offsets cost a round trip per partition on a broker, so lag is refreshed at most
/// this often rather than after every batch.
const LAG_REFRESH: Duration = Duration::from_secs(1);
/// Batches smaller than this wait up to `linger_ms` ([`LINGER`] by default) for more
/// records, so a busy log is applied in fewer, fuller batches. With a store that writes
/// every batch (each rewriting its runs' views) a longer linger saved CPU, and 25 ms was
/// best; with the embedded store's write-behind a batch costs a fold in memory, and 5 ms
/// answered runs' long-polls sooner (p50 run latency 79–91 ms against 93–103 at 25 ms,
/// 3,000 runs × 10 steps, four runs each) at the same CPU and throughput.
const LINGER_BELOW: usize = 200;
const LINGER: Duration = Duration::from_millis(5);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a [`Projector`] consumes the events and definitions topics; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectorConfig {
    /// Consumer group; two projectors in one group share partitions, in two groups each
    /// builds its own read model.
    pub group: String,
    /// Most records applied in one store write.
    pub batch: usize,
    /// How long a small batch waits for more records (see [`LINGER`], the default). A store
    /// that writes every batch at once (ScyllaDB, or SQLite shared by several projectors)
    /// does better with about 25.
    pub linger_ms: u64,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            group: "projector".into(),
            batch: 2000,
            linger_ms: LINGER.as_millis() as u64,
        }
    }
}

/// Why a projector stopped or a rebuild failed. The live projector retries retryable
/// failures itself, so those it returns are the ones retrying does not fix.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// An event log call (join, poll, commit, read) failed.
    #[error("event log: {0}")]
    Log(#[from] LogError),
    /// The read store failed to apply a batch, flush or reset.
    #[error("read store: {0}")]
    Store(#[from] StoreError),
    /// The analytics store (see [`Projector::with_analytics`]) failed to record a batch,
    /// flush or reset.
    #[error("analytics: {0}")]
    Analytics(StoreError),
}

impl ProjectorError {
    /// Whether restarting the projector may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProjectorError::Log(e) => e.is_retryable(),
            ProjectorError::Store(e) | ProjectorError::Analytics(e) => e.is_retryable(),
        }
    }
}

/// Folds the events and definitions topics into the read store (and, optionally, analytics)
/// in its own consumer group. Started with [`Projector::run`].
pub struct Projector {
    log: Arc<dyn EventLog>,
    store: Arc<dyn ReadStore>,
    analytics: Option<Arc<dyn Analytics>>,
    topics: Topics,
    config: ProjectorConfig,
    stats: ProjectorStats,
}

/// A polled batch, decoded and split by topic.
#[derive(Default)]
struct Batch {
    events: Vec<EventEnvelope>,
    definitions: Vec<DefinitionRegistered>,
    /// Next offset to commit per partition.
    offsets: HashMap<(String, u32), u64>,
    newest_timestamp_ms: Option<i64>,
}

impl Projector {
    /// A projector without analytics that does nothing until [`Projector::run`] (or
    /// [`Projector::rebuild`]).
    pub fn new(
        log: Arc<dyn EventLog>,
        store: Arc<dyn ReadStore>,
        topics: Topics,
        config: ProjectorConfig,
    ) -> Self {
        Self {
            log,
            store,
            analytics: None,
            topics,
            config,
            stats: ProjectorStats::default(),
        }
    }

    /// Also records every event batch into `analytics`.
    pub fn with_analytics(mut self, analytics: Arc<dyn Analytics>) -> Self {
        self.analytics = Some(analytics);
        self
    }

    /// A handle on progress and lag; stays valid after `run` returns.
    pub fn stats(&self) -> ProjectorStats {
        self.stats.clone()
    }

    /// Projects until `shutdown` completes. Transient log and store failures are retried
    /// with backoff (the batch in hand is kept, so nothing is skipped); an error is returned
    /// only when retrying cannot help. On shutdown the batch in flight, if any, is left
    /// uncommitted and will be delivered again.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ProjectorError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let names = [self.topics.events(), self.topics.definitions()];
        let joining = self.retrying("joining the consumer group", || {
            self.log.consumer(&self.config.group, &names)
        });
        let mut consumer = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            consumer = joining => consumer?,
        };
        tracing::info!(group = %self.config.group, topics = ?names, "projector started");

        let started_ms = now_ms();
        let mut lag = Lag {
            positions: HashMap::new(),
            last_applied_ms: None,
            refreshed: None,
        };
        let mut commits = PacedCommits::new(COMMIT_INTERVAL);
        let mut polled: Vec<Record> = Vec::new();
        loop {
            // Batch N is folded while batch N+1 is polled (and lingers): a cycle takes the
            // longer of the two instead of their sum, so a run's last event reaches the read
            // store sooner. When a commit is due, the flush that must precede it (the
            // stores' lazy writes and syncs) runs after the fold in the same overlap; it
            // covers every batch applied so far, and the offsets taken here cover only
            // batches applied before this one.
            let batch = self.decode(std::mem::take(&mut polled));
            let due = commits.due(Instant::now().into_std());
            let step = tokio::select! {
                biased;
                () = &mut shutdown => None,
                step = async {
                    tokio::join!(
                        async {
                            self.apply(&batch).await?;
                            Ok::<_, ProjectorError>(match &due {
                                Some(_) => Some(self.flush().await),
                                None => None,
                            })
                        },
                        self.next_records(&mut *consumer)
                    )
                } => Some(step),
            };
            let Some((applied, next)) = step else {
                if let Some(offsets) = &due {
                    commits.restore(offsets);
                }
                break;
            };
            let flushed = match applied {
                Ok(flushed) => flushed,
                Err(e) => {
                    if let Some(offsets) = &due {
                        commits.restore(offsets);
                    }
                    return Err(e);
                }
            };
            if !batch.offsets.is_empty() {
                for ((topic, partition), next) in &batch.offsets {
                    commits.handled_before(topic, *partition, *next);
                }
                lag.positions.extend(batch.offsets);
                lag.last_applied_ms = batch.newest_timestamp_ms.or(lag.last_applied_ms);
            }
            // A failed flush or commit keeps its offsets for the next one; at worst a
            // restart applies those events again, which `apply` and `record` make harmless.
            if let (Some(offsets), Some(flushed)) = (due, flushed) {
                let committed = match flushed {
                    Ok(()) => commits
                        .commit(&mut *consumer, offsets)
                        .await
                        .map_err(ProjectorError::from),
                    Err(e) => {
                        commits.restore(&offsets);
                        Err(e)
                    }
                };
                if let Err(e) = committed {
                    if !e.is_retryable() {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, "offset commit failed; will retry");
                }
            }
            match next {
                Ok(records) => polled = records,
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "poll failed; retrying");
                    if self.nap(&mut shutdown, MIN_BACKOFF).await {
                        break;
                    }
                }
                Err(e) => return Err(e.into()),
            }
            if lag
                .refreshed
                .is_none_or(|at: Instant| at.elapsed() >= LAG_REFRESH)
            {
                lag.refreshed = Some(Instant::now());
                if let Err(e) = self
                    .refresh_lag(consumer.assignment(), &mut lag, started_ms)
                    .await
                {
                    tracing::debug!(error = %e, "could not measure lag");
                }
            }
        }
        let rest = commits.take();
        if let Err(e) = self.commit(&mut commits, &mut *consumer, rest).await {
            tracing::warn!(error = %e, "last offset commit failed; those events will be applied again");
        }
        tracing::info!("projector stopped");
        Ok(())
    }

    /// The next records to apply: what one poll returns, a small batch topped up for a
    /// moment: fewer, fuller batches cost less than many tiny ones, above all with a store
    /// that writes every batch (each rewriting its runs' views).
    async fn next_records(&self, consumer: &mut dyn Consumer) -> Result<Vec<Record>, LogError> {
        let max = self.config.batch.max(1);
        let mut records = consumer.poll(max, POLL_WAIT).await?;
        if !records.is_empty() && records.len() < LINGER_BELOW {
            tokio::time::sleep(Duration::from_millis(self.config.linger_ms)).await;
            if let Ok(more) = consumer
                .poll(max.saturating_sub(records.len()), Duration::ZERO)
                .await
            {
                records.extend(more);
            }
        }
        Ok(records)
    }

    fn decode(&self, records: Vec<Record>) -> Batch {
        let events_topic = self.topics.events();
        let mut batch = Batch::default();
        for record in records {
            let next = batch
                .offsets
                .entry((record.topic.clone(), record.partition))
                .or_default();
            *next = (*next).max(record.offset + 1);
            batch.newest_timestamp_ms = batch.newest_timestamp_ms.max(Some(record.timestamp_ms));
            let decoded = if record.topic == events_topic {
                serde_json::from_slice(&record.payload).map(|e| batch.events.push(e))
            } else {
                serde_json::from_slice(&record.payload).map(|d| batch.definitions.push(d))
            };
            if let Err(e) = decoded {
                self.stats.undecodable();
                tracing::error!(
                    topic = %record.topic, partition = record.partition, offset = record.offset,
                    key = %record.key, error = %e, "skipping a record that does not decode"
                );
            }
        }
        batch
    }

    /// Commits `offsets` (taken from `commits`) once what they cover is durable in the read
    /// store and analytics (see [`Self::flush`]). On failure the offsets stay pending.
    async fn commit(
        &self,
        commits: &mut PacedCommits,
        consumer: &mut dyn Consumer,
        offsets: Vec<(String, u32, u64)>,
    ) -> Result<(), ProjectorError> {
        if offsets.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.flush().await {
            commits.restore(&offsets);
            return Err(e);
        }
        Ok(commits.commit(consumer, offsets).await?)
    }

    /// Makes everything applied so far durable in the read store and analytics, which may
    /// write and sync lazily: a commit past a write that a crash or power loss then takes
    /// would skip those records for good.
    async fn flush(&self) -> Result<(), ProjectorError> {
        let analytics = async {
            match &self.analytics {
                Some(analytics) => analytics.flush().await.map_err(ProjectorError::Analytics),
                None => Ok(()),
            }
        };
        let (stored, recorded) = tokio::join!(self.store.flush(), analytics);
        stored.map_err(ProjectorError::Store).and(recorded)
    }

    /// Folds the batch into the read store and into analytics (at the same time: they are
    /// separate stores), each retried until it succeeds: the one apply path of the live
    /// projector and of [`Projector::rebuild`].
    async fn apply(&self, batch: &Batch) -> Result<(), ProjectorError> {
        if !batch.definitions.is_empty() {
            self.retrying("applying definitions", || {
                self.store.apply_definitions(&batch.definitions)
            })
            .await?;
        }
        if batch.events.is_empty() {
            return Ok(());
        }
        let store = self.retrying("applying events", || self.store.apply(&batch.events));
        let analytics = async {
            match &self.analytics {
                Some(analytics) => {
                    self.retrying("recording analytics", || async {
                        analytics
                            .record(&batch.events)
                            .await
                            .map_err(ProjectorError::Analytics)
                    })
                    .await
                }
                None => Ok(()),
            }
        };
        let (stored, recorded) = tokio::join!(store, analytics);
        stored?;
        recorded?;
        self.stats
            .applied(batch.events.len(), batch.definitions.len());
        Ok(())
    }

    /// Calls `op` until it succeeds, backing off on retryable errors; an unknown topic counts
    /// as retryable because the log's owner may create it after we start. Shutdown cancels
    /// the caller's future, and with it the waiting.
    async fn retrying<T, E, F, Fut>(&self, what: &str, mut op: F) -> Result<T, ProjectorError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Into<ProjectorError>,
    {
        let mut backoff = MIN_BACKOFF;
        loop {
            let err = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e.into(),
            };
            let waiting_for_topic = matches!(err, ProjectorError::Log(LogError::UnknownTopic(_)));
            if !err.is_retryable() && !waiting_for_topic {
                return Err(err);
            }
            if let ProjectorError::Store(_) | ProjectorError::Analytics(_) = err {
                self.stats.store_failed();
            }
            tracing::warn!(error = %err, "{what} failed; retrying in {backoff:?}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Sleeps unless shutdown comes first; true on shutdown.
    async fn nap(&self, shutdown: &mut (impl Future<Output = ()> + Unpin), d: Duration) -> bool {
        tokio::select! {
            () = shutdown => true,
            () = tokio::time::sleep(d) => false,
        }
    }

    async fn refresh_lag(
        &self,
        assignment: Vec<(String, u32)>,
        lag: &mut Lag,
        started_ms: i64,
    ) -> Result<(), LogError> {
        let mut behind = 0;
        for (topic, partition) in assignment {
            let end = self.log.end_offset(&topic, partition).await?;
            let key = (topic, partition);
            let position = match lag.positions.get(&key) {
                Some(p) => *p,
                None => {
                    let committed = self
                        .log
                        .committed(&self.config.group, &key.0, key.1)
                        .await?
                        .unwrap_or(0);
                    lag.positions.insert(key, committed);
                    committed
                }
            };
            behind += end.saturating_sub(position);
        }
        // Before the first batch, "behind since we started" is the best lower bound known.
        let reference = lag.last_applied_ms.unwrap_or(started_ms);
        let seconds = if behind > 0 {
            (now_ms() - reference).max(0) as f64 / 1000.0
        } else {
            0.0
        };
        self.stats.set_lag(behind, seconds);
        Ok(())
    }
}

/// What the lag gauges are computed from.
struct Lag {
    /// Next offset to apply per partition (committed or applied in this run).
    positions: HashMap<(String, u32), u64>,
    /// Log timestamp of the newest applied record.
    last_applied_ms: Option<i64>,
    refreshed: Option<Instant>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
