//! The command bus: how the API asks the engine to change something and learns the answer.
//!
//! The API never changes state itself. It appends a
//! [`CommandEnvelope`](distorch_domain::command::CommandEnvelope) to the commands topic with
//! `reply_to` = this process's instance id; the engine appends a
//! [`Reply`](distorch_domain::command::Reply) keyed by that id to the replies topic, and a
//! background reader completes the waiting request.
//!
//! The request/reply machinery (the batching writer: concurrent HTTP requests share one log
//! append; the reply reader) is [`distorch_eventlog::rpc`], shared with workers that take
//! tasks straight from the log. This module adds what is the API's: command envelopes,
//! error mapping and metrics.

use crate::error::ApiError;
use crate::metrics::ApiMetrics;
use distorch_domain::command::{Command, Outcome};
use distorch_domain::ids::CommandId;
use distorch_domain::topics::Topics;
use distorch_eventlog::rpc::{Rpc, Unanswered};
use distorch_eventlog::{EventLog, NewRecord};
use distorch_tasks::{Starter, command_record, decode_reply};
use std::sync::Arc;
use std::time::Duration;

/// Publishes commands and awaits the engine's replies. Cheap to clone.
#[derive(Clone)]
pub struct CommandBus {
    inner: Arc<Inner>,
}

struct Inner {
    rpc: Rpc<Outcome>,
    /// Starts polled attempts over the same reply reader and writer.
    starter: Arc<Starter>,
    commands_topic: String,
    timeout: Duration,
    metrics: ApiMetrics,
}

impl CommandBus {
    /// Creates the commands and replies topics if missing, positions the reply reader at the
    /// current end of this instance's replies partition and starts it. The position is taken
    /// before this returns, so no reply to a command sent through the bus can be missed.
    pub async fn start(
        log: Arc<dyn EventLog>,
        topics: &Topics,
        partitions: &crate::Partitions,
        timeout: Duration,
        metrics: ApiMetrics,
    ) -> Result<Self, ApiError> {
        ensure_topic(log.as_ref(), &topics.commands(), partitions.commands).await?;
        ensure_topic(log.as_ref(), &topics.replies(), partitions.replies).await?;

        let instance = uuid::Uuid::new_v4().to_string();
        let rpc = Rpc::start(log, &topics.replies(), instance.clone(), decode_reply).await?;
        tracing::info!(%instance, "command bus started");
        let starter = Starter::new(rpc.clone(), topics.commands(), timeout);
        Ok(Self {
            inner: Arc::new(Inner {
                rpc,
                starter: Arc::new(starter),
                commands_topic: topics.commands(),
                timeout,
                metrics,
            }),
        })
    }

    /// The `reply_to` value of this process.
    pub fn instance_id(&self) -> &str {
        self.inner.rpc.instance()
    }

    /// Starts polled task attempts through this bus's reply reader and writer.
    pub fn starter(&self) -> Arc<Starter> {
        self.inner.starter.clone()
    }

    /// Whether replies are being read (for `/readyz`).
    pub fn is_ready(&self) -> bool {
        self.inner.rpc.is_ready()
    }

    /// Sends one command and waits for the engine's outcome.
    pub async fn send(&self, command: Command) -> Result<Outcome, ApiError> {
        let mut outcomes = self.send_many(vec![command]).await?;
        outcomes.pop().expect("one outcome per command")
    }

    /// Sends commands in one append and waits for every outcome (one shared deadline).
    /// The outer error means nothing was appended; an inner error (timeout) concerns only
    /// that command, which is durable and will still be applied.
    pub async fn send_many(
        &self,
        commands: Vec<Command>,
    ) -> Result<Vec<Result<Outcome, ApiError>>, ApiError> {
        let inner = &self.inner;
        let mut requests = Vec::with_capacity(commands.len());
        let mut names = Vec::with_capacity(commands.len());
        for command in commands {
            let id = uuid::Uuid::new_v4().to_string();
            names.push(command.name());
            let reply_to = Some(inner.rpc.instance().to_owned());
            let record = self.record(CommandId(id.clone()), reply_to, command)?;
            requests.push((id, record));
        }

        let answers = match inner.rpc.request(requests, inner.timeout).await {
            Ok(answers) => answers,
            Err(e) => {
                for name in &names {
                    inner.metrics.command(name, "error");
                }
                return Err(ApiError::Unavailable(format!(
                    "could not append the command: {e}"
                )));
            }
        };
        let outcomes = answers
            .into_iter()
            .zip(names)
            .map(|(answer, name)| {
                let outcome = answer.map_err(|unanswered| match unanswered {
                    Unanswered::Timeout => ApiError::Timeout(inner.timeout.as_secs_f64()),
                    Unanswered::Stopped => ApiError::Unavailable(
                        "the reply reader stopped before the engine answered; the command is \
                         durable and will still be applied"
                            .into(),
                    ),
                });
                inner.metrics.command(
                    name,
                    match &outcome {
                        Ok(Outcome::Accepted { .. }) => "accepted",
                        Ok(Outcome::Rejected { .. }) => "rejected",
                        Err(ApiError::Timeout(_)) => "timeout",
                        Err(_) => "error",
                    },
                );
                outcome
            })
            .collect();
        Ok(outcomes)
    }

    /// Appends a command without asking for a reply; returns once it is durable.
    pub async fn publish(&self, command: Command) -> Result<(), ApiError> {
        let name = command.name();
        let record = self.record(CommandId(uuid::Uuid::new_v4().to_string()), None, command)?;
        let result = self
            .inner
            .rpc
            .append(vec![record])
            .await
            .map_err(|e| ApiError::Unavailable(format!("could not append the command: {e}")));
        self.inner
            .metrics
            .command(name, if result.is_ok() { "published" } else { "error" });
        result
    }

    fn record(
        &self,
        id: CommandId,
        reply_to: Option<String>,
        command: Command,
    ) -> Result<NewRecord, ApiError> {
        let name = command.name();
        command_record(&self.inner.commands_topic, id, reply_to, command)
            .ok_or_else(|| ApiError::BadRequest(format!("{name} names a malformed task id")))
    }
}

/// Creates a topic; an existing one with another partition count is accepted as is,
/// since the engine may have created it first with its own configuration.
pub(crate) async fn ensure_topic(
    log: &dyn EventLog,
    topic: &str,
    partitions: u32,
) -> Result<(), ApiError> {
    Ok(distorch_eventlog::rpc::ensure_topic(log, topic, partitions).await?)
}
