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
    pub name: String,
    pub version: u32,
    pub description: Option<String>,
    /// JSON Schema for the start input, compiled.
    pub input_schema: Option<InputSchema>,
    /// jq producing the run's output; `None` means `{<root step id>: output}`.
    pub output: Option<Expr>,
    pub steps: Vec<Step>,
    pub compensations: BTreeMap<String, Compensation>,
    /// Service level of a whole run, from its start.
    pub sla: Option<Sla>,
    /// Steps run only as an `http` step's `fallback` (top-level `fallbacks:`).
    pub fallbacks: Vec<Step>,
    /// The normalised JSON document this was compiled from (what is stored in the log).
    pub source: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    /// Skipped unless this evaluates to `true`.
    pub when: Option<Expr>,
    /// Resolved: the step's own, else `defaults.on_failure`, else `compensate` when the
    /// definition has compensations, else `fail`.
    pub on_failure: OnFailure,
    /// Service level of this step, from when it starts.
    pub sla: Option<Sla>,
    pub kind: StepKind,
}

/// `sla: 10m` or `sla: {duration: 10m, warn_at: 80%}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sla {
    pub duration: Duration,
    /// Fraction of `duration` (0..1) at which a warning is emitted before the breach.
    pub warn_at: Option<f64>,
}

impl Sla {
    pub fn warn_after(&self) -> Option<Duration> {
        self.warn_at.map(|f| self.duration.mul_f64(f))
    }
}

/// Who a human task is for: a person, a group, or both.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Assignment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// A step a person completes through the inbox API.
#[derive(Debug, Clone)]
pub struct HumanSpec {
    /// Rendered with the run context when the task is created (`{jq}` placeholders).
    pub title: Template,
    pub assign: Assignment,
    /// JSON Schema the completing output must satisfy, compiled, and its source.
    pub form: Option<(InputSchema, serde_json::Value)>,
    /// After this long without completion the step fails (then `on_failure` applies).
    pub timeout: Option<Duration>,
    /// Reassign automatically when nobody completed the task in time.
    pub escalate: Option<(Duration, Assignment)>,
}

#[derive(Debug, Clone)]
pub enum StepKind {
    Task(TaskSpec),
    Switch {
        cases: Vec<(Expr, Vec<Step>)>,
        default: Vec<Step>,
    },
    Parallel {
        join: Join,
        branches: Vec<Vec<Step>>,
    },
    Foreach {
        items: Expr,
        max_concurrency: u32,
        steps: Vec<Step>,
    },
    Wait(Duration),
    /// Waits for `POST /workflows/{id}/signals/{name}`; the payload is the step's output.
    /// A signal that arrived earlier is kept and consumed here.
    Signal {
        name: String,
        timeout: Option<Duration>,
    },
    Human(Box<HumanSpec>),
    Workflow {
        name: String,
        version: Option<u32>,
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
    pub retry: RetryPolicy,
    /// Start-to-close timeout of one attempt.
    pub timeout: Duration,
    pub heartbeat_timeout: Option<Duration>,
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
    pub method: String,
    pub url: Template,
    pub headers: Vec<(String, Template)>,
    /// jq producing the JSON body.
    pub body: Option<Expr>,
    /// Statuses that count as success; empty means any 2xx.
    pub success: Vec<u16>,
    /// Per-attempt timeout of the call.
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
    /// Failure ratio (0..1) over the window that opens it (with at least `min_calls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_calls: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u64>,
    /// How long it stays open before a half-open probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Compensation {
    pub task: String,
    pub queue: String,
    /// jq over the run context; `None` means `.input`.
    pub input: Option<Expr>,
    pub retry: RetryPolicy,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_interval: Duration,
    pub backoff_coefficient: f64,
    pub max_interval: Duration,
    /// Fraction of the interval, 0.0..=1.0, added or removed at random.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    Compensate,
    Park,
    Fail,
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    All,
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
