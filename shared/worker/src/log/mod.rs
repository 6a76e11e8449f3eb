//! Tasks straight from the log (cargo feature `kafka`): [`LogSource`], whose docs describe
//! the protocol. `feed` is one running worker's consumer of its queue.
//!
//! The request/reply machinery is `distorch_eventlog::rpc`, the same one the API's command
//! bus uses.

mod feed;

pub(crate) use feed::{QueueFeed, Settle};

use crate::Error;
use crate::client::{ErrorReport, HeartbeatAck, Metrics};
use distorch_domain::command::{Answer, Command, ErrorInfo, Outcome, Rejection, TaskMetrics};
use distorch_domain::ids::{CommandId, TaskId};
use distorch_domain::topics::Topics;
use distorch_eventlog::kafka::{KafkaConfig, KafkaLog};
use distorch_eventlog::rpc::Rpc;
use distorch_eventlog::{EventLog, LogError, NewRecord};
use distorch_tasks::{Starter, command_record, decode_reply};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The services' default `[api] topic_prefix`.
const DEFAULT_PREFIX: &str = "distorch";
/// How long a command waits for the engine's reply; the API's default.
const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Configures a [`LogSource`]. Obtain one with [`LogSource::builder`].
#[derive(Debug, Clone)]
pub struct LogSourceBuilder {
    topic_prefix: String,
    reply_timeout: Duration,
}

impl LogSourceBuilder {
    /// The deployment's topic prefix (`[api] topic_prefix`): tasks come from
    /// `<prefix>.tasks.<queue>`, commands go to `<prefix>.commands`. Default `distorch`.
    pub fn topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.topic_prefix = prefix.into();
        self
    }

    /// How long a command waits for the engine's reply. A `StartTask` without a reply is
    /// asked again (same command id, so it is applied once); a heartbeat without one counts
    /// as a network failure; a result without one is durable and counts as reported.
    /// Default 10 s.
    pub fn reply_timeout(mut self, timeout: Duration) -> Self {
        self.reply_timeout = timeout;
        self
    }

    /// Connects to the Kafka cluster at `url` (`kafka://host:port[,host:port][?property=value]`,
    /// or just `host:port[,host:port]`). Consumer groups get the prefix `<topic prefix>.`,
    /// as the services' groups do.
    pub async fn connect(self, url: &str) -> Result<LogSource, Error> {
        let url = if url.starts_with("kafka://") {
            url.to_owned()
        } else {
            format!("kafka://{url}")
        };
        let mut config = KafkaConfig::from_url(&url).map_err(|e| Error::Config(e.to_string()))?;
        config.group_prefix = format!("{}.", self.topic_prefix);
        self.connect_with(config).await
    }

    /// Like [`connect`](Self::connect) with a full [`KafkaConfig`] (TLS, SASL, client id);
    /// its `group_prefix` is used as given.
    pub async fn connect_with(self, config: KafkaConfig) -> Result<LogSource, Error> {
        let log = KafkaLog::connect(config).await.map_err(log_error)?;
        self.open(Arc::new(log)).await
    }

    /// A source on any [`EventLog`] (the Kafka log, or the embedded one in tests).
    ///
    /// The services create the topics (with their configured partition counts); a source
    /// never does. `commands` and `replies` must exist, so start the services first; a
    /// queue's `tasks.<queue>` topic may appear later (the engine creates it with the first
    /// task for the queue), and workers wait for it.
    pub async fn open(self, log: Arc<dyn EventLog>) -> Result<LogSource, Error> {
        if self.topic_prefix.is_empty() {
            return Err(Error::Config("topic_prefix must not be empty".into()));
        }
        if self.reply_timeout.is_zero() {
            return Err(Error::Config("reply_timeout must be positive".into()));
        }
        let topics = Topics::with_prefix(&self.topic_prefix);
        for topic in [topics.commands(), topics.replies()] {
            match log.partitions(&topic).await {
                Ok(_) => {}
                Err(LogError::UnknownTopic(_)) => {
                    return Err(Error::Log {
                        message: format!(
                            "topic {topic:?} does not exist: start the DisTorch services \
                             first (they create it), or check the topic prefix"
                        ),
                        retryable: true,
                    });
                }
                Err(e) => return Err(log_error(e)),
            }
        }
        let instance = uuid::Uuid::new_v4().to_string();
        let rpc = Rpc::start(log.clone(), &topics.replies(), instance, decode_reply)
            .await
            .map_err(log_error)?;
        tracing::info!(prefix = %self.topic_prefix, instance = %rpc.instance(), "log task source ready");
        let starter = Starter::new(rpc.clone(), topics.commands(), self.reply_timeout);
        Ok(LogSource {
            inner: Arc::new(Inner {
                log,
                topics,
                rpc,
                starter,
                next_id: AtomicU64::new(0),
                reply_timeout: self.reply_timeout,
            }),
        })
    }
}

/// Takes tasks straight from `<prefix>.tasks.<queue>` on the log and reports by publishing
/// commands to `<prefix>.commands`. Cheap to clone; clones (and every worker built on them)
/// share one reply reader and one batching writer.
///
/// A worker on a `LogSource` speaks the engine's own protocol instead of the HTTP API's:
/// - it consumes `<prefix>.tasks.<queue>` as a member of the consumer group
///   `workers.<queue>` (one group per queue, shared by every worker of that queue, so the
///   broker spreads the partitions among them);
/// - before running an attempt it publishes `StartTask` with a `reply_to`, and runs the
///   handler only if the engine accepted it: a rejection means the attempt is stale
///   (superseded, cancelled, already running or done), exactly as behind the HTTP poll
///   endpoint. A `StartTask` left unanswered is asked again with the same command id;
/// - heartbeats (with checkpoints), completions and failures are commands too; the engine's
///   replies tell the worker that an attempt is stale or that cancellation was requested;
/// - a record's offset is committed only once its attempt is settled: the engine rejected
///   it, or the worker's result for it is durable on the commands topic, or it turned out
///   stale meanwhile. A worker that crashes leaves its records uncommitted, so they are
///   delivered again; and an attempt it had started times out on the engine, which
///   dispatches a new one to whoever owns the partition then.
///
/// The services create the topics; a source never does (see [`LogSourceBuilder::open`]).
///
/// ```no_run
/// # async fn demo() -> Result<(), distorch_worker::Error> {
/// use distorch_worker::{LogSource, Worker};
/// let source = LogSource::builder()
///     .topic_prefix("distorch")
///     .connect("kafka://127.0.0.1:9092")
///     .await?;
/// let worker = Worker::with_source(source, "greeter")
///     .handler("say-hello", |ctx| async move {
///         Ok(serde_json::json!({ "greeting": format!("hello {}", ctx.input["name"]) }))
///     })
///     .build()?;
/// worker.run(async { tokio::signal::ctrl_c().await.ok(); }).await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LogSource {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LogSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSource")
            .field("commands", &self.inner.topics.commands())
            .field("instance", &self.inner.rpc.instance())
            .finish_non_exhaustive()
    }
}

struct Inner {
    log: Arc<dyn EventLog>,
    topics: Topics,
    rpc: Rpc<Outcome>,
    /// Starts the attempts the worker takes (asking again when no answer came).
    starter: Starter,
    /// Numbers this instance's command ids.
    next_id: AtomicU64,
    reply_timeout: Duration,
}

fn log_error(e: LogError) -> Error {
    Error::Log {
        retryable: e.is_retryable(),
        message: e.to_string(),
    }
}

/// The engine's refusal as the HTTP API would answer it.
fn rejected(command: &'static str, rejection: Rejection) -> Error {
    let status = match &rejection {
        Rejection::Invalid(_) => 400,
        Rejection::NotFound(_) => 404,
        Rejection::Conflict(_) => 409,
    };
    Error::Rejected {
        command,
        status,
        detail: rejection.to_string(),
    }
}

fn task_metrics(metrics: Option<Metrics>) -> Option<TaskMetrics> {
    metrics.map(|m| TaskMetrics {
        cpu_ms: m.cpu_ms,
        peak_memory_bytes: m.peak_memory_bytes,
        ..TaskMetrics::default()
    })
}

impl LogSource {
    /// Starts configuring a source.
    pub fn builder() -> LogSourceBuilder {
        LogSourceBuilder {
            topic_prefix: DEFAULT_PREFIX.to_owned(),
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
        }
    }

    /// The `reply_to` of this source's commands.
    pub fn instance_id(&self) -> &str {
        self.inner.rpc.instance()
    }

    /// Starts consuming `queue` for one running worker.
    pub(crate) fn open(&self, queue: &str, prefetch: usize) -> QueueFeed {
        QueueFeed::start(self.clone(), queue, prefetch)
    }

    /// A command id unique to this instance, for commands that must not be deduplicated
    /// against one another (every heartbeat).
    fn next_id(&self) -> String {
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n}", self.inner.rpc.instance())
    }

    /// The record of `command` with id `id`, asking for a reply.
    fn request(&self, id: &str, command: Command) -> Result<(String, NewRecord), Error> {
        let name = command.name();
        let reply_to = Some(self.inner.rpc.instance().to_owned());
        let record = command_record(
            &self.inner.topics.commands(),
            CommandId(id.to_owned()),
            reply_to,
            command,
        )
        .ok_or_else(|| Error::Rejected {
            command: name,
            status: 400,
            detail: format!("{name} names a malformed task id"),
        })?;
        Ok((id.to_owned(), record))
    }

    /// Sends one command and waits for the engine's answer: what it answered when accepted.
    async fn send(&self, id: &str, command: Command) -> Result<Answer, Error> {
        let name = command.name();
        let request = self.request(id, command)?;
        let answer = self
            .inner
            .rpc
            .request(vec![request], self.inner.reply_timeout)
            .await
            .map_err(log_error)?
            .pop();
        match answer {
            Some(Ok(Outcome::Accepted { result, .. })) => Ok(result),
            Some(Ok(Outcome::Rejected { rejection })) => Err(rejected(name, rejection)),
            Some(Err(_)) | None => Err(Error::Unanswered {
                command: name,
                waited: self.inner.reply_timeout,
            }),
        }
    }

    pub(crate) async fn heartbeat(
        &self,
        task_id: &str,
        attempt: u32,
        checkpoint: Option<&Value>,
    ) -> Result<HeartbeatAck, Error> {
        let command = Command::Heartbeat {
            task_id: TaskId(task_id.to_owned()),
            attempt,
            checkpoint: checkpoint.cloned(),
        };
        let answer = self.send(&self.next_id(), command).await?;
        Ok(HeartbeatAck {
            cancel_requested: matches!(answer, Answer::CancelRequested { .. }),
        })
    }

    pub(crate) async fn complete(
        &self,
        task_id: &str,
        attempt: u32,
        output: &Value,
        metrics: Option<Metrics>,
    ) -> Result<(), Error> {
        let command = Command::CompleteTask {
            task_id: TaskId(task_id.to_owned()),
            attempt,
            output: output.clone(),
            metrics: task_metrics(metrics),
        };
        self.report(task_id, attempt, command).await
    }

    pub(crate) async fn fail(
        &self,
        task_id: &str,
        attempt: u32,
        error: &ErrorReport,
        retry_after: Option<std::time::Duration>,
        metrics: Option<Metrics>,
    ) -> Result<(), Error> {
        let command = Command::FailTask {
            task_id: TaskId(task_id.to_owned()),
            attempt,
            error: ErrorInfo {
                kind: error.kind.clone(),
                message: error.message.clone(),
                retryable: error.retryable,
            },
            retry_after_ms: retry_after.map(crate::task::retry_after_ms),
            metrics: task_metrics(metrics),
        };
        self.report(task_id, attempt, command).await
    }

    /// Sends an attempt's result. Its id is derived from the attempt, so the worker's
    /// retries of one report are applied once. A missing reply is not an error: the result
    /// is durable on the commands topic and the engine will apply it.
    async fn report(&self, task_id: &str, attempt: u32, command: Command) -> Result<(), Error> {
        let id = CommandId::derived(&format!(
            "{}/report/{task_id}/{attempt}",
            self.inner.rpc.instance()
        ));
        match self.send(&id.0, command).await {
            Ok(_) => Ok(()),
            Err(Error::Unanswered { command, waited }) => {
                tracing::debug!(
                    command,
                    ?waited,
                    "no reply to the result yet; it is durable and will be applied"
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
