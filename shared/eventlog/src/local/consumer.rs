//! Consumer-group member of an embedded log.
//!
//! One process owns the file, so there is nobody to rebalance with: every member gets every
//! partition of its topics. Positions live in memory and start at the group's committed
//! offsets; only `commit` touches the disk, through the writer (so commits are group
//! committed with appends).

use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

use super::topic::Topic;
use super::writer::Op;
use super::{Inner, Source};
use crate::{Consumer, Record, Result};

struct Assigned {
    topic: Arc<Topic>,
    source: Source,
    /// Next offset to deliver.
    position: u64,
}

pub(crate) struct LocalConsumer {
    inner: Arc<Inner>,
    group: String,
    assigned: Vec<Assigned>,
    /// Where the next poll starts its round-robin, so no partition starves another.
    cursor: usize,
    /// Subscribed to every assigned topic; `notify_one` keeps a permit, so appends between
    /// a poll's check and its wait are never missed.
    wake: Arc<Notify>,
}

impl LocalConsumer {
    pub(crate) async fn join(inner: Arc<Inner>, group: &str, topics: &[String]) -> Result<Self> {
        let mut seen = std::collections::HashSet::new();
        let mut sources = Vec::new();
        let mut resolved = Vec::new();
        for name in topics {
            if !seen.insert(name.as_str()) {
                continue;
            }
            let topic = inner.topics.get(name)?;
            for partition in 0..topic.partitions() {
                sources.push(Source::new(&topic, partition));
                resolved.push(Arc::clone(&topic));
            }
        }

        let group_name = group.to_owned();
        let lookup = sources.clone();
        let committed = inner
            .blocking(move |storage| {
                lookup
                    .iter()
                    .map(|source| storage.group_offset(&group_name, source))
                    .collect::<Result<Vec<_>>>()
            })
            .await?;

        let wake = Arc::new(Notify::new());
        let mut assigned = Vec::with_capacity(sources.len());
        for ((topic, source), committed) in resolved.into_iter().zip(sources).zip(committed) {
            // Once per topic (topics were deduplicated above): wake-ups are per topic.
            if source.partition == 0 {
                topic.subscribe(&wake);
            }
            assigned.push(Assigned {
                topic,
                source,
                position: committed.unwrap_or(0),
            });
        }
        Ok(Self {
            inner,
            group: group.to_owned(),
            assigned,
            cursor: 0,
            wake,
        })
    }

    /// Chooses which partitions to read this round and how many records from each: the
    /// partitions that have something, in round-robin order from `cursor`, sharing `max`
    /// evenly; what a partition cannot use (it has fewer records) goes to the others, so a
    /// lone busy partition gets all of it.
    fn plan(&mut self, max: usize) -> Vec<(usize, usize)> {
        let n = self.assigned.len();
        let mut ready: Vec<(usize, usize, usize)> = (0..n)
            .map(|i| (self.cursor + i) % n)
            .filter_map(|i| {
                let a = &self.assigned[i];
                let end = a.topic.end(a.source.partition).ok()?;
                let available = usize::try_from(end.saturating_sub(a.position)).unwrap_or(max);
                (available > 0).then_some((i, available, 0))
            })
            .collect();
        let mut budget = max;
        while budget > 0 {
            let open = ready
                .iter()
                .filter(|(_, avail, grant)| grant < avail)
                .count();
            if open == 0 {
                break;
            }
            let share = (budget / open).max(1);
            for (_, avail, grant) in ready.iter_mut().filter(|(_, avail, grant)| grant < avail) {
                let more = share.min(*avail - *grant).min(budget);
                *grant += more;
                budget -= more;
                if budget == 0 {
                    break;
                }
            }
        }
        ready.retain(|&(_, _, grant)| grant > 0);
        if let Some(&(last, _, _)) = ready.last() {
            self.cursor = (last + 1) % n;
        }
        ready.into_iter().map(|(i, _, grant)| (i, grant)).collect()
    }

    async fn fetch(&mut self, plan: Vec<(usize, usize)>) -> Result<Vec<Record>> {
        // Partitions whose next records are in the topic's in-memory tail need no query.
        let mut batches = Vec::with_capacity(plan.len());
        let mut reads: Vec<(usize, Source, u64, usize)> = Vec::new();
        for (i, limit) in plan {
            let a = &self.assigned[i];
            match a.topic.read_tail(a.source.partition, a.position, limit) {
                Some(records) => batches.push((i, records)),
                None => reads.push((i, a.source.clone(), a.position, limit)),
            }
        }
        if !reads.is_empty() {
            let read = self
                .inner
                .blocking(move |storage| {
                    reads
                        .into_iter()
                        .map(|(i, source, from, limit)| {
                            storage
                                .read(&source, from, limit)
                                .map(|records| (i, records))
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .await?;
            batches.extend(read);
        }
        // Positions advance only here, after the read completed: a poll cancelled mid-read
        // delivers nothing and loses nothing.
        let mut out = Vec::with_capacity(batches.iter().map(|(_, r)| r.len()).sum());
        for (i, records) in batches {
            if let Some(last) = records.last() {
                self.assigned[i].position = last.offset + 1;
            }
            out.extend(records);
        }
        Ok(out)
    }
}

#[async_trait]
impl Consumer for LocalConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = super::deadline(wait);
        loop {
            let plan = self.plan(max);
            if !plan.is_empty() {
                let records = self.fetch(plan).await?;
                if !records.is_empty() {
                    return Ok(records);
                }
            }
            if tokio::time::timeout_at(deadline, self.wake.notified())
                .await
                .is_err()
            {
                return Ok(Vec::new());
            }
        }
    }

    async fn commit(&mut self, offsets: &[(String, u32, u64)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let group = self.group.clone();
        let offsets = offsets.to_vec();
        self.inner
            .submit(|reply| Op::Commit {
                group,
                offsets,
                reply,
            })
            .await
    }

    fn assignment(&self) -> Vec<(String, u32)> {
        self.assigned
            .iter()
            .map(|a| (a.source.topic.clone(), a.source.partition))
            .collect()
    }
}
