//! The execution path of a run: which steps ran, in what order, with what outcome. A pure
//! fold over the run's events ([`ExecutionPath::build`]), served by the API next to the run's
//! history; nothing stores it.
//!
//! Choices the fold makes:
//! - Entries are in the order steps began (`StepStarted`, `StepSkipped`, or a compensation
//!   task being scheduled). A compensation is an entry of its own, placed when it began, and
//!   the step it undid turns `compensated` once it succeeds.
//! - The kind of a step comes from its definition when the caller has it; otherwise it is
//!   inferred from the events (a signal step with a timeout then looks like a `wait`, and a
//!   step with no events of its own but children looks like a `parallel`).
//! - A `switch` lists the first-level steps of the branches it did not take, right after it,
//!   as `skipped` with [`SkipReason::BranchNotTaken`] (needs the definition), so the path
//!   shows what did not run as well as what did.
//! - When a run ends, every entry still `running` (a wait, a container, a signal step) ends
//!   `cancelled`: nothing can finish it any more.

use crate::command::ErrorInfo;
use crate::definition::{Definition, Step, StepKind};
use crate::event::{Event, EventEnvelope, TaskKind};
use crate::ids::{TaskId, WorkflowId};
use crate::view::rfc3339;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;

/// What sort of step an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = StepKind))]
#[cfg_attr(
    feature = "graphql",
    derive(async_graphql::Enum),
    graphql(name = "StepKind")
)]
pub enum PathKind {
    /// A `task` step, run by a worker.
    Task,
    /// An `http` step: DisTorch calls the service itself.
    Http,
    /// A `human` step, done by a person through the inbox.
    Human,
    /// A `switch`: runs the steps of the first case whose condition holds, else its default.
    Switch,
    /// A `parallel` step: runs its branches side by side.
    Parallel,
    /// A `foreach` step: runs its steps once per item.
    Foreach,
    /// A `wait` step: a fixed delay.
    Wait,
    /// A `signal` step: waits for a signal of its name sent to the run.
    Signal,
    /// A child run (`workflow:` step).
    Child,
    /// The undo task of an earlier step.
    Compensation,
}

impl PathKind {
    /// The name used in JSON, e.g. `task`, `child`.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Task => "task",
            PathKind::Http => "http",
            PathKind::Human => "human",
            PathKind::Switch => "switch",
            PathKind::Parallel => "parallel",
            PathKind::Foreach => "foreach",
            PathKind::Wait => "wait",
            PathKind::Signal => "signal",
            PathKind::Child => "child",
            PathKind::Compensation => "compensation",
        }
    }

    fn of(kind: &StepKind) -> PathKind {
        match kind {
            StepKind::Task(spec) if spec.http.is_some() => PathKind::Http,
            StepKind::Task(_) => PathKind::Task,
            StepKind::Switch { .. } => PathKind::Switch,
            StepKind::Parallel { .. } => PathKind::Parallel,
            StepKind::Foreach { .. } => PathKind::Foreach,
            StepKind::Wait(_) => PathKind::Wait,
            StepKind::Signal { .. } => PathKind::Signal,
            StepKind::Human(_) => PathKind::Human,
            StepKind::Workflow { .. } => PathKind::Child,
        }
    }
}

/// How an entry ended, or that it has not yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = StepOutcome))]
#[cfg_attr(
    feature = "graphql",
    derive(async_graphql::Enum),
    graphql(name = "StepOutcome")
)]
pub enum Outcome {
    /// Not over yet: an attempt is pending or out, or it waits for a timer, a signal, a
    /// child run or the steps inside it.
    Running,
    /// Ended successfully.
    Completed,
    /// Failed after its attempts; with `on_failure: continue` the run went on.
    Failed,
    /// Waiting in the dead-letter queue for an operator.
    Parked,
    /// Did not run (its condition was false, or its `switch` branch was not taken), or an
    /// operator skipped its task; the skip reason says which.
    Skipped,
    /// Completed, then undone by its compensation.
    Compensated,
    /// Stopped before it ended: the run ended, or no longer needed it (e.g. the other
    /// branches of a `parallel` with `join: any` once one finished).
    Cancelled,
}

impl Outcome {
    /// The name used in JSON, e.g. `running`, `parked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::Parked => "parked",
            Outcome::Skipped => "skipped",
            Outcome::Compensated => "compensated",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// Why an entry was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "graphql", derive(async_graphql::Enum))]
pub enum SkipReason {
    /// Its `when` was false.
    When,
    /// It is in a `switch` branch that was not chosen.
    BranchNotTaken,
    /// An operator skipped its task.
    Operator,
}

impl SkipReason {
    /// The name used in JSON, e.g. `branch_not_taken`.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::When => "when",
            SkipReason::BranchNotTaken => "branch_not_taken",
            SkipReason::Operator => "operator",
        }
    }
}

/// The branch a `switch` took; shown as `cases[<i>]` or `default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Branch {
    /// Index of the matching case.
    Case(usize),
    /// No case matched: the `default` steps ran.
    Default,
}

impl fmt::Display for Branch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Branch::Case(i) => write!(f, "cases[{i}]"),
            Branch::Default => f.write_str("default"),
        }
    }
}

impl Serialize for Branch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One step instance on the path.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = PathStep))]
#[cfg_attr(
    feature = "graphql",
    derive(async_graphql::SimpleObject),
    graphql(name = "PathStep")
)]
pub struct PathEntry {
    /// The step instance: the step id, prefixed by `<foreach key>[<i>].` per enclosing
    /// `foreach` iteration, or by `<step key>/` for a fallback step that runs in place of an
    /// `http` step. A compensation has the key of the step it undoes.
    pub step_key: String,
    /// Id of the step in the definition.
    pub step_id: String,
    /// Key of the enclosing container step; `null` at the top level and for a compensation.
    pub parent: Option<String>,
    /// What sort of step it is.
    pub kind: PathKind,
    /// How it ended, or that it has not yet.
    pub outcome: Outcome,
    /// Why it was skipped; `null` unless it was.
    pub skip_reason: Option<SkipReason>,
    /// `seq` of the run's event that began the entry; entries are in this order.
    pub seq: u64,
    /// When it began (RFC 3339); `null` for a step that never began (skipped).
    pub started_at: Option<String>,
    /// When it ended (RFC 3339); `null` while it runs or is parked, and for a step of a
    /// `switch` branch that was not taken.
    pub finished_at: Option<String>,
    /// Attempts made by the entry's task (0 for steps without one).
    pub attempts: u32,
    /// The task that runs it (task, `http`, human and compensation entries); `null` for
    /// other steps.
    pub task_id: Option<TaskId>,
    /// For a `switch`: the branch it took; `null` for other steps and before it chose.
    pub branch: Option<Branch>,
    /// For an `http` step whose breaker was open: id of the fallback step run instead;
    /// `null` otherwise.
    pub fallback: Option<String>,
    /// For a child-run step: the child's id; `null` for other steps.
    pub child_workflow_id: Option<WorkflowId>,
    /// Why it failed (or, while it retries, why its last attempt did); `null` otherwise.
    pub error: Option<ErrorInfo>,
}

/// The ordered entries of one run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExecutionPath {
    /// In the order the entries began (see the module doc).
    pub entries: Vec<PathEntry>,
}

impl ExecutionPath {
    /// Folds the run's events (in order) into its path. `definition` is the version the
    /// run uses; without it kinds are inferred and untaken branches are not listed.
    pub fn build(events: &[EventEnvelope], definition: Option<&Definition>) -> ExecutionPath {
        let mut fold = Fold {
            definition,
            path: ExecutionPath::default(),
            by_key: HashMap::new(),
            by_task: HashMap::new(),
            compensations: HashMap::new(),
        };
        for envelope in events {
            fold.apply(envelope);
        }
        fold.path
    }

    /// The entry of a step instance (not its compensation).
    pub fn entry(&self, step_key: &str) -> Option<&PathEntry> {
        self.entries
            .iter()
            .find(|e| e.step_key == step_key && e.kind != PathKind::Compensation)
    }
}

struct Fold<'a> {
    definition: Option<&'a Definition>,
    path: ExecutionPath,
    /// Step key -> index of its (non-compensation) entry.
    by_key: HashMap<String, usize>,
    /// Task id -> index of the entry the task belongs to.
    by_task: HashMap<TaskId, usize>,
    /// Compensation task id -> index of the step entry it undoes.
    compensations: HashMap<TaskId, usize>,
}

impl Fold<'_> {
    fn apply(&mut self, envelope: &EventEnvelope) {
        let at = rfc3339(envelope.at_ms);
        let seq = envelope.seq;
        match &envelope.event {
            Event::StepStarted {
                step_key,
                step_id,
                parent,
            } => {
                let i = self.begin(step_key, step_id, parent.clone(), seq);
                let e = &mut self.path.entries[i];
                e.outcome = Outcome::Running;
                e.started_at = Some(at);
            }
            Event::StepSkipped {
                step_key,
                step_id,
                parent,
            } => {
                let i = self.begin(step_key, step_id, parent.clone(), seq);
                let e = &mut self.path.entries[i];
                e.outcome = Outcome::Skipped;
                e.skip_reason = Some(SkipReason::When);
                e.finished_at = Some(at);
            }
            Event::StepCompleted { step_key, .. } => {
                self.finish_key(step_key, Outcome::Completed, &at, None)
            }
            Event::StepFailed { step_key, error } => {
                self.finish_key(step_key, Outcome::Failed, &at, Some(error.clone()))
            }
            Event::BranchChosen { step_key, branch } => {
                let branch = branch.map_or(Branch::Default, Branch::Case);
                self.with_key(step_key, |e| {
                    e.kind = PathKind::Switch;
                    e.branch = Some(branch);
                });
                self.list_untaken(step_key, branch, seq);
            }
            Event::ForeachStarted { step_key, .. } => {
                self.infer(step_key, PathKind::Foreach);
            }
            Event::TimerStarted { step_key, .. } => self.infer(step_key, PathKind::Wait),
            Event::ChildWorkflowRequested {
                step_key, child_id, ..
            } => {
                let child = *child_id;
                self.infer(step_key, PathKind::Child);
                self.with_key(step_key, |e| e.child_workflow_id = Some(child));
            }
            Event::FallbackTaken { step_key, fallback } => {
                let fallback = fallback.clone();
                self.with_key(step_key, |e| e.fallback = Some(fallback));
            }
            Event::TaskScheduled {
                task_id,
                step_key,
                step_id,
                kind,
                attempt,
                http,
                ..
            } => match kind {
                TaskKind::Compensation => {
                    self.compensation_scheduled(task_id, step_key, step_id, *attempt, seq, at)
                }
                TaskKind::Step | TaskKind::Human => {
                    let kind = match (kind, http) {
                        (TaskKind::Human, _) => PathKind::Human,
                        (_, Some(_)) => PathKind::Http,
                        _ => PathKind::Task,
                    };
                    let i = self.begin(step_key, step_id, None, seq);
                    self.by_task.insert(task_id.clone(), i);
                    self.infer(step_key, kind);
                    let e = &mut self.path.entries[i];
                    e.task_id = Some(task_id.clone());
                    e.attempts = *attempt;
                    e.outcome = Outcome::Running;
                    e.started_at.get_or_insert(at);
                    e.finished_at = None;
                }
            },
            Event::HumanTaskCreated {
                task_id,
                step_key,
                step_id,
                ..
            } => {
                let i = self.begin(step_key, step_id, None, seq);
                self.by_task.insert(task_id.clone(), i);
                self.infer(step_key, PathKind::Human);
                let e = &mut self.path.entries[i];
                e.task_id = Some(task_id.clone());
                e.attempts = 1;
            }
            Event::TaskCompleted { task_id, .. } => {
                self.finish_task(task_id, Outcome::Completed, &at, None);
                if let Some(&step) = self.compensations.get(task_id) {
                    self.path.entries[step].outcome = Outcome::Compensated;
                }
            }
            Event::TaskFailed {
                task_id,
                error,
                retry_at_ms,
                ..
            } => {
                if retry_at_ms.is_some() {
                    if let Some(e) = self.task_entry(task_id) {
                        e.error = Some(error.clone());
                    }
                } else {
                    self.finish_task(task_id, Outcome::Failed, &at, Some(error.clone()));
                }
            }
            Event::TaskParked { task_id, error } => {
                self.finish_task(task_id, Outcome::Parked, &at, Some(error.clone()));
                if let Some(e) = self.task_entry(task_id) {
                    // Parked is not over: an operator decides.
                    e.finished_at = None;
                }
            }
            Event::TaskRetried { task_id } => {
                if let Some(e) = self.task_entry(task_id) {
                    e.outcome = Outcome::Running;
                    e.finished_at = None;
                }
            }
            Event::TaskSkipped { task_id, .. } => {
                self.finish_task(task_id, Outcome::Skipped, &at, None);
                if let Some(e) = self.task_entry(task_id) {
                    e.skip_reason = Some(SkipReason::Operator);
                }
                if let Some(&step) = self.compensations.get(task_id) {
                    self.path.entries[step].outcome = Outcome::Compensated;
                }
            }
            Event::TaskCancelled { task_id } => {
                self.finish_task(task_id, Outcome::Cancelled, &at, None)
            }
            Event::TaskStarted {
                task_id, attempt, ..
            } => {
                if let Some(e) = self.task_entry(task_id) {
                    e.attempts = e.attempts.max(*attempt);
                }
            }
            Event::WorkflowCompleted { .. }
            | Event::WorkflowFailed { .. }
            | Event::WorkflowCompensated { .. }
            | Event::WorkflowCancelled { .. } => {
                for e in &mut self.path.entries {
                    if e.outcome == Outcome::Running {
                        e.outcome = Outcome::Cancelled;
                        e.finished_at = Some(at.clone());
                    }
                }
            }
            Event::WorkflowStarted { .. }
            | Event::ChildCancelRequested { .. }
            | Event::TaskDeferred { .. }
            | Event::TaskHeartbeat { .. }
            | Event::TaskAdded { .. }
            | Event::SignalReceived { .. }
            | Event::HumanTaskClaimed { .. }
            | Event::HumanTaskReleased { .. }
            | Event::HumanTaskReassigned { .. }
            | Event::SlaWarned { .. }
            | Event::SlaBreached { .. }
            | Event::WorkflowPaused
            | Event::WorkflowResumed
            | Event::CompensationStarted { .. } => {}
        }
    }

    /// The entry of `step_key`, created (in path order) when this is its first event.
    fn begin(&mut self, step_key: &str, step_id: &str, parent: Option<String>, seq: u64) -> usize {
        if let Some(&i) = self.by_key.get(step_key) {
            if parent.is_some() {
                self.path.entries[i].parent = parent;
            }
            return i;
        }
        let kind = self.declared(step_id);
        // Containers have no event of their own beyond StepStarted; their children tell.
        if let Some(p) = &parent {
            self.infer(p, PathKind::Parallel);
        }
        let i = self.path.entries.len();
        self.path.entries.push(PathEntry {
            step_key: step_key.to_owned(),
            step_id: step_id.to_owned(),
            parent,
            kind: kind.unwrap_or(PathKind::Signal),
            outcome: Outcome::Running,
            skip_reason: None,
            seq,
            started_at: None,
            finished_at: None,
            attempts: 0,
            task_id: None,
            branch: None,
            fallback: None,
            child_workflow_id: None,
            error: None,
        });
        self.by_key.insert(step_key.to_owned(), i);
        i
    }

    fn compensation_scheduled(
        &mut self,
        task_id: &TaskId,
        step_key: &str,
        step_id: &str,
        attempt: u32,
        seq: u64,
        at: String,
    ) {
        if let Some(&i) = self.by_task.get(task_id) {
            // A further attempt of the same compensation.
            let e = &mut self.path.entries[i];
            e.attempts = attempt;
            e.outcome = Outcome::Running;
            return;
        }
        let i = self.path.entries.len();
        self.path.entries.push(PathEntry {
            step_key: step_key.to_owned(),
            step_id: step_id.to_owned(),
            parent: None,
            kind: PathKind::Compensation,
            outcome: Outcome::Running,
            skip_reason: None,
            seq,
            started_at: Some(at),
            finished_at: None,
            attempts: attempt,
            task_id: Some(task_id.clone()),
            branch: None,
            fallback: None,
            child_workflow_id: None,
            error: None,
        });
        self.by_task.insert(task_id.clone(), i);
        if let Some(&step) = self.by_key.get(step_key) {
            self.compensations.insert(task_id.clone(), step);
        }
    }

    /// After a `switch` chose, its other branches' first-level steps as skipped entries.
    fn list_untaken(&mut self, switch_key: &str, chosen: Branch, seq: u64) {
        let Some(i) = self.by_key.get(switch_key).copied() else {
            return;
        };
        let step_id = self.path.entries[i].step_id.clone();
        let Some(StepKind::Switch { cases, default }) = self
            .definition
            .and_then(|d| d.step(&step_id))
            .map(|s| &s.kind)
        else {
            return;
        };
        // Children of a switch share its prefix (the foreach iterations around it).
        let prefix = &switch_key[..switch_key.len() - step_id.len()];
        let untaken: Vec<&Step> = cases
            .iter()
            .enumerate()
            .filter(|(n, _)| chosen != Branch::Case(*n))
            .flat_map(|(_, (_, steps))| steps)
            .chain(default.iter().filter(|_| chosen != Branch::Default))
            .collect();
        for step in untaken {
            let key = format!("{prefix}{}", step.id);
            let j = self.begin(&key, &step.id, Some(switch_key.to_owned()), seq);
            let e = &mut self.path.entries[j];
            e.outcome = Outcome::Skipped;
            e.skip_reason = Some(SkipReason::BranchNotTaken);
        }
    }

    fn declared(&self, step_id: &str) -> Option<PathKind> {
        self.definition
            .and_then(|d| d.step(step_id))
            .map(|s| PathKind::of(&s.kind))
    }

    /// Sets the kind from an event, unless the definition already said.
    fn infer(&mut self, step_key: &str, kind: PathKind) {
        let Some(&i) = self.by_key.get(step_key) else {
            return;
        };
        let e = &mut self.path.entries[i];
        if self.definition.and_then(|d| d.step(&e.step_id)).is_none() {
            // Never demote a more specific inference (http, human) to a generic one.
            let generic = matches!(e.kind, PathKind::Signal | PathKind::Parallel);
            if generic || kind != PathKind::Parallel {
                e.kind = kind;
            }
        }
    }

    fn with_key(&mut self, step_key: &str, f: impl FnOnce(&mut PathEntry)) {
        if let Some(&i) = self.by_key.get(step_key) {
            f(&mut self.path.entries[i]);
        }
    }

    fn task_entry(&mut self, task_id: &TaskId) -> Option<&mut PathEntry> {
        let i = *self.by_task.get(task_id)?;
        self.path.entries.get_mut(i)
    }

    fn finish_key(&mut self, key: &str, outcome: Outcome, at: &str, error: Option<ErrorInfo>) {
        self.with_key(key, |e| finish(e, outcome, at, error));
    }

    fn finish_task(&mut self, id: &TaskId, outcome: Outcome, at: &str, error: Option<ErrorInfo>) {
        if let Some(e) = self.task_entry(id) {
            finish(e, outcome, at, error);
        }
    }
}

fn finish(e: &mut PathEntry, outcome: Outcome, at: &str, error: Option<ErrorInfo>) {
    // A compensated step stays compensated whatever its late events say.
    if e.outcome == Outcome::Compensated {
        return;
    }
    e.outcome = outcome;
    e.finished_at = Some(at.to_owned());
    if error.is_some() || outcome == Outcome::Completed {
        e.error = error;
    }
}
