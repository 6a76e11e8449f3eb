//! One running worker's share of `<prefix>.tasks.<queue>`: [`QueueFeed`], a thin layer over
//! [`distorch_tasks`], the task-queue consumer the API's poll endpoint uses too. Accepted
//! attempts reach handlers with a [`Settle`]: the record's offset is committed once the
//! worker's result for it is durable.

use super::{LogSource, log_error};
use crate::Error;
use crate::client::Task;
use crate::source::Receipt;
use crate::worker::stopped;
use distorch_tasks::{Claim, FeedConfig, TaskFeed};
use std::time::Duration;
use tokio::sync::watch;

pub(crate) use distorch_tasks::Settle;

fn task(claim: &Claim) -> Task {
    let d = &claim.dispatch;
    Task {
        task_id: d.task_id.0.clone(),
        workflow_id: d.workflow_id.to_string(),
        step_id: d.step_id.clone(),
        task: d.task.clone(),
        attempt: d.attempt,
        input: d.input.clone(),
        checkpoint: d.checkpoint.clone(),
        heartbeat_timeout_ms: d.heartbeat_timeout_ms,
    }
}

/// The consumer side of one running worker: a member of the consumer group
/// `workers.<queue>` (one group per queue, shared by every worker of that queue).
pub(crate) struct QueueFeed {
    source: LogSource,
    feed: TaskFeed,
}

impl QueueFeed {
    pub(crate) fn start(source: LogSource, queue: &str, prefetch: usize) -> Self {
        let feed = TaskFeed::start(
            source.inner.log.clone(),
            FeedConfig {
                topic: source.inner.topics.tasks(queue),
                group: format!("workers.{queue}"),
                prefetch,
            },
        );
        Self { source, feed }
    }

    /// Takes up to `max` records (waiting at most `wait` for the first), starts their
    /// attempts for `worker_id` and returns those the engine accepted.
    ///
    /// Only the wait is cut short by `stop`: once claims are taken their starts are seen
    /// through (at most one reply timeout), so an attempt is never started and then
    /// abandoned by a worker shutting down.
    pub(crate) async fn poll(
        &self,
        worker_id: &str,
        max: usize,
        wait: Duration,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Vec<(Task, Receipt)>, Error> {
        let claims = tokio::select! {
            biased;
            () = stopped(stop) => return Ok(Vec::new()),
            claims = self.feed.take(max.max(1), wait) => claims,
        };
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let started = self
            .source
            .inner
            .starter
            .start(&self.feed, worker_id, claims)
            .await
            .map_err(log_error)?;
        Ok(started
            .accepted
            .into_iter()
            .map(|claim| {
                let receipt = Receipt {
                    log: Some(self.feed.settler(&claim)),
                };
                (task(&claim), receipt)
            })
            .collect())
    }

    /// Commits what is settled and leaves the group. Call once every delivered attempt has
    /// been settled (or abandoned).
    pub(crate) async fn close(self) {
        self.feed.close().await;
    }
}
