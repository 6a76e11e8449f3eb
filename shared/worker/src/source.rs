//! Where a worker takes tasks from and reports to: the HTTP API ([`Client`]) or, with the
//! `kafka` feature, the log itself (`LogSource`). The worker loop and the handler API are
//! the same for both; only this module tells them apart.

use crate::Error;
use crate::client::{Client, ErrorReport, HeartbeatAck, Metrics, Task};
use crate::worker::stopped;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::watch;

/// Where a [`Worker`](crate::Worker) takes tasks from. Build one from a [`Client`] (the HTTP
/// poll endpoint) or, with the `kafka` feature, from a `LogSource` (`tasks.<queue>` on the
/// log), and pass it to [`Worker::with_source`](crate::Worker::with_source).
#[derive(Debug, Clone)]
pub struct TaskSource {
    pub(crate) backend: Backend,
}

impl From<Client> for TaskSource {
    fn from(client: Client) -> Self {
        Self {
            backend: Backend::Http(client),
        }
    }
}

#[cfg(feature = "kafka")]
impl From<crate::log::LogSource> for TaskSource {
    fn from(source: crate::log::LogSource) -> Self {
        Self {
            backend: Backend::Log(source),
        }
    }
}

/// The reporting side: heartbeats, completions, failures.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Http(Client),
    #[cfg(feature = "kafka")]
    Log(crate::log::LogSource),
}

impl Backend {
    /// Extends the attempt's lease; a conflict ([`Error::is_conflict`]) means superseded.
    pub async fn heartbeat(
        &self,
        task_id: &str,
        attempt: u32,
        checkpoint: Option<&Value>,
    ) -> Result<HeartbeatAck, Error> {
        match self {
            Backend::Http(client) => client.heartbeat(task_id, attempt, checkpoint).await,
            #[cfg(feature = "kafka")]
            Backend::Log(source) => source.heartbeat(task_id, attempt, checkpoint).await,
        }
    }

    pub async fn complete(
        &self,
        task_id: &str,
        attempt: u32,
        output: &Value,
        metrics: Option<Metrics>,
    ) -> Result<(), Error> {
        match self {
            Backend::Http(client) => client.complete(task_id, attempt, output, metrics).await,
            #[cfg(feature = "kafka")]
            Backend::Log(source) => source.complete(task_id, attempt, output, metrics).await,
        }
    }

    pub async fn fail(
        &self,
        task_id: &str,
        attempt: u32,
        error: &ErrorReport,
        retry_after: Option<Duration>,
        metrics: Option<Metrics>,
    ) -> Result<(), Error> {
        match self {
            Backend::Http(client) => {
                client
                    .fail(task_id, attempt, error, retry_after, metrics)
                    .await
            }
            #[cfg(feature = "kafka")]
            Backend::Log(source) => {
                source
                    .fail(task_id, attempt, error, retry_after, metrics)
                    .await
            }
        }
    }

    /// Starts taking tasks of `queue` (for the log: joins the queue's consumer group).
    pub fn open(&self, queue: &str, prefetch: usize) -> Feed {
        match self {
            Backend::Http(client) => {
                let _ = (queue, prefetch);
                Feed::Http(client.clone())
            }
            #[cfg(feature = "kafka")]
            Backend::Log(source) => Feed::Log(source.open(queue, prefetch)),
        }
    }
}

/// The taking side of one running worker.
pub(crate) enum Feed {
    Http(Client),
    #[cfg(feature = "kafka")]
    Log(crate::log::QueueFeed),
}

impl Feed {
    /// Up to `max` started attempts, waiting at most `wait` for the first. Returns nothing
    /// as soon as `stop` turns true while waiting.
    pub async fn poll(
        &self,
        queue: &str,
        worker_id: &str,
        max: u32,
        wait: Duration,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Vec<(Task, Receipt)>, Error> {
        match self {
            Feed::Http(client) => {
                // Cancelling the request abandons whatever the server hands out meanwhile;
                // it is redelivered after its timeout.
                let tasks = tokio::select! {
                    biased;
                    () = stopped(stop) => return Ok(Vec::new()),
                    r = client.poll(queue, worker_id, max, wait) => r?,
                };
                Ok(tasks
                    .into_iter()
                    .map(|task| (task, Receipt::default()))
                    .collect())
            }
            #[cfg(feature = "kafka")]
            Feed::Log(feed) => feed.poll(worker_id, max as usize, wait, stop).await,
        }
    }

    /// Stops taking tasks once every delivered attempt is settled (for the log: commits the
    /// settled offsets and leaves the group).
    pub async fn close(self) {
        match self {
            Feed::Http(_) => {}
            #[cfg(feature = "kafka")]
            Feed::Log(feed) => feed.close().await,
        }
    }
}

/// Proof of delivery of one attempt. [`settle`](Self::settle) it once the attempt needs the
/// source no more (its result is recorded, or it turned out stale); an attempt never
/// settled is delivered again after a crash or a rebalance. Nothing to do over HTTP.
#[derive(Debug, Default)]
pub(crate) struct Receipt {
    #[cfg(feature = "kafka")]
    pub(crate) log: Option<crate::log::Settle>,
}

impl Receipt {
    pub fn settle(self) {
        #[cfg(feature = "kafka")]
        if let Some(settle) = self.log {
            settle.settle();
        }
    }
}
