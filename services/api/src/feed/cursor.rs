//! One subscriber's position in one partition: takes the shared tail's batches and reads
//! whatever it missed straight from the log, so it sees every offset once, in order.

use super::{Batch, Feed, FeedEvent, READ_MAX};
use crate::error::ApiError;
use std::sync::Arc;
use tokio::sync::broadcast::{self, error::RecvError};

pub(crate) struct Cursor {
    feed: Feed,
    partition: u32,
    rx: broadcast::Receiver<Arc<Batch>>,
    /// The next offset this subscriber needs.
    next: u64,
    /// Records up to here exist but will not come from the tail (they were appended before
    /// the cursor joined it, or the channel dropped them): they are read from the log.
    backlog_end: u64,
    /// A batch that starts past `next`, held while the backlog before it is read.
    pending: Option<Arc<Batch>>,
}

impl Cursor {
    /// A cursor at `start`, or where the partition's shared tail is now. Records before the
    /// tail's position are read from the log; the tail delivers the rest.
    pub(crate) async fn open(
        feed: &Feed,
        partition: u32,
        start: Option<u64>,
    ) -> Result<Cursor, ApiError> {
        let (rx, tail) = feed.subscribe(partition).await?;
        let next = match start {
            None => tail,
            Some(offset) if offset <= tail => offset,
            // The tail may trail the log's end; only a position past the end is wrong.
            Some(offset) => {
                let end = feed.end_offset(partition).await?;
                if offset > end {
                    return Err(ApiError::BadRequest(format!(
                        "position {offset} of partition {partition} is past the end of the log ({end})"
                    )));
                }
                offset
            }
        };
        Ok(Cursor {
            feed: feed.clone(),
            partition,
            rx,
            next,
            backlog_end: tail,
            pending: None,
        })
    }

    /// The next offset this cursor will deliver.
    pub(crate) fn position(&self) -> u64 {
        self.next
    }

    /// The next events of the partition, in offset order (possibly none, when the records
    /// were undecodable). Waits for new records.
    pub(crate) async fn next(&mut self) -> Result<Vec<FeedEvent>, ApiError> {
        loop {
            if self.next < self.backlog_end {
                return self.read_backlog().await;
            }
            let batch = match self.pending.take() {
                Some(batch) => batch,
                None => match self.rx.recv().await {
                    Ok(batch) => batch,
                    // The batches after the gap say which offsets are missing.
                    Err(RecvError::Lagged(skipped)) => {
                        tracing::debug!(
                            partition = self.partition,
                            skipped,
                            "feed subscriber lagged; catching up from the log"
                        );
                        continue;
                    }
                    // Only if the reader died: join a new one and read the gap before it.
                    Err(RecvError::Closed) => {
                        let (rx, tail) = self.feed.subscribe(self.partition).await?;
                        self.rx = rx;
                        self.backlog_end = self.backlog_end.max(tail);
                        continue;
                    }
                },
            };
            if batch.next <= self.next {
                continue;
            }
            if batch.from > self.next {
                self.backlog_end = batch.from;
                self.pending = Some(batch);
                continue;
            }
            let events = batch
                .events
                .iter()
                .filter(|e| e.offset >= self.next)
                .cloned()
                .collect();
            self.next = batch.next;
            return Ok(events);
        }
    }

    /// Up to [`READ_MAX`] records of the backlog, straight from the log.
    async fn read_backlog(&mut self) -> Result<Vec<FeedEvent>, ApiError> {
        let want = usize::try_from(self.backlog_end - self.next).unwrap_or(usize::MAX);
        let (events, read_to) = self
            .feed
            .read(self.partition, self.next, want.min(READ_MAX))
            .await?;
        match read_to {
            Some(to) => {
                self.next = to.min(self.backlog_end);
                Ok(events)
            }
            // The log reported these offsets as written; nothing there means it failed.
            None => Err(ApiError::Unavailable(format!(
                "the log returned nothing at offset {} of partition {}",
                self.next, self.partition
            ))),
        }
    }
}
