#![warn(missing_docs)]
//! The saga processor: stateless reactions to workflow events that cross a run's boundary.
//! Each output is a pure function of one event ([`react`]), with a command id derived from
//! the event, so replaying the events topic yields duplicates the engine drops.
//!
//! Today it starts child runs (`ChildWorkflowRequested` -> `StartWorkflow`), tells parents
//! when a child ends (terminal event with a parent -> `ChildFinished`), and cancels children
//! a parent no longer waits for. It depends only on the [`EventLog`] port.
//!
//! The [`alerts::Alerter`] posts SLA warnings and breaches to webhooks, in its own consumer
//! group so slow receivers never delay the saga.
//!
//! Entry points: [`Saga::run`], [`react`], [`Alerter::run`].

pub mod alerts;
pub mod http;

pub use alerts::{AlertMetrics, Alerter, AlertsConfig};
pub use http::{HttpConfig, HttpExecutor, HttpMetrics};

use distorch_domain::CommandId;
use distorch_domain::command::{Command, CommandEnvelope, ErrorInfo, ParentRef};
use distorch_domain::event::{Event, EventEnvelope};
use distorch_domain::topics::Topics;
use distorch_eventlog::offsets::COMMIT_INTERVAL;
use distorch_eventlog::offsets::PacedCommits;
use distorch_eventlog::{EventLog, LogError, NewRecord, Record};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Why the saga processor, the alerter or the HTTP executor could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    /// A log call failed (poll, append, topic creation); the consumer stops, and a restart
    /// resumes after the committed offsets.
    #[error("event log: {0}")]
    Log(#[from] LogError),
    /// A configuration was rejected at construction (or an HTTP client could not be built);
    /// the message names the section (`alerts:`, `http:`).
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// How the [`Saga`] consumes the events topic.
#[derive(Debug, Clone)]
pub struct SagaConfig {
    /// Its consumer group on the events topic (default `saga`).
    pub group: String,
    /// Most events read per poll (default 2000).
    pub batch: usize,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            group: "saga".into(),
            batch: 2000,
        }
    }
}

/// The commands one event calls for.
pub fn react(env: &EventEnvelope) -> Vec<CommandEnvelope> {
    let id =
        |what: &str| CommandId::derived(&format!("saga/{what}/{}/{}", env.workflow_id, env.seq));
    let cmd = |what: &str, command| {
        vec![CommandEnvelope {
            id: id(what),
            reply_to: None,
            command,
        }]
    };
    let finished = |parent: &ParentRef, output, error| {
        cmd(
            "child-finished",
            Command::ChildFinished {
                workflow_id: parent.workflow_id,
                step_key: parent.step_key.clone(),
                child_id: env.workflow_id,
                output,
                error,
            },
        )
    };
    match &env.event {
        Event::ChildWorkflowRequested {
            step_key,
            child_id,
            definition,
            version,
            input,
        } => cmd(
            "start-child",
            Command::StartWorkflow {
                workflow_id: *child_id,
                definition: definition.clone(),
                version: *version,
                input: input.clone(),
                idempotency_key: None,
                parent: Some(ParentRef {
                    workflow_id: env.workflow_id,
                    step_key: step_key.clone(),
                }),
            },
        ),
        Event::ChildCancelRequested { child_id, .. } => cmd(
            "cancel-child",
            Command::CancelWorkflow {
                workflow_id: *child_id,
                compensate: false,
                reason: Some(format!("parent {} no longer waits for it", env.workflow_id)),
            },
        ),
        Event::WorkflowCompleted {
            output,
            parent: Some(p),
        } => finished(p, Some(output.clone()), None),
        Event::WorkflowFailed {
            error,
            parent: Some(p),
        } => {
            let error = ErrorInfo {
                kind: "child.failed".into(),
                message: error.message.clone(),
                retryable: false,
            };
            finished(p, None, Some(error))
        }
        Event::WorkflowCompensated { parent: Some(p) } => {
            let error = ErrorInfo::new(
                "child.compensated",
                "the child run failed and was compensated",
            );
            finished(
                p,
                None,
                Some(ErrorInfo {
                    retryable: false,
                    ..error
                }),
            )
        }
        Event::WorkflowCancelled {
            parent: Some(p),
            reason,
        } => {
            let message = reason
                .clone()
                .unwrap_or_else(|| "the child run was cancelled".into());
            finished(
                p,
                None,
                Some(ErrorInfo {
                    kind: "child.cancelled".into(),
                    message,
                    retryable: false,
                }),
            )
        }
        _ => Vec::new(),
    }
}

/// Whether an event's JSON may be one [`react`] answers: a child request (its type begins
/// with `child_`) or an event that names the run's parent (a `ParentRef` object; a step's
/// `parent` is a string). Most events are neither, and skipping them saves decoding every
/// event of every run. A false positive only costs the decode.
fn may_call_for_commands(payload: &[u8]) -> bool {
    contains(payload, b"\"child_") || contains(payload, b"\"parent\":{")
}

/// Whether `needle` occurs in `payload`: the byte scan of the prefilters that spare the
/// saga's consumers decoding events that cannot concern them.
pub(crate) fn contains(payload: &[u8], needle: &[u8]) -> bool {
    payload.windows(needle.len()).any(|w| w == needle)
}

/// The events among `records` that pass the byte prefilter `may_matter`, decoded; an
/// undecodable one is logged and skipped so it cannot stall its partition.
pub(crate) fn decode_matching<'a>(
    records: &'a [Record],
    may_matter: fn(&[u8]) -> bool,
) -> impl Iterator<Item = EventEnvelope> + 'a {
    records
        .iter()
        .filter(move |r| may_matter(&r.payload))
        .filter_map(|rec| match serde_json::from_slice(&rec.payload) {
            Ok(env) => Some(env),
            Err(e) => {
                tracing::error!(partition = rec.partition, offset = rec.offset, error = %e, "undecodable event skipped");
                None
            }
        })
}

/// The saga processor: appends the commands [`react`] derives from the events topic.
pub struct Saga {
    log: Arc<dyn EventLog>,
    topics: Topics,
    config: SagaConfig,
}

impl Saga {
    /// A processor that does nothing until [`Saga::run`].
    pub fn new(log: Arc<dyn EventLog>, topics: Topics, config: SagaConfig) -> Self {
        Self {
            log,
            topics,
            config,
        }
    }

    /// Consumes the events topic until `shutdown`; commits only after its commands are durable.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), SagaError> {
        let mut consumer = self
            .log
            .consumer(&self.config.group, &[self.topics.events()])
            .await?;
        tokio::pin!(shutdown);
        let mut commits = PacedCommits::new(COMMIT_INTERVAL);
        loop {
            let records = tokio::select! {
                r = consumer.poll(self.config.batch, Duration::from_millis(500)) => r?,
                () = &mut shutdown => break,
            };
            if !records.is_empty() {
                self.react_to(&records).await?;
                commits.handled(&records);
            }
            if let Err(e) = commits.commit_due(&mut *consumer).await {
                tracing::warn!(error = %e, "saga: committing offsets failed; will retry");
            }
        }
        if let Err(e) = commits.commit_rest(&mut *consumer).await {
            tracing::warn!(error = %e, "saga: last commit failed; its events will be handled again");
        }
        Ok(())
    }

    /// Appends the commands `records` call for; returns once they are durable.
    async fn react_to(&self, records: &[Record]) -> Result<(), SagaError> {
        let mut out = Vec::new();
        for env in decode_matching(records, may_call_for_commands) {
            for cmd in react(&env) {
                let key = cmd.command.key().unwrap_or_default();
                let payload = serde_json::to_vec(&cmd).expect("commands serialise");
                out.push(NewRecord::new(self.topics.commands(), key, payload));
            }
        }
        if !out.is_empty() {
            self.log.append(out).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(event: Event) -> EventEnvelope {
        EventEnvelope {
            workflow_id: uuid_from(1),
            seq: 7,
            at_ms: 0,
            command_id: None,
            v: 1,
            event,
        }
    }

    fn uuid_from(n: u128) -> distorch_domain::ids::WorkflowId {
        serde_json::from_value(json!(format!("00000000-0000-0000-0000-{n:012}"))).unwrap()
    }

    #[test]
    fn a_requested_child_is_started_with_its_parent_and_a_replay_stable_id() {
        let child = uuid_from(2);
        let e = env(Event::ChildWorkflowRequested {
            step_key: "invoice".into(),
            child_id: child,
            definition: "invoicing".into(),
            version: None,
            input: json!({"order": 1}),
        });
        let cmds = react(&e);
        assert_eq!(cmds.len(), 1);
        assert_eq!(cmds, react(&e), "same event, same command id");
        match &cmds[0].command {
            Command::StartWorkflow {
                workflow_id,
                parent: Some(p),
                input,
                ..
            } => {
                assert_eq!(*workflow_id, child);
                assert_eq!(p.step_key, "invoice");
                assert_eq!(input, &json!({"order": 1}));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn the_prefilter_lets_through_every_event_that_calls_for_a_command() {
        let parent = || {
            Some(ParentRef {
                workflow_id: uuid_from(9),
                step_key: "invoice".into(),
            })
        };
        let reacting = [
            Event::ChildWorkflowRequested {
                step_key: "invoice".into(),
                child_id: uuid_from(2),
                definition: "invoicing".into(),
                version: None,
                input: json!({}),
            },
            Event::ChildCancelRequested {
                step_key: "invoice".into(),
                child_id: uuid_from(2),
            },
            Event::WorkflowCompleted {
                output: json!(1),
                parent: parent(),
            },
            Event::WorkflowFailed {
                error: ErrorInfo::new("x", "boom"),
                parent: parent(),
            },
            Event::WorkflowCompensated { parent: parent() },
            Event::WorkflowCancelled {
                reason: None,
                parent: parent(),
            },
        ];
        for event in reacting {
            let env = env(event);
            assert!(!react(&env).is_empty(), "{env:?} calls for a command");
            let json = serde_json::to_vec(&env).expect("encode");
            assert!(may_call_for_commands(&json), "{env:?} must pass");
        }
        let quiet = [
            Event::StepStarted {
                step_key: "pack[0].item".into(),
                step_id: "item".into(),
                parent: Some("pack".into()),
            },
            Event::WorkflowCompleted {
                output: json!({"order": 7}),
                parent: None,
            },
        ];
        for event in quiet {
            let env = env(event);
            assert!(react(&env).is_empty());
            let json = serde_json::to_vec(&env).expect("encode");
            assert!(
                !may_call_for_commands(&json),
                "{env:?} is skipped undecoded"
            );
        }
    }

    #[test]
    fn a_child_that_ends_tells_its_parent_and_a_top_level_run_tells_no_one() {
        let parent = ParentRef {
            workflow_id: uuid_from(9),
            step_key: "invoice".into(),
        };
        let done = react(&env(Event::WorkflowCompleted {
            output: json!(5),
            parent: Some(parent.clone()),
        }));
        match &done[0].command {
            Command::ChildFinished {
                workflow_id,
                output,
                error: None,
                ..
            } => {
                assert_eq!(*workflow_id, parent.workflow_id);
                assert_eq!(output, &Some(json!(5)));
            }
            other => panic!("unexpected {other:?}"),
        }
        let failed = react(&env(Event::WorkflowFailed {
            error: ErrorInfo::new("x", "boom"),
            parent: Some(parent),
        }));
        assert!(
            matches!(&failed[0].command, Command::ChildFinished { error: Some(e), .. } if e.kind == "child.failed")
        );
        assert!(
            react(&env(Event::WorkflowCompleted {
                output: json!(1),
                parent: None
            }))
            .is_empty()
        );
    }
}
