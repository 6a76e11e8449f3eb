//! [`Consumer`] of a Kafka consumer group: a subscribed `StreamConsumer` that commits by hand.
//!
//! The broker decides which partitions a member owns and changes that whenever members come
//! and go. librdkafka tells us inside `poll` (its rebalance callback runs on the polling
//! task), and [`Member`] records the assignment there, so:
//! - [`Consumer::assignment`] is current after every `poll`;
//! - `poll` drops records of partitions revoked while it ran (librdkafka already discards
//!   what it prefetched for them; this also covers a batch straddling a rebalance);
//! - `commit` skips partitions this member no longer owns, and treats "the group moved on"
//!   answers as a lost race: the new owner starts from the last successful commit, so those
//!   records are delivered again (at least once), which the contract allows;
//! - a member asked to ([`Consumer::rejoin_when_orphaned`]) watches the partitions it does
//!   not own and leaves and rejoins its group when one looks orphaned ([`super::orphans`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::time::{Instant, timeout_at};

use super::cluster::{Cluster, blocking, drop_off_runtime, kafka_partition};
use super::config::KafkaConfig;
use super::error::{is_fatal, is_rebalance, log_error};
use super::message::record;
use super::orphans::OrphanWatch;
use crate::{Consumer, LogError, Record, Result};

/// The group consumer's context: it remembers the assignment after each rebalance.
pub(super) struct Member {
    group: String,
    assigned: Mutex<HashMap<String, BTreeSet<u32>>>,
    /// Rebalances this member (and the ones it replaced on a rejoin) went through.
    rebalances: Arc<AtomicU64>,
}

impl Member {
    fn owns(&self, topic: &str, partition: u32) -> bool {
        self.assigned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .is_some_and(|partitions| partitions.contains(&partition))
    }
}

impl ClientContext for Member {}

impl ConsumerContext for Member {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Error(e) = rebalance {
            tracing::warn!(group = %self.group, error = %e, "Kafka rebalance failed");
        }
        // Ask librdkafka rather than apply the event ourselves: right for eager and
        // cooperative assignment strategies alike (the user may choose either).
        let mut now: HashMap<String, BTreeSet<u32>> = HashMap::new();
        match consumer.assignment() {
            Ok(list) => {
                for element in list.elements() {
                    if let Ok(partition) = u32::try_from(element.partition()) {
                        now.entry(element.topic().to_owned())
                            .or_default()
                            .insert(partition);
                    }
                }
            }
            // Owning nothing is the safe guess: records are then dropped and delivered again.
            Err(e) => tracing::warn!(group = %self.group, error = %e, "Kafka assignment unknown"),
        }
        tracing::info!(group = %self.group, assignment = ?now, "Kafka group assignment changed");
        *self.assigned.lock().unwrap_or_else(PoisonError::into_inner) = now;
        self.rebalances.fetch_add(1, Ordering::Relaxed);
    }
}

/// How often a member that watches for orphaned partitions asks the broker about them.
const ORPHAN_CHECK_EVERY: Duration = Duration::from_secs(1);

pub(super) struct GroupConsumer {
    /// In an `Arc` so blocking calls (commit) can run on tokio's blocking pool, and so drop
    /// (which leaves the group, a network round trip) can too.
    consumer: Option<Arc<StreamConsumer<Member>>>,
    group: String,
    topics: Vec<String>,
    cluster: Arc<Cluster>,
    orphans: OrphanWatch,
    last_orphan_check: Instant,
    rebalances: Arc<AtomicU64>,
}

impl GroupConsumer {
    /// Joins `group` for `topics` (which the caller checked exist). The assignment arrives
    /// during the first polls.
    pub(super) fn join(cluster: Arc<Cluster>, group: &str, topics: &[&str]) -> Result<Self> {
        let rebalances = Arc::new(AtomicU64::new(0));
        let consumer = Self::subscribe(cluster.config(), group, topics, &rebalances)?;
        Ok(Self {
            consumer: Some(Arc::new(consumer)),
            group: group.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            cluster,
            orphans: OrphanWatch::new(Duration::ZERO),
            last_orphan_check: Instant::now(),
            rebalances,
        })
    }

    fn subscribe(
        config: &KafkaConfig,
        group: &str,
        topics: &[&str],
        rebalances: &Arc<AtomicU64>,
    ) -> Result<StreamConsumer<Member>> {
        let member = Member {
            group: group.to_owned(),
            assigned: Mutex::default(),
            rebalances: Arc::clone(rebalances),
        };
        let consumer: StreamConsumer<Member> = config
            .group_member(group)
            .create_with_context(member)
            .map_err(|e| LogError::Invalid(format!("Kafka consumer of group {group:?}: {e}")))?;
        consumer
            .subscribe(topics)
            .map_err(|e| log_error(format_args!("subscribe group {group:?} to {topics:?}"), &e))?;
        Ok(consumer)
    }

    /// Whether a partition of the group's topics that another member owns looks orphaned
    /// (see [`OrphanWatch`]). Broker errors count as "no": the next check asks again.
    async fn orphaned(&mut self) -> bool {
        let owned: HashSet<(String, u32)> = self.assignment().into_iter().collect();
        for topic in &self.topics {
            let Ok(partitions) = self.cluster.partitions(topic).await else {
                continue;
            };
            for p in 0..partitions {
                if owned.contains(&(topic.clone(), p)) {
                    self.orphans.forget(topic, p);
                    continue;
                }
                let Ok((_, end)) = self.cluster.watermarks(topic, p).await else {
                    continue;
                };
                let Ok(committed) = self.cluster.committed(&self.group, topic, p).await else {
                    continue;
                };
                if self
                    .orphans
                    .observe(topic, p, committed, end, std::time::Instant::now())
                {
                    tracing::warn!(
                        group = %self.group,
                        %topic,
                        partition = p,
                        ?committed,
                        end,
                        "partition looks orphaned (records waiting, its commit standing still); \
                         leaving and rejoining the group to force a rebalance"
                    );
                    return true;
                }
            }
        }
        false
    }

    /// Leaves the group and joins it again: the broker rebalances, and the assignment is
    /// empty until the new one arrives in the next polls.
    fn rejoin(&mut self) -> Result<()> {
        if let Some(old) = self.consumer.take() {
            drop_off_runtime(old);
        }
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        let consumer = Self::subscribe(
            self.cluster.config(),
            &self.group,
            &topics,
            &self.rebalances,
        )?;
        self.consumer = Some(Arc::new(consumer));
        // The new member starts with nothing.
        self.rebalances.fetch_add(1, Ordering::Relaxed);
        self.orphans.clear();
        Ok(())
    }

    fn consumer(&self) -> Result<&Arc<StreamConsumer<Member>>> {
        self.consumer.as_ref().ok_or(LogError::Closed)
    }
}

#[async_trait]
impl Consumer for GroupConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>> {
        if self.orphans.enabled() && self.last_orphan_check.elapsed() >= ORPHAN_CHECK_EVERY {
            self.last_orphan_check = Instant::now();
            if self.orphaned().await {
                self.rejoin()?;
            }
        }
        let consumer = Arc::clone(self.consumer()?);
        if max == 0 {
            return Ok(Vec::new());
        }
        let group = &self.group;
        let mut out: Vec<Record> = Vec::new();
        let mut stream = consumer.stream();
        let deadline = Instant::now() + wait;
        // Wait for the first record (serving rebalances meanwhile), then take what is
        // already there.
        while out.is_empty() {
            let Ok(next) = timeout_at(deadline, stream.next()).await else {
                break;
            };
            if let Some(r) = accept(group, next)? {
                out.push(r);
            }
        }
        while !out.is_empty() && out.len() < max {
            match stream.next().now_or_never() {
                Some(next) => {
                    if let Some(r) = accept(group, next)? {
                        out.push(r);
                    }
                }
                None => break,
            }
        }
        drop(stream);
        let member = consumer.context();
        out.retain(|r| member.owns(&r.topic, r.partition));
        Ok(out)
    }

    async fn commit(&mut self, offsets: &[(String, u32, u64)]) -> Result<()> {
        let consumer = Arc::clone(self.consumer()?);
        let member = consumer.context();
        let mut list = TopicPartitionList::new();
        for (topic, partition, next) in offsets {
            if !member.owns(topic, *partition) {
                tracing::debug!(
                    group = %self.group,
                    %topic,
                    partition,
                    "not committing a partition this member no longer owns"
                );
                continue;
            }
            let next = i64::try_from(*next).map_err(|_| {
                LogError::Invalid(format!("offset {next} is beyond Kafka's offset range"))
            })?;
            list.add_partition_offset(topic, kafka_partition(*partition), Offset::Offset(next))
                .map_err(|e| log_error(format_args!("commit group {:?}", self.group), &e))?;
        }
        if list.count() == 0 {
            return Ok(());
        }
        match blocking(move || consumer.commit(&list, CommitMode::Sync)).await? {
            Ok(()) => Ok(()),
            Err(e) if is_rebalance(&e) => {
                tracing::warn!(
                    group = %self.group,
                    error = %e,
                    "commit lost to a rebalance; its records will be delivered again"
                );
                Ok(())
            }
            Err(e) => Err(log_error(format_args!("commit group {:?}", self.group), &e)),
        }
    }

    fn rejoin_when_orphaned(&mut self, after: Duration) {
        self.orphans = OrphanWatch::new(after);
    }

    fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::Relaxed)
    }

    fn assignment(&self) -> Vec<(String, u32)> {
        let Some(consumer) = &self.consumer else {
            return Vec::new();
        };
        let assigned = consumer
            .context()
            .assigned
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<(String, u32)> = assigned
            .iter()
            .flat_map(|(topic, partitions)| partitions.iter().map(|p| (topic.clone(), *p)))
            .collect();
        out.sort_unstable();
        out
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        // Closing leaves the group, so the others take over at once.
        if let Some(consumer) = self.consumer.take() {
            drop_off_runtime(consumer);
        }
    }
}

/// One item of the stream: a record, nothing (a transient error librdkafka recovers from
/// itself), or the error that ends the poll.
fn accept(
    group: &str,
    next: Option<rdkafka::error::KafkaResult<rdkafka::message::BorrowedMessage<'_>>>,
) -> Result<Option<Record>> {
    match next {
        Some(Ok(message)) => Ok(Some(record(&message))),
        Some(Err(e)) if is_fatal(&e) => Err(log_error(format_args!("poll group {group:?}"), &e)),
        Some(Err(e)) => {
            tracing::warn!(%group, error = %e, "Kafka consumer: transient error");
            Ok(None)
        }
        None => Err(LogError::Storage(format!(
            "poll group {group:?}: the consumer stream ended"
        ))),
    }
}
