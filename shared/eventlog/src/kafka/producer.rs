//! `append`: one idempotent producer, partitions chosen by us.
//!
//! We pick each record's partition with [`partition_for`] and pass it explicitly, so where a
//! key lands never depends on librdkafka's partitioner (or its configuration). The batch is
//! enqueued in input order, then every delivery report is awaited: the whole batch travels
//! as few produce requests as librdkafka can make of it (the "group commit" of Kafka), and
//! the idempotent producer keeps the enqueue order within each partition even when it
//! retries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureRecord};

use super::cluster::{Cluster, kafka_partition, offset};
use super::error::{is_unknown_topic, log_error};
use super::message::headers;
use crate::{LogError, NewRecord, Position, Result, partition_for};

/// How long to wait before retrying to enqueue when librdkafka's local queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(10);

pub(super) async fn append(
    cluster: &Arc<Cluster>,
    records: Vec<NewRecord>,
) -> Result<Vec<Position>> {
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for record in &records {
        if !counts.contains_key(record.topic.as_str()) {
            counts.insert(&record.topic, cluster.partitions(&record.topic).await?);
        }
    }

    let timestamp = now_ms();
    let mut deliveries: Vec<DeliveryFuture> = Vec::with_capacity(records.len());
    for record in &records {
        let partition = partition_for(&record.key, counts[record.topic.as_str()]);
        let mut message = FutureRecord::to(&record.topic)
            .partition(kafka_partition(partition))
            .key(record.key.as_str())
            .payload(record.payload.as_slice())
            .timestamp(timestamp);
        if let Some(headers) = headers(record) {
            message = message.headers(headers);
        }
        // A failure from here on may leave earlier records of the batch stored: the contract
        // promises no atomicity, and callers retry (duplicates are dropped by id).
        loop {
            match cluster.producer().send_result(message) {
                Ok(delivery) => break deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    message = back;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((e, _)) => return Err(failure(cluster, record, partition, &e)),
            }
        }
    }

    let mut positions = Vec::with_capacity(records.len());
    for (delivery, record) in deliveries.into_iter().zip(&records) {
        let partition = partition_for(&record.key, counts[record.topic.as_str()]);
        match delivery.await {
            Ok(Ok(delivered)) => positions.push(Position {
                partition: u32::try_from(delivered.partition).unwrap_or(partition),
                offset: offset(delivered.offset),
            }),
            Ok(Err((e, _))) => return Err(failure(cluster, record, partition, &e)),
            Err(_canceled) => {
                return Err(LogError::Storage(format!(
                    "append to topic {:?}: the producer shut down before the broker answered",
                    record.topic
                )));
            }
        }
    }
    Ok(positions)
}

fn failure(cluster: &Cluster, record: &NewRecord, partition: u32, err: &KafkaError) -> LogError {
    if is_unknown_topic(err) {
        return cluster.forget(&record.topic);
    }
    log_error(
        format_args!("append to topic {:?} partition {partition}", record.topic),
        err,
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
