//! Rebuilding the read models (and analytics) from the beginning of the log.

use super::{Batch, POLL_WAIT, Projector, ProjectorError};
use distorch_eventlog::LogError;
use std::time::Duration;

/// How many empty reads in a row, each waiting [`POLL_WAIT`], a replay accepts below a
/// partition's end offset before it gives up (a broker that cannot serve the range).
const MAX_EMPTY_READS: u32 = 50;

/// What [`Projector::rebuild`] replayed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// Partitions read (of the events and the definitions topics).
    pub partitions: u32,
    /// Records read, decodable or not.
    pub records: u64,
    /// Workflow events decoded and applied.
    pub events: u64,
    /// Definition registrations decoded and applied.
    pub definitions: u64,
    /// Records skipped because they do not decode (as the live projector skips them).
    pub undecodable: u64,
    /// Whether analytics were reset and rebuilt too.
    pub analytics: bool,
}

impl Projector {
    /// Drops the read models (and the analytics facts, when configured) and replays the
    /// log into them: every partition of the definitions topic, then of the events topic,
    /// from offset 0 up to its end offset when the rebuild started, read with
    /// [`EventLog::read`](distorch_eventlog::EventLog::read) (no consumer group: nothing
    /// is committed). Batches of at most `config.batch` records of one partition go
    /// through the live projector's apply path, so the result is what a projector that
    /// had consumed the whole log would hold.
    ///
    /// Run it while the projector service is stopped (a projector writing meanwhile could
    /// mix old and new state). Afterwards the projector resumes from its committed offsets;
    /// records between those offsets and the rebuild's end offsets are applied a second
    /// time, which the idempotent `apply` and `record` make harmless, and records appended
    /// after the rebuild started reach the store that way.
    ///
    /// Transient store failures are retried as in [`Projector::run`]; a log failure, or a
    /// topic that does not exist, ends the rebuild with an error (run it again).
    pub async fn rebuild(&self) -> Result<RebuildReport, ProjectorError> {
        let topics = [self.topics.definitions(), self.topics.events()];
        // Every end offset is taken before the store is touched, so a missing topic or an
        // unreachable log leaves the read models as they were.
        let mut ranges = Vec::new();
        for topic in &topics {
            for partition in 0..self.log.partitions(topic).await? {
                let end = self.log.end_offset(topic, partition).await?;
                ranges.push((topic.clone(), partition, end));
            }
        }
        self.store.reset().await?;
        if let Some(analytics) = &self.analytics {
            analytics.reset().await.map_err(ProjectorError::Analytics)?;
        }
        tracing::info!(
            partitions = ranges.len(),
            "read models reset; replaying the log"
        );

        let mut report = RebuildReport {
            partitions: ranges.len() as u32,
            analytics: self.analytics.is_some(),
            ..RebuildReport::default()
        };
        let batch_size = self.config.batch.max(1);
        for (topic, partition, end) in ranges {
            let mut next = 0;
            let mut empty_reads = 0;
            while next < end {
                let max = batch_size.min((end - next) as usize);
                let wait = if empty_reads == 0 {
                    Duration::ZERO
                } else {
                    POLL_WAIT
                };
                let (mut records, through) = self
                    .log
                    .read_through(&topic, partition, next, max, wait)
                    .await?;
                // Records appended since the rebuild started are the live projector's.
                records.retain(|r| r.offset < end);
                if records.is_empty() && through > next {
                    // Only records no reader sees (ownership markers, a fenced engine's).
                    next = through;
                    continue;
                }
                let Some(last) = records.last() else {
                    empty_reads += 1;
                    if empty_reads > MAX_EMPTY_READS {
                        return Err(LogError::Storage(format!(
                            "{topic}/{partition}: no records at offset {next} below the end \
                             offset {end}"
                        ))
                        .into());
                    }
                    continue;
                };
                empty_reads = 0;
                next = last.offset + 1;
                report.records += records.len() as u64;
                let batch: Batch = self.decode(records);
                report.events += batch.events.len() as u64;
                report.definitions += batch.definitions.len() as u64;
                self.apply(&batch).await?;
            }
            tracing::info!(%topic, partition, end, "partition replayed");
        }
        report.undecodable = report.records - report.events - report.definitions;
        // The group's committed offsets may already lie past what was replayed: make the
        // replay durable before the projector resumes from them.
        self.store.flush().await?;
        if let Some(analytics) = &self.analytics {
            analytics.flush().await.map_err(ProjectorError::Analytics)?;
        }
        Ok(report)
    }
}
