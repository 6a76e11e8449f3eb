//! Workflow definitions: the public model users register as YAML or JSON.
//!
//! [`Definition::from_source`] parses and validates a raw document (unknown fields, duplicate
//! ids, bad jq, bad durations, unknown compensations are all rejected with the JSON path of
//! the offending value) and compiles it into the typed model below, with every default
//! resolved, so the state machine never has to look at raw documents.

mod parse;

use crate::expr::{Expr, Template};
use std::collections::BTreeMap;
use std::time::Duration;

pub use parse::{DefinitionError, SourceFormat};

/// A validated, compiled definition at one version.
#[derive(Debug, Clone)]
pub struct Definition {
    /// The definition's name, shared by all its versions.
    pub name: String,
    /// The version it was registered as.
    pub version: u32,
    /// Free text for people.
    pub description: Option<String>,
    /// JSON Schema for the start input, compiled.
    pub input_schema: Option<InputSchema>,
    /// jq producing the run's output; `None` means an object of every completed top-level
    /// step's output by step id.
    pub output: Option<Expr>,
    /// The top-level sequence (never empty); containers hold the nested steps.
    pub steps: Vec<Step>,
    /// Compensation tasks by name; task and `http` steps name theirs in `compensate`.
    pub compensations: BTreeMap<String, Compensation>,
    /// Service level of a whole run, from its start.
    pub sla: Option<Sla>,
    /// Steps run only as an `http` step's `fallback` (top-level `fallbacks:`).
    pub fallbacks: Vec<Step>,
    /// The normalised JSON document this was compiled from (what is stored in the log).
    pub source: serde_json::Value,
}

/// One step of the tree, with every default resolved.
#[derive(Debug, Clone)]
pub struct Step {
    /// Unique across the whole definition, nesting and `fallbacks` included.
    pub id: String,
    /// Skipped unless this evaluates to `true`.
    pub when: Option<Expr>,
    /// Resolved: the step's own, else `defaults.on_failure`, else `compensate` when the
    /// definition has compensations, else `fail`.
    pub on_failure: OnFailure,
    /// Service level of this step, from when it starts.
    pub sla: Option<Sla>,
    /// What the step does.
    pub kind: StepKind,
}

/// `sla: 10m` or `sla: {duration: 10m, warn_at: 80%}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sla {
    /// Time allowed before the breach.
    pub duration: Duration,
    /// Fraction of `duration`, strictly between 0 and 1, at which a warning is emitted
    /// before the breach; `None`: no warning.
    pub warn_at: Option<f64>,
}

impl Sla {
    /// When the warning is due, counted from the start; `None` without `warn_at`.
    pub fn warn_after(&self) -> Option<Duration> {
        self.warn_at.map(|f| self.duration.mul_f64(f))
    }
}

/// Who a human task is for: a person, a group, or both.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Assignment {
    /// The person it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// The group it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// A step a person completes through the inbox API.
#[derive(Debug, Clone)]
pub struct HumanSpec {
    /// Rendered with the run context when the task is created (`{jq}` placeholders).
    pub title: Template,
    /// Who it is for (an assignee, a group, or both; never neither).
    pub assign: Assignment,
    /// JSON Schema the completing output must satisfy, compiled, and its source.
    pub form: Option<(InputSchema, serde_json::Value)>,
    /// After this long without completion the step fails (then `on_failure` applies).
    pub timeout: Option<Duration>,
    /// Reassign automatically when nobody completed the task in time: after how long, and
    /// to whom.
    pub escalate: Option<(Duration, Assignment)>,
}

/// What a step does: the one kind key it carries in the document.
#[derive(Debug, Clone)]
pub enum StepKind {
    /// A `task` or an `http` step (`http` set).
    Task(TaskSpec),
    /// Runs the steps of the first case whose condition holds, else `default`.
    Switch {
        /// Conditions (jq, truthy) with their steps, tried in order; at least one.
        cases: Vec<(Expr, Vec<Step>)>,
        /// Steps when no case holds; may be empty.
        default: Vec<Step>,
    },
    /// Runs its branches side by side.
    Parallel {
        /// When the step completes: all branches done, or the first one (the others are
        /// cancelled).
        join: Join,
        /// Each a sequence of steps; at least one branch, none empty.
        branches: Vec<Vec<Step>>,
    },
    /// Runs `steps` once per item, each iteration under the key prefix `<key>[<i>].`.
    Foreach {
        /// jq giving the array to iterate, evaluated once when the step starts.
        items: Expr,
        /// Iterations in flight at most; `u32::MAX` when the document sets none.
        max_concurrency: u32,
        /// The sequence each iteration runs; not empty.
        steps: Vec<Step>,
    },
    /// Completes after this long.
    Wait(Duration),
    /// Waits for `POST /workflows/{id}/signals/{name}`; the payload is the step's output.
    /// A signal that arrived earlier is kept and consumed here.
    Signal {
        /// The signal name it takes.
        name: String,
        /// The step fails (`timeout.signal`) when no signal came within this long.
        timeout: Option<Duration>,
    },
    /// A task a person completes through the inbox.
    Human(Box<HumanSpec>),
    /// Starts a child run and waits for its end; its output is the child's.
    Workflow {
        /// Name of the child's definition.
        name: String,
        /// Its version; `None`: the latest when the child starts.
        version: Option<u32>,
        /// jq over the run context for the child's input; `None` passes this run's input.
        input: Option<Expr>,
    },
}

/// A unit of work handed to a worker polling `queue`.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    /// Task type, e.g. `reserve-stock`.
    pub task: String,
    /// Defaults to the task type.
    pub queue: String,
    /// jq over the run context; `None` means `.input`.
    pub input: Option<Expr>,
    /// Resolved from the step, its containers and `defaults`, field by field.
    pub retry: RetryPolicy,
    /// Start-to-close timeout of one attempt.
    pub timeout: Duration,
    /// An attempt fails when it sends no heartbeat for this long.
    pub heartbeat_timeout: Option<Duration>,
    /// An attempt fails when no worker starts it within this long.
    pub schedule_to_start_timeout: Option<Duration>,
    /// Name in `Definition::compensations`.
    pub compensate: Option<String>,
    /// Set for `http` steps: the saga processor makes the call instead of a worker.
    pub http: Option<Box<HttpSpec>>,
    /// Step id in `fallbacks` to run instead while the target's circuit breaker is open.
    pub fallback: Option<String>,
}

/// An HTTP call to a service, rendered per attempt from the run context (plus `.task_id`).
#[derive(Debug, Clone)]
pub struct HttpSpec {
    /// Upper case, `GET` by default.
    pub method: String,
    /// Starts with `http://`, `https://` or a placeholder.
    pub url: Template,
    /// Header names with their value templates.
    pub headers: Vec<(String, Template)>,
    /// jq producing the JSON body.
    pub body: Option<Expr>,
    /// Statuses that count as success; empty means any 2xx.
    pub success: Vec<u16>,
    /// Per-attempt timeout of the call; `None`: the step's start-to-close `timeout`.
    pub timeout: Option<Duration>,
    /// Per-step override of the circuit breaker thresholds.
    pub breaker: Option<BreakerSpec>,
}

/// Circuit breaker thresholds (config defaults, overridable per step).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BreakerSpec {
    /// Consecutive failures that open the breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// Failure ratio, in (0, 1], over the window that opens it (with at least `min_calls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_ratio: Option<f64>,
    /// Calls the window must hold before `failure_ratio` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_calls: Option<u32>,
    /// Length of the window `failure_ratio` is measured over, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u64>,
    /// How long it stays open before a half-open probe, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_ms: Option<u64>,
}

/// A task that undoes a completed step, run while the run compensates. A compensation
/// that fails after its attempts is parked, not failed.
#[derive(Debug, Clone)]
pub struct Compensation {
    /// Task type.
    pub task: String,
    /// Defaults to the task type.
    pub queue: String,
    /// jq over the run context; `None` means `.input`.
    pub input: Option<Expr>,
    /// Resolved from the compensation and `defaults`.
    pub retry: RetryPolicy,
    /// Start-to-close timeout of one attempt.
    pub timeout: Duration,
}

/// How often a task is attempted and how long to wait in between.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (at least 1).
    pub max_attempts: u32,
    /// Wait before the second attempt.
    pub initial_interval: Duration,
    /// Each further wait is the previous one times this (at least 1.0).
    pub backoff_coefficient: f64,
    /// Cap on the wait (at least `initial_interval`).
    pub max_interval: Duration,
    /// Fraction of the interval, 0.0..=1.0, added or removed. Pseudo-random but
    /// deterministic: derived from the task id and attempt, so a replay waits alike.
    pub jitter: f64,
    /// Error types that are never retried.
    pub non_retryable: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            max_interval: Duration::from_secs(60),
            jitter: 0.0,
            non_retryable: Vec::new(),
        }
    }
}

/// Start-to-close timeout of an attempt when neither the step nor `defaults` sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// What a step's failure (after its attempts) does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Undo the completed steps, then end the run `compensated`.
    Compensate,
    /// Park the step's task for an operator. A step without a task (e.g. a `signal`
    /// timeout, a failed expression) fails the run instead.
    Park,
    /// End the run `failed`.
    Fail,
    /// Mark the step failed and go on without its output.
    Continue,
}

/// When a `parallel` step completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// Once every branch is done; its output is the array of branch outputs.
    All,
    /// Once one branch is done; the others are cancelled and its output is the winner's.
    Any,
}

/// A compiled JSON Schema for start inputs.
#[derive(Clone)]
pub struct InputSchema(pub std::sync::Arc<jsonschema::Validator>);

impl std::fmt::Debug for InputSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InputSchema")
    }
}

impl InputSchema {
    /// `Err` lists every violation as `<json pointer>: <message>`.
    pub fn validate(&self, input: &serde_json::Value) -> Result<(), String> {
        let errors: Vec<String> = self
            .0
            .iter_errors(input)
            .map(|e| format!("{}: {}", display_pointer(&e.instance_path().to_string()), e))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

fn display_pointer(p: &str) -> String {
    if p.is_empty() {
        "/".to_string()
    } else {
        p.to_string()
    }
}

impl Definition {
    /// Finds a step anywhere in the tree by its (definition-wide unique) id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        fn find<'a>(steps: &'a [Step], id: &str) -> Option<&'a Step> {
            for s in steps {
                if s.id == id {
                    return Some(s);
                }
                let found = match &s.kind {
                    StepKind::Switch { cases, default } => cases
                        .iter()
                        .find_map(|(_, b)| find(b, id))
                        .or_else(|| find(default, id)),
                    StepKind::Parallel { branches, .. } => {
                        branches.iter().find_map(|b| find(b, id))
                    }
                    StepKind::Foreach { steps, .. } => find(steps, id),
                    _ => None,
                };
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        find(&self.steps, id).or_else(|| find(&self.fallbacks, id))
    }
}
