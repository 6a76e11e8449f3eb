//! `read`: group-less consumers positioned by hand, pooled.
//!
//! A reader is a librdkafka consumer assigned one partition at one offset. Callers of `read`
//! mostly tail a partition (reply feeds, replays), asking for `from` = the offset after the
//! last record they got; a reader already positioned there answers from what it prefetched,
//! without a round trip. Others are re-assigned, which costs one fetch.
//!
//! A fresh reader has nothing prefetched, so "nothing arrived within `wait`" does not mean
//! "nothing there": then the end offset decides whether to keep waiting for records that
//! exist.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::time::{Instant, timeout_at};

use super::cluster::{Cluster, REQUEST_TIMEOUT, drop_off_runtime, kafka_partition};
use super::error::{code, is_fatal, log_error};
use super::message::record;
use crate::{LogError, Record, Result};

/// Idle readers kept for reuse; each is a librdkafka client with its own threads and
/// connections, so keep few.
const MAX_IDLE: usize = 8;
/// After an offset-out-of-range answer, how soon to look again.
const OUT_OF_RANGE_BACKOFF: Duration = Duration::from_millis(100);

pub(super) struct Readers {
    config: ClientConfig,
    /// Least recently used first.
    idle: Mutex<VecDeque<Reader>>,
}

struct Reader {
    consumer: StreamConsumer,
    topic: String,
    partition: u32,
    /// The offset of the next record this reader delivers.
    next: u64,
}

impl Readers {
    pub(super) fn new(config: ClientConfig) -> Self {
        Self {
            config,
            idle: Mutex::default(),
        }
    }

    /// Up to `max` records of a partition (which the caller checked exists) from `from`.
    pub(super) async fn read(
        &self,
        cluster: &Arc<Cluster>,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Record>> {
        let mut reader = self.checkout(topic, partition, from)?;
        match reader.read(cluster, max, wait).await {
            Ok(records) => {
                self.checkin(reader);
                Ok(records)
            }
            // Only a reader that read without error goes back: its position is known.
            Err(e) => {
                drop_off_runtime(reader);
                Err(e)
            }
        }
    }

    fn checkout(&self, topic: &str, partition: u32, from: u64) -> Result<Reader> {
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            match idle.iter().position(|r| r.is_at(topic, partition, from)) {
                Some(i) => return Ok(idle.remove(i).unwrap_or_else(|| unreachable!())),
                None => idle.pop_front(),
            }
        };
        let mut reader = match reused {
            Some(reader) => reader,
            None => Reader {
                consumer: self.config.create().map_err(|e| {
                    LogError::Invalid(format!("Kafka reader for topic {topic:?}: {e}"))
                })?,
                topic: String::new(),
                partition: 0,
                next: 0,
            },
        };
        reader.seek(topic, partition, from)?;
        Ok(reader)
    }

    fn checkin(&self, reader: Reader) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.push_back(reader);
        if idle.len() > MAX_IDLE {
            drop_off_runtime(idle.pop_front());
        }
    }
}

impl Reader {
    fn is_at(&self, topic: &str, partition: u32, from: u64) -> bool {
        self.topic == topic && self.partition == partition && self.next == from
    }

    fn owns(&self, record: &Record) -> bool {
        record.topic == self.topic && record.partition == self.partition
    }

    fn seek(&mut self, topic: &str, partition: u32, from: u64) -> Result<()> {
        let mut assignment = TopicPartitionList::new();
        let start = i64::try_from(from).map_err(|_| {
            LogError::Invalid(format!("offset {from} is beyond Kafka's offset range"))
        })?;
        assignment
            .add_partition_offset(topic, kafka_partition(partition), Offset::Offset(start))
            .map_err(|e| log_error(format_args!("position a reader on topic {topic:?}"), &e))?;
        // Replaces the previous assignment; librdkafka drops what it prefetched for it.
        self.consumer.assign(&assignment).map_err(|e| {
            log_error(
                format_args!(
                    "position a reader on topic {topic:?} partition {partition} at {from}"
                ),
                &e,
            )
        })?;
        self.topic = topic.to_owned();
        self.partition = partition;
        self.next = from;
        Ok(())
    }

    async fn read(
        &mut self,
        cluster: &Arc<Cluster>,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Record>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut deadline = Instant::now() + wait;
        let mut checked_end = false;
        loop {
            if let Some(first) = self.next_record(deadline).await? {
                out.push(first);
                break;
            }
            if checked_end {
                return Err(LogError::Storage(format!(
                    "read topic {:?} partition {} at {}: records exist but none arrived within {REQUEST_TIMEOUT:?}",
                    self.topic, self.partition, self.next
                )));
            }
            let (low, high) = cluster.watermarks(&self.topic, self.partition).await?;
            if self.next < low {
                return Err(LogError::Invalid(format!(
                    "read topic {:?} partition {} at {}: the broker no longer stores records before {low}",
                    self.topic, self.partition, self.next
                )));
            }
            if self.next >= high {
                return Ok(Vec::new());
            }
            // Records exist: give the fetch its time, whatever `wait` said.
            checked_end = true;
            deadline = Instant::now() + REQUEST_TIMEOUT;
        }
        let mut stream = self.consumer.stream();
        while out.len() < max {
            match stream.next().now_or_never() {
                Some(Some(Ok(message))) => {
                    let r = record(&message);
                    let expected = out.last().map_or(self.next, |l: &Record| l.offset + 1);
                    if self.owns(&r) && r.offset >= expected {
                        out.push(r);
                    }
                }
                _ => break,
            }
        }
        drop(stream);
        if let Some(last) = out.last() {
            self.next = last.offset + 1;
        }
        Ok(out)
    }

    /// The next record at or after `self.next`, waiting until `deadline`.
    async fn next_record(&mut self, deadline: Instant) -> Result<Option<Record>> {
        let mut stream = self.consumer.stream();
        loop {
            let Ok(next) = timeout_at(deadline, stream.next()).await else {
                return Ok(None);
            };
            match next {
                Some(Ok(message)) => {
                    let r = record(&message);
                    // Left over from before a re-assignment: not ours.
                    if self.owns(&r) && r.offset >= self.next {
                        return Ok(Some(r));
                    }
                }
                Some(Err(e)) if is_out_of_range(&e) => {
                    // `next` is beyond the end (or below the start): the fetcher stopped.
                    // Wait a little and position again; the caller's watermark check tells
                    // the two apart.
                    drop(stream);
                    tokio::time::sleep_until(deadline.min(Instant::now() + OUT_OF_RANGE_BACKOFF))
                        .await;
                    let (topic, partition, next) = (self.topic.clone(), self.partition, self.next);
                    self.seek(&topic, partition, next)?;
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                    stream = self.consumer.stream();
                }
                Some(Err(e)) if is_fatal(&e) => {
                    return Err(log_error(
                        format_args!(
                            "read topic {:?} partition {} at {}",
                            self.topic, self.partition, self.next
                        ),
                        &e,
                    ));
                }
                // librdkafka retries by itself (a broker down, a leader moving); if it never
                // recovers, the watermark check after the deadline reports it.
                Some(Err(e)) => {
                    tracing::debug!(
                        topic = %self.topic,
                        partition = self.partition,
                        error = %e,
                        "Kafka reader: transient error"
                    );
                }
                None => {
                    return Err(LogError::Storage("Kafka reader stream ended".to_owned()));
                }
            }
        }
    }
}

fn is_out_of_range(err: &KafkaError) -> bool {
    matches!(
        code(err),
        Some(RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset)
    )
}
