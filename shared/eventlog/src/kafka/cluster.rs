//! What the log asks the cluster about topics and groups: partition counts (cached),
//! topic creation, end offsets and committed offsets.
//!
//! librdkafka's metadata, watermark and offset calls block the calling thread, so they run
//! on tokio's blocking pool; the admin client's calls are futures already.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, Producer as _};
use rdkafka::{Offset, TopicPartitionList};

use super::config::KafkaConfig;
use super::error::{is_unknown_topic, log_error};
use crate::{LogError, Result};

/// Upper bound of one request to the cluster (metadata, offsets, topic creation).
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a freshly created topic's metadata is looked up until brokers report it.
const VISIBLE_POLL: Duration = Duration::from_millis(100);
/// Clients kept for `committed` lookups; a process asks about a handful of groups.
const MAX_LOOKUP_GROUPS: usize = 32;

pub(super) struct Cluster {
    config: KafkaConfig,
    /// The producer's client doubles as the metadata and watermark client: one connection
    /// set fewer.
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Partition counts never change (the contract), so one lookup per topic suffices.
    partitions: RwLock<HashMap<String, u32>>,
    /// A group-bound client per group for `committed` (librdkafka fetches offsets only for
    /// the consumer's own `group.id`); these never join their group.
    lookups: Mutex<HashMap<String, Arc<BaseConsumer>>>,
}

impl Cluster {
    pub(super) fn new(config: KafkaConfig, producer: FutureProducer) -> Result<Self> {
        let admin = config
            .admin()
            .create()
            .map_err(|e| LogError::Invalid(format!("Kafka admin client: {e}")))?;
        Ok(Self {
            config,
            producer,
            admin,
            partitions: RwLock::default(),
            lookups: Mutex::default(),
        })
    }

    pub(super) fn config(&self) -> &KafkaConfig {
        &self.config
    }

    pub(super) fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// The partition count of `topic`; `UnknownTopic` when it does not exist.
    pub(super) async fn partitions(self: &Arc<Self>, topic: &str) -> Result<u32> {
        let cached = self
            .partitions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .copied();
        if let Some(n) = cached {
            return Ok(n);
        }
        let n = self
            .lookup_partitions(topic)
            .await?
            .ok_or_else(|| LogError::UnknownTopic(topic.to_owned()))?;
        self.remember(topic, n);
        Ok(n)
    }

    /// Checks that `partition` exists in `topic`.
    pub(super) async fn check_partition(
        self: &Arc<Self>,
        topic: &str,
        partition: u32,
    ) -> Result<()> {
        let partitions = self.partitions(topic).await?;
        if partition < partitions {
            Ok(())
        } else {
            Err(LogError::UnknownPartition {
                topic: topic.to_owned(),
                partitions,
                partition,
            })
        }
    }

    /// A call failed because `topic` is gone (deleted behind our back): forget its count.
    pub(super) fn forget(&self, topic: &str) -> LogError {
        self.partitions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(topic);
        LogError::UnknownTopic(topic.to_owned())
    }

    fn remember(&self, topic: &str, partitions: u32) {
        self.partitions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.to_owned(), partitions);
    }

    /// Asks the cluster; `None` when the topic does not exist.
    async fn lookup_partitions(self: &Arc<Self>, topic: &str) -> Result<Option<u32>> {
        let this = Arc::clone(self);
        let name = topic.to_owned();
        let metadata = match blocking(move || {
            this.producer
                .client()
                .fetch_metadata(Some(&name), REQUEST_TIMEOUT)
        })
        .await?
        {
            Ok(metadata) => metadata,
            Err(e) if is_unknown_topic(&e) => return Ok(None),
            Err(e) => return Err(log_error(format_args!("metadata of topic {topic:?}"), &e)),
        };
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        let partitions = u32::try_from(found.partitions().len()).unwrap_or(u32::MAX);
        match found.error().map(RDKafkaErrorCode::from) {
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                Ok(None)
            }
            // A topic still being created reports "leader not available" with or without its
            // partitions; only a count is trustworthy.
            Some(err) if partitions == 0 => Err(LogError::Storage(format!(
                "metadata of topic {topic:?}: {err}"
            ))),
            _ if partitions == 0 => Ok(None),
            _ => Ok(Some(partitions)),
        }
    }

    pub(super) async fn create_topic(self: &Arc<Self>, topic: &str, partitions: u32) -> Result<()> {
        let count = i32::try_from(partitions)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                LogError::Invalid(format!(
                    "topic {topic:?} needs between 1 and {} partitions, not {partitions}",
                    i32::MAX
                ))
            })?;
        // -1: the broker's default.replication.factor (KIP-464).
        let replication = self.config.replication_factor.map_or(-1, i32::from);
        let new = NewTopic::new(topic, count, TopicReplication::Fixed(replication));
        let options = AdminOptions::new()
            .request_timeout(Some(REQUEST_TIMEOUT))
            .operation_timeout(Some(REQUEST_TIMEOUT));
        let what = format!("create topic {topic:?} with {partitions} partitions");
        let results = self
            .admin
            .create_topics([&new], &options)
            .await
            .map_err(|e| log_error(&what, &e))?;
        match results.into_iter().next() {
            Some(Ok(_)) => {}
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {
                let existing = self.wait_until_visible(topic).await?;
                if existing != partitions {
                    return Err(LogError::PartitionMismatch {
                        topic: topic.to_owned(),
                        existing,
                        requested: partitions,
                    });
                }
                return Ok(());
            }
            Some(Err((
                _,
                code @ (RDKafkaErrorCode::InvalidPartitions
                | RDKafkaErrorCode::InvalidReplicationFactor
                | RDKafkaErrorCode::InvalidReplicaAssignment
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::InvalidConfig
                | RDKafkaErrorCode::PolicyViolation),
            ))) => return Err(LogError::Invalid(format!("{what}: {code}"))),
            Some(Err((_, code))) => {
                return Err(log_error(&what, &rdkafka::error::KafkaError::AdminOp(code)));
            }
            None => {
                return Err(LogError::Storage(format!(
                    "{what}: the broker sent no result"
                )));
            }
        }
        // CreateTopics returns once the controller has the topic; other brokers (and our
        // metadata cache) learn of it a moment later. Wait, so the next call can use it.
        let visible = self.wait_until_visible(topic).await?;
        if visible != partitions {
            return Err(LogError::PartitionMismatch {
                topic: topic.to_owned(),
                existing: visible,
                requested: partitions,
            });
        }
        Ok(())
    }

    /// The partition count of a topic that exists (or is being created), once metadata
    /// reports it.
    async fn wait_until_visible(self: &Arc<Self>, topic: &str) -> Result<u32> {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            match self.lookup_partitions(topic).await {
                Ok(Some(n)) => {
                    self.remember(topic, n);
                    return Ok(n);
                }
                Ok(None) | Err(LogError::Storage(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(VISIBLE_POLL).await;
                }
                Ok(None) => {
                    return Err(LogError::Storage(format!(
                        "topic {topic:?} was created but brokers did not report it within {REQUEST_TIMEOUT:?}"
                    )));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `(low, high)` watermarks: the first stored offset and the next offset to be written.
    pub(super) async fn watermarks(
        self: &Arc<Self>,
        topic: &str,
        partition: u32,
    ) -> Result<(u64, u64)> {
        let this = Arc::clone(self);
        let name = topic.to_owned();
        let result = blocking(move || {
            this.producer.client().fetch_watermarks(
                &name,
                kafka_partition(partition),
                REQUEST_TIMEOUT,
            )
        })
        .await?;
        match result {
            Ok((low, high)) => Ok((offset(low), offset(high))),
            Err(e) if is_unknown_topic(&e) => Err(self.forget(topic)),
            Err(e) => Err(log_error(
                format_args!("end offset of topic {topic:?} partition {partition}"),
                &e,
            )),
        }
    }

    pub(super) async fn committed(
        self: &Arc<Self>,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>> {
        let client = self.lookup_client(group)?;
        let mut list = TopicPartitionList::new();
        list.add_partition(topic, kafka_partition(partition));
        let result = blocking(move || {
            let result = client.committed_offsets(list, REQUEST_TIMEOUT);
            // Serve (and so discard) the client's queued events; nobody else polls it.
            let _ = client.poll(Duration::ZERO);
            result
        })
        .await?;
        let what =
            format!("committed offset of group {group:?} on topic {topic:?} partition {partition}");
        let list = match result {
            Ok(list) => list,
            Err(e) if is_unknown_topic(&e) => return Err(self.forget(topic)),
            Err(e) => return Err(log_error(&what, &e)),
        };
        let Some(element) = list.find_partition(topic, kafka_partition(partition)) else {
            return Err(LogError::Storage(format!(
                "{what}: the broker did not answer for it"
            )));
        };
        if let Err(e) = element.error() {
            return Err(if is_unknown_topic(&e) {
                self.forget(topic)
            } else {
                log_error(&what, &e)
            });
        }
        Ok(match element.offset() {
            Offset::Offset(n) => Some(offset(n)),
            _ => None,
        })
    }

    fn lookup_client(&self, group: &str) -> Result<Arc<BaseConsumer>> {
        let mut lookups = self.lookups.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = lookups.get(group) {
            return Ok(Arc::clone(client));
        }
        if lookups.len() >= MAX_LOOKUP_GROUPS {
            drop_off_runtime(std::mem::take(&mut *lookups));
        }
        let client: BaseConsumer = self
            .config
            .group_lookup(group)
            .create()
            .map_err(|e| LogError::Invalid(format!("Kafka client for group {group:?}: {e}")))?;
        let client = Arc::new(client);
        lookups.insert(group.to_owned(), Arc::clone(&client));
        Ok(client)
    }
}

/// Runs a blocking librdkafka call on tokio's blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LogError::Storage(format!("Kafka client call did not finish: {e}")))
}

/// Drops a librdkafka client off the async worker threads when there are any: closing a
/// consumer that has a `group.id` waits for the broker (leaving the group).
pub(super) fn drop_off_runtime<T: Send + 'static>(client: T) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn_blocking(move || drop(client));
    }
}

/// Our partition numbers are `u32`, Kafka's `i32`; topics are created with at most
/// `i32::MAX` partitions, so the conversion saturates only for partitions that cannot exist.
pub(super) fn kafka_partition(partition: u32) -> i32 {
    i32::try_from(partition).unwrap_or(i32::MAX)
}

/// Kafka offsets are `i64` with negative sentinels; real offsets are never negative.
pub(super) fn offset(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}
