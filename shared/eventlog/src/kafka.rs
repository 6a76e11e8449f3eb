//! The distributed event log: any broker that speaks the Kafka protocol (Apache Kafka,
//! Redpanda, tansu), through librdkafka (`rdkafka`, bundled).
//!
//! Layout:
//! - `config`: [`KafkaConfig`], its `kafka://` URL, and the librdkafka properties of each
//!   client (the ones that carry the contract are documented there);
//! - `probe`: the first contact, which turns a refused TLS handshake or SASL exchange into one
//!   clear startup error;
//! - `cluster`: partition counts (cached), topic creation, end and committed offsets;
//! - `producer`: `append` through one idempotent producer, partitions chosen by us;
//! - `reader`: `read` through a small pool of group-less consumers positioned by hand;
//! - `group`: [`Consumer`] as a member of a Kafka consumer group, committing by hand;
//! - `orphans`: when a member should rejoin because a dead member's partitions were never
//!   handed on (a broker defect);
//! - `message`, `error`: conversions from librdkafka's types.
//!
//! Guarantees beyond the crate contract: none. Writes are at least once: a failed `append`
//! may have stored part of its batch, and a retried one stores it again; callers deduplicate
//! (command ids). Kafka transactions are not used, so nothing here needs a broker that
//! supports them.

mod cluster;
mod config;
mod error;
mod group;
mod message;
mod orphans;
mod probe;
mod producer;
mod reader;

pub use config::KafkaConfig;

use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

use crate::{Consumer, EventLog, LogError, NewRecord, Position, Record, Result};
use cluster::Cluster;
use group::GroupConsumer;
use reader::Readers;

/// How long [`KafkaLog::connect`] waits for the cluster to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The [`EventLog`] on a Kafka cluster. Cheap to share in an `Arc`.
pub struct KafkaLog {
    cluster: Arc<Cluster>,
    readers: Readers,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field(
                "bootstrap_servers",
                &self.cluster.config().bootstrap_servers,
            )
            .finish_non_exhaustive()
    }
}

impl KafkaLog {
    /// Checks that the cluster answers with the configured security, then creates the
    /// clients: a wrong address fails here after [`CONNECT_TIMEOUT`], and a refused
    /// certificate or password at once, with librdkafka's reason, rather than at the first
    /// append.
    pub async fn connect(config: KafkaConfig) -> Result<Self> {
        probe::probe(&config, CONNECT_TIMEOUT).await?;
        let producer = config
            .producer()
            .create()
            .map_err(|e| LogError::Invalid(format!("Kafka producer: {e}")))?;
        let readers = Readers::new(config.reader());
        let cluster = Arc::new(Cluster::new(config, producer)?);
        Ok(Self { cluster, readers })
    }

    /// [`connect`](Self::connect) with a `kafka://host:port[,host:port][?key=value]` URL.
    pub async fn connect_url(url: &str) -> Result<Self> {
        Self::connect(KafkaConfig::from_url(url)?).await
    }
}

#[async_trait]
impl EventLog for KafkaLog {
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        self.cluster.create_topic(topic, partitions).await
    }

    async fn partitions(&self, topic: &str) -> Result<u32> {
        self.cluster.partitions(topic).await
    }

    async fn append(&self, records: Vec<NewRecord>) -> Result<Vec<Position>> {
        producer::append(&self.cluster, records).await
    }

    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        self.cluster.check_partition(topic, partition).await?;
        Ok(self.cluster.watermarks(topic, partition).await?.1)
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Record>> {
        self.cluster.check_partition(topic, partition).await?;
        self.readers
            .read(&self.cluster, topic, partition, from, max, wait)
            .await
    }

    async fn consumer(&self, group: &str, topics: &[String]) -> Result<Box<dyn Consumer>> {
        let mut unique: Vec<&str> = Vec::with_capacity(topics.len());
        for topic in topics {
            if !unique.contains(&topic.as_str()) {
                // Kafka would wait for a missing topic; the contract wants UnknownTopic.
                self.cluster.partitions(topic).await?;
                unique.push(topic);
            }
        }
        let group = format!("{}{group}", self.cluster.config().group_prefix);
        let consumer = GroupConsumer::join(Arc::clone(&self.cluster), &group, &unique)?;
        Ok(Box::new(consumer))
    }

    async fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<Option<u64>> {
        self.cluster.check_partition(topic, partition).await?;
        let group = format!("{}{group}", self.cluster.config().group_prefix);
        self.cluster.committed(&group, topic, partition).await
    }
}
