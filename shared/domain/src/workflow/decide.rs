//! Commands -> events. `handle` validates a command against the run's state (rejecting it
//! without touching anything), then emits and applies its events and lets the planner
//! carry the run forward.

use super::plan::Planner;
use super::state::{StepStatus, TaskState, Workflow, deadline, evolve};
use super::{DefinitionSource, Status, TaskStatus, Timer};
use crate::command::{Answer, Command, CommandEnvelope, ErrorInfo, Rejection, TaskMetrics};
use crate::definition::{RetryPolicy, StepKind};
use crate::event::{Event, EventEnvelope, SCHEMA_VERSION, TaskKind};
use crate::ids::{CommandId, TaskId, WorkflowId};
use serde_json::Value;

/// What a command did.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// New events of the run, already applied to the state passed to [`handle`].
    pub events: Vec<EventEnvelope>,
    /// What the command answers (the `result` of the accepted reply).
    pub result: Answer,
    /// The command id had been applied before; nothing changed.
    pub duplicate: bool,
}

/// Safety net against a planner bug looping forever; far above any real definition.
const MAX_PLANNING_ROUNDS: usize = 100_000;

/// Pure form of [`handle`]: the state is left untouched.
pub fn decide(
    state: Option<&Workflow>,
    cmd: &CommandEnvelope,
    defs: &dyn DefinitionSource,
    now_ms: i64,
) -> Result<Decision, Rejection> {
    let mut copy = state.cloned();
    handle(&mut copy, cmd, defs, now_ms)
}

/// Applies `cmd` to the run in place. On `Err` the state is unchanged.
pub fn handle(
    state: &mut Option<Workflow>,
    cmd: &CommandEnvelope,
    defs: &dyn DefinitionSource,
    now_ms: i64,
) -> Result<Decision, Rejection> {
    if let Some(wf) = state.as_ref()
        && wf.applied.contains(&cmd.id)
    {
        if let Command::StartTask {
            task_id, attempt, ..
        } = &cmd.command
        {
            still_started(wf, task_id, *attempt)?;
        }
        return Ok(Decision {
            events: Vec::new(),
            result: match &cmd.command {
                // The start that created the run, delivered again.
                Command::StartWorkflow { .. } => started(wf, false),
                _ => applied(wf),
            },
            duplicate: true,
        });
    }
    if let Command::StartWorkflow { .. } = &cmd.command {
        return start(state, cmd, defs, now_ms);
    }
    if let Command::RegisterDefinition { .. } = &cmd.command {
        return Err(Rejection::Invalid(
            "definitions are registered by the engine, not by a run".into(),
        ));
    }
    let Some(wf) = state.as_mut() else {
        let what = match cmd.command.workflow_id() {
            Some(id) => format!("workflow {id} not found"),
            None => "malformed task id".to_string(),
        };
        return Err(Rejection::NotFound(what));
    };
    let mut tx = Tx {
        retry_after_ms: None,
        wf,
        cmd_id: cmd.id.clone(),
        now: now_ms,
        events: Vec::new(),
    };
    let result = tx.run(&cmd.command)?.unwrap_or_else(|| applied(tx.wf));
    Ok(Decision {
        events: tx.events,
        result,
        duplicate: false,
    })
}

/// A `StartTask` asked again (same command id: its first answer was lost) is accepted only
/// while the attempt it started is still running: whoever asks again would hand the attempt
/// out, and an attempt that ended meanwhile (timed out, cancelled, superseded) must not be.
fn still_started(wf: &Workflow, id: &TaskId, attempt: u32) -> Result<(), Rejection> {
    let running = wf.terminal.is_none()
        && wf
            .tasks
            .get(id)
            .is_some_and(|t| t.attempt == attempt && t.status == TaskStatus::Running);
    if running {
        Ok(())
    } else {
        Err(conflict(format!(
            "attempt {attempt} of task {id} was started and is no longer running"
        )))
    }
}

/// Whether a start that `replaces` a gone process takes over running attempt `t`: only an
/// attempt started via that very process, which may have died before handing it on.
fn taken_over(t: &TaskState, replaces: Option<&str>) -> bool {
    replaces.is_some() && t.started_via.as_deref() == replaces
}

/// The answer of a command applied to `wf`: its status now.
fn applied(wf: &Workflow) -> Answer {
    Answer::Applied {
        workflow_id: wf.id,
        status: wf.status(),
    }
}

/// The answer of a start that names `wf`.
fn started(wf: &Workflow, existing: bool) -> Answer {
    Answer::Started {
        workflow_id: wf.id,
        status: wf.status(),
        existing,
    }
}

/// Answers `command` for run `id`, which has ended with `status`, from only that: what an
/// owner keeps of an ended run once it drops the run's state. The answer is the one the full
/// state would give: a start finds the run (`existing`), the end of a child or a timer is
/// accepted and changes nothing (nothing waits for them any more), and every other command
/// conflicts with the ended run. Nothing an ended run answers appends an event.
pub fn answer_ended(
    id: WorkflowId,
    status: Status,
    command: &Command,
) -> Result<Answer, Rejection> {
    match command {
        Command::StartWorkflow { .. } => Ok(Answer::Started {
            workflow_id: id,
            status,
            existing: true,
        }),
        Command::ChildFinished { .. } => Ok(Answer::Noted),
        Command::Heartbeat { .. } if status == Status::Cancelled => Ok(Answer::CancelRequested {
            workflow_id: id,
            status,
        }),
        Command::FireTimer { .. } => Ok(Answer::Applied {
            workflow_id: id,
            status,
        }),
        _ => Err(Rejection::Conflict(format!(
            "workflow {id} is {}",
            status.as_str()
        ))),
    }
}

fn start(
    state: &mut Option<Workflow>,
    cmd: &CommandEnvelope,
    defs: &dyn DefinitionSource,
    now: i64,
) -> Result<Decision, Rejection> {
    let Command::StartWorkflow {
        workflow_id,
        definition,
        version,
        input,
        idempotency_key,
        parent,
    } = &cmd.command
    else {
        unreachable!("start() is only called for StartWorkflow")
    };
    if let Some(wf) = state.as_ref() {
        return Ok(Decision {
            events: Vec::new(),
            result: started(wf, true),
            duplicate: true,
        });
    }
    let def = defs.definition(definition, *version).ok_or_else(|| {
        Rejection::NotFound(match version {
            Some(v) => format!("definition {definition:?} version {v} is not registered"),
            None => format!("definition {definition:?} is not registered"),
        })
    })?;
    if let Some(schema) = &def.input_schema {
        schema.validate(input).map_err(|e| {
            Rejection::Invalid(format!(
                "input does not match the input_schema of {} v{}: {e}",
                def.name, def.version
            ))
        })?;
    }
    let first = EventEnvelope {
        workflow_id: *workflow_id,
        seq: 1,
        at_ms: now,
        command_id: Some(cmd.id.clone()),
        v: SCHEMA_VERSION,
        event: Event::WorkflowStarted {
            definition: def.name.clone(),
            version: def.version,
            input: input.clone(),
            idempotency_key: idempotency_key.clone(),
            parent: parent.clone(),
        },
    };
    let wf = state.insert(Workflow::new(&first, def).expect("a WorkflowStarted event"));
    let mut tx = Tx {
        retry_after_ms: None,
        wf,
        cmd_id: cmd.id.clone(),
        now,
        events: vec![first],
    };
    tx.advance();
    let result = started(tx.wf, false);
    Ok(Decision {
        events: tx.events,
        result,
        duplicate: false,
    })
}

struct Tx<'w> {
    wf: &'w mut Workflow,
    /// `Retry-After` of the failure being handled, if the service sent one.
    retry_after_ms: Option<u64>,
    cmd_id: CommandId,
    now: i64,
    events: Vec<EventEnvelope>,
}

fn conflict(msg: impl Into<String>) -> Rejection {
    Rejection::Conflict(msg.into())
}

impl Tx<'_> {
    fn emit(&mut self, events: Vec<Event>) {
        for event in events {
            let env = EventEnvelope {
                workflow_id: self.wf.id,
                seq: self.wf.last_seq + 1,
                at_ms: self.now,
                command_id: Some(self.cmd_id.clone()),
                v: SCHEMA_VERSION,
                event,
            };
            evolve(self.wf, &env);
            self.events.push(env);
        }
    }

    /// Lets the planner move the run until it has nothing more to do.
    fn advance(&mut self) {
        for _ in 0..MAX_PLANNING_ROUNDS {
            let next = Planner::new(self.wf, self.now).next();
            if next.is_empty() {
                return;
            }
            self.emit(next);
        }
        let error = ErrorInfo::new("internal", "the planner did not settle; the run was failed");
        let parent = self.wf.parent.clone();
        self.emit(vec![Event::WorkflowFailed { error, parent }]);
    }

    fn not_terminal(&self) -> Result<(), Rejection> {
        match self.wf.terminal {
            Some(s) => Err(conflict(format!(
                "workflow {} is {}",
                self.wf.id,
                s.as_str()
            ))),
            None => Ok(()),
        }
    }

    fn task(&self, id: &TaskId) -> Result<&TaskState, Rejection> {
        self.wf
            .tasks
            .get(id)
            .ok_or_else(|| Rejection::NotFound(format!("task {id} not found")))
    }

    /// The attempt a worker reports on must be the current, unfinished one.
    fn current(&self, id: &TaskId, attempt: u32) -> Result<&TaskState, Rejection> {
        self.not_terminal()?;
        let t = self.task(id)?;
        if t.human.is_some() {
            return Err(conflict(format!(
                "task {id} is a human task; use /api/v1/human-tasks/{id}/complete"
            )));
        }
        if t.attempt != attempt {
            return Err(conflict(format!(
                "attempt {attempt} of task {id} is superseded: the current attempt is {}",
                t.attempt
            )));
        }
        if t.retry_at_ms.is_some() {
            return Err(conflict(format!(
                "attempt {attempt} of task {id} has already failed; attempt {} is scheduled",
                attempt + 1
            )));
        }
        if !t.is_active() {
            return Err(conflict(format!("task {id} is {}", t.status.as_str())));
        }
        Ok(t)
    }

    /// Whether a worker still running `attempt` of a task should stop because nobody wants
    /// its work any more: the run was cancelled, or the task was cancelled (its run is
    /// compensating, its step took a fallback) while that attempt was its latest. A
    /// superseded attempt (a retry followed) is not told this: it is refused as stale.
    fn unwanted(&self, id: &TaskId, attempt: u32) -> bool {
        if self.wf.terminal == Some(Status::Cancelled) {
            return true;
        }
        self.wf.tasks.get(id).is_some_and(|t| {
            t.human.is_none() && t.attempt == attempt && t.status == TaskStatus::Cancelled
        })
    }

    /// An open human task of this run.
    fn human(&self, id: &TaskId) -> Result<&super::state::HumanState, Rejection> {
        let t = self.task(id)?;
        self.not_terminal()?;
        let Some(h) = &t.human else {
            return Err(Rejection::NotFound(format!(
                "task {id} is not a human task"
            )));
        };
        if !t.is_active() {
            return Err(conflict(format!("task {id} is {}", t.status.as_str())));
        }
        Ok(h)
    }

    /// Applies `cmd`; `None` answers [`Answer::Applied`] with the run's status after it.
    fn run(&mut self, cmd: &Command) -> Result<Option<Answer>, Rejection> {
        match cmd {
            Command::StartTask {
                task_id,
                attempt,
                worker_id,
                via,
                replaces,
            } => {
                let t = self.current(task_id, *attempt)?;
                if t.status == TaskStatus::Running && !taken_over(t, replaces.as_deref()) {
                    return Err(conflict(format!(
                        "attempt {attempt} of task {task_id} is already running"
                    )));
                }
                self.emit(vec![Event::TaskStarted {
                    task_id: task_id.clone(),
                    attempt: *attempt,
                    worker_id: worker_id.clone(),
                    via: via.clone(),
                }]);
            }
            Command::CompleteTask {
                task_id,
                attempt,
                output,
                metrics,
            } => {
                self.current(task_id, *attempt)?;
                self.emit(vec![Event::TaskCompleted {
                    task_id: task_id.clone(),
                    attempt: *attempt,
                    output: output.clone(),
                    metrics: metrics.clone(),
                    by: None,
                }]);
                self.advance();
            }
            Command::SendSignal { name, payload, .. } => {
                self.not_terminal()?;
                self.emit(vec![Event::SignalReceived {
                    name: name.clone(),
                    payload: payload.clone(),
                }]);
                self.advance();
            }
            Command::ClaimHumanTask { task_id, user } => {
                let h = self.human(task_id)?;
                match &h.claimed_by {
                    Some(owner) if owner == user => return Ok(None),
                    Some(owner) => {
                        return Err(conflict(format!("task {task_id} is claimed by {owner}")));
                    }
                    None => {}
                }
                let by = user.clone();
                self.emit(vec![Event::HumanTaskClaimed {
                    task_id: task_id.clone(),
                    by,
                }]);
            }
            Command::ReleaseHumanTask { task_id, user } => {
                let h = self.human(task_id)?;
                if h.claimed_by.as_ref() != Some(user) {
                    return Err(conflict(match &h.claimed_by {
                        Some(owner) => format!("task {task_id} is claimed by {owner}, not {user}"),
                        None => format!("task {task_id} is not claimed"),
                    }));
                }
                let by = user.clone();
                self.emit(vec![Event::HumanTaskReleased {
                    task_id: task_id.clone(),
                    by,
                }]);
            }
            Command::ReassignHumanTask {
                task_id,
                assign,
                user,
            } => {
                self.human(task_id)?;
                if assign.assignee.is_none() && assign.group.is_none() {
                    return Err(Rejection::Invalid(
                        "a reassignment needs an `assignee` or a `group`".into(),
                    ));
                }
                self.emit(vec![Event::HumanTaskReassigned {
                    task_id: task_id.clone(),
                    assign: assign.clone(),
                    by: Some(user.clone()),
                }]);
            }
            Command::CompleteHumanTask {
                task_id,
                output,
                user,
            } => {
                let h = self.human(task_id)?;
                if let Some(owner) = h.claimed_by.as_ref().filter(|o| *o != user) {
                    return Err(conflict(format!("task {task_id} is claimed by {owner}")));
                }
                let step_id = self.task(task_id)?.step_id.clone();
                if let Some(StepKind::Human(spec)) = self.wf.find_step(&step_id).map(|s| &s.kind)
                    && let Some((form, _)) = &spec.form
                {
                    form.validate(output).map_err(|e| {
                        Rejection::Invalid(format!("output does not match the form: {e}"))
                    })?;
                }
                let attempt = self.task(task_id)?.attempt;
                self.emit(vec![Event::TaskCompleted {
                    task_id: task_id.clone(),
                    attempt,
                    output: output.clone(),
                    metrics: None,
                    by: Some(user.clone()),
                }]);
                self.advance();
            }
            Command::FailTask {
                task_id,
                attempt,
                error,
                metrics,
                retry_after_ms,
            } => {
                self.current(task_id, *attempt)?;
                self.retry_after_ms = *retry_after_ms;
                self.attempt_failed(task_id, error.clone(), metrics.clone());
            }
            Command::DeferTask {
                task_id,
                attempt,
                until_ms,
                reason,
            } => {
                let t = self.current(task_id, *attempt)?;
                let step_key = t.step_key.clone();
                let fallback = match t.kind {
                    TaskKind::Step => self.wf.find_step(&t.step_id).and_then(|s| match &s.kind {
                        StepKind::Task(spec) => spec.fallback.clone(),
                        _ => None,
                    }),
                    _ => None,
                };
                match fallback {
                    Some(fallback) => self.emit(vec![
                        Event::TaskCancelled {
                            task_id: task_id.clone(),
                        },
                        Event::FallbackTaken { step_key, fallback },
                    ]),
                    None => self.emit(vec![Event::TaskDeferred {
                        task_id: task_id.clone(),
                        attempt: *attempt,
                        retry_at_ms: (*until_ms).max(self.now),
                        reason: reason.clone(),
                    }]),
                }
                self.advance();
            }
            Command::Heartbeat {
                task_id,
                attempt,
                checkpoint,
            } => {
                if self.unwanted(task_id, *attempt) {
                    return Ok(Some(Answer::CancelRequested {
                        workflow_id: self.wf.id,
                        status: self.wf.status(),
                    }));
                }
                self.current(task_id, *attempt)?;
                self.emit(vec![Event::TaskHeartbeat {
                    task_id: task_id.clone(),
                    attempt: *attempt,
                    checkpoint: checkpoint.clone(),
                }]);
                return Ok(None);
            }
            Command::RetryTask { task_id } => {
                self.not_terminal()?;
                let t = self.task(task_id)?;
                if !t.parked {
                    return Err(conflict(format!(
                        "task {task_id} is {} and not in the dead-letter queue; only parked tasks can be retried",
                        t.status.as_str()
                    )));
                }
                let budget = self.retry_policy(t).max_attempts;
                let next = match &t.human {
                    // A person's task goes back to the inbox as new: unclaimed, with its
                    // timeout and escalation counting from now.
                    Some(h) => Event::HumanTaskCreated {
                        task_id: t.id.clone(),
                        step_key: t.step_key.clone(),
                        step_id: t.step_id.clone(),
                        title: h.title.clone(),
                        assign: h.assign.clone(),
                        form: h.form.clone(),
                        timeout_ms: h.timeout_ms,
                        escalate_after_ms: h.escalate_after_ms,
                        escalate_to: h.escalate_to.clone(),
                    },
                    None => reschedule(t, t.attempt + budget),
                };
                self.emit(vec![
                    Event::TaskRetried {
                        task_id: task_id.clone(),
                    },
                    next,
                ]);
                self.advance();
            }
            Command::SkipTask { task_id, output } => {
                self.not_terminal()?;
                let t = self.task(task_id)?;
                if !(t.parked || t.is_active()) {
                    return Err(conflict(format!(
                        "task {task_id} is {}; only parked or unfinished tasks can be skipped",
                        t.status.as_str()
                    )));
                }
                self.emit(vec![Event::TaskSkipped {
                    task_id: task_id.clone(),
                    output: output.clone(),
                }]);
                self.advance();
            }
            Command::CancelWorkflow {
                compensate, reason, ..
            } => {
                self.not_terminal()?;
                let mut events = Vec::new();
                if self.wf.paused {
                    events.push(Event::WorkflowResumed);
                }
                if *compensate {
                    if self.wf.compensation.is_some() {
                        return Err(conflict(format!(
                            "workflow {} is already compensating",
                            self.wf.id
                        )));
                    }
                    let msg = reason
                        .clone()
                        .unwrap_or_else(|| "cancelled by an operator".into());
                    let mut p = Planner::new(self.wf, self.now);
                    p.start_compensation(ErrorInfo::new("cancelled", msg), true);
                    events.extend(p.out);
                } else {
                    let mut p = Planner::new(self.wf, self.now);
                    p.cancel_under(None);
                    events.extend(p.out);
                    events.push(Event::WorkflowCancelled {
                        reason: reason.clone(),
                        parent: self.wf.parent.clone(),
                    });
                }
                self.emit(events);
                self.advance();
                return Ok(None);
            }
            Command::PauseWorkflow { .. } => {
                self.not_terminal()?;
                if self.wf.paused {
                    return Err(conflict(format!(
                        "workflow {} is already paused",
                        self.wf.id
                    )));
                }
                self.emit(vec![Event::WorkflowPaused]);
                return Ok(None);
            }
            Command::ResumeWorkflow { .. } => {
                self.not_terminal()?;
                if !self.wf.paused {
                    return Err(conflict(format!(
                        "workflow {} is not paused (status: {})",
                        self.wf.id,
                        self.wf.status().as_str()
                    )));
                }
                self.emit(vec![Event::WorkflowResumed]);
                self.advance();
                return Ok(None);
            }
            Command::AddTask { step, .. } => {
                self.not_terminal()?;
                if self.wf.compensation.is_some() {
                    return Err(conflict(format!("workflow {} is compensating", self.wf.id)));
                }
                let parsed = self
                    .wf
                    .definition
                    .parse_step(step, &self.wf.extra_step_ids())
                    .map_err(|e| Rejection::Invalid(e.to_string()))?;
                if !matches!(parsed.kind, StepKind::Task(_)) {
                    return Err(Rejection::Invalid(
                        "an added step must be a task step".into(),
                    ));
                }
                let position = self.insert_position();
                let task_id = TaskId::new(self.wf.id, self.wf.next_task);
                self.emit(vec![Event::TaskAdded {
                    step: step.clone(),
                    position,
                    task_id: task_id.clone(),
                }]);
                self.advance();
                return Ok(Some(Answer::TaskAdded { task_id }));
            }
            Command::ChildFinished {
                step_key,
                child_id,
                output,
                error,
                ..
            } => {
                let wf = &*self.wf;
                let waiting = wf.terminal.is_none()
                    && wf.steps.get(step_key).is_some_and(|s| {
                        s.status == StepStatus::Running && s.child == Some(*child_id)
                    });
                if !waiting {
                    // A child that ended after its parent stopped waiting: nothing to do.
                    return Ok(Some(Answer::Noted));
                }
                match error {
                    None => self.emit(vec![Event::StepCompleted {
                        step_key: step_key.clone(),
                        output: output.clone().unwrap_or(Value::Null),
                    }]),
                    Some(error) => {
                        let step_id = wf.steps[step_key].step_id.clone();
                        let Some(step) = wf.find_step(&step_id) else {
                            return Ok(Some(Answer::Noted));
                        };
                        let mut p = Planner::new(wf, self.now);
                        p.step_failed(step, step_key, None, error.clone());
                        let out = p.out;
                        self.emit(out);
                    }
                }
                self.advance();
            }
            Command::FireTimer { timer, .. } => self.fire(timer),
            Command::StartWorkflow { .. } | Command::RegisterDefinition { .. } => {
                unreachable!("handled by handle()")
            }
        }
        Ok(None)
    }

    /// Ad-hoc tasks run after the top-level step in flight, before the ones not yet begun.
    fn insert_position(&self) -> usize {
        let root = self.wf.root_steps();
        for (i, s) in root.iter().enumerate() {
            match self.wf.steps.get(&s.id) {
                None => return i,
                Some(st) if st.status == StepStatus::Running => return i + 1,
                Some(_) => {}
            }
        }
        root.len()
    }

    fn retry_policy(&self, t: &TaskState) -> RetryPolicy {
        let wf = &*self.wf;
        let step = wf.find_step(&t.step_id);
        match t.kind {
            TaskKind::Step => match step.map(|s| &s.kind) {
                Some(StepKind::Task(spec)) => spec.retry.clone(),
                _ => RetryPolicy::default(),
            },
            // A person's task is not retried: it fails by timing out.
            TaskKind::Human => RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            TaskKind::Compensation => step
                .and_then(super::state::compensation_of)
                .and_then(|name| wf.definition.compensations.get(name))
                .map(|c| c.retry.clone())
                .unwrap_or_default(),
        }
    }

    /// An attempt failed (worker report or timeout): retry with backoff, or give up and
    /// apply the policy.
    fn attempt_failed(&mut self, task_id: &TaskId, error: ErrorInfo, metrics: Option<TaskMetrics>) {
        let t = &self.wf.tasks[task_id];
        let policy = self.retry_policy(t);
        let attempt = t.attempt;
        let retry = error.retryable
            && !policy.non_retryable.contains(&error.kind)
            && attempt < t.max_attempts;
        if retry {
            // The attempt number within the current budget (an operator retry starts a new one).
            let local = policy
                .max_attempts
                .saturating_sub(t.max_attempts - attempt)
                .max(1);
            let retry_after = self
                .retry_after_ms
                .map_or(0, |ms| i64::try_from(ms).unwrap_or(i64::MAX));
            let delay = backoff(&policy, local, task_id).max(retry_after);
            self.emit(vec![Event::TaskFailed {
                task_id: task_id.clone(),
                attempt,
                error,
                retry_at_ms: Some(self.now.saturating_add(delay)),
                metrics,
            }]);
            return;
        }
        let (kind, step_key, step_id) = (t.kind, t.step_key.clone(), t.step_id.clone());
        self.emit(vec![Event::TaskFailed {
            task_id: task_id.clone(),
            attempt,
            error: error.clone(),
            retry_at_ms: None,
            metrics,
        }]);
        let events = match kind {
            // A compensation that keeps failing waits for an operator.
            TaskKind::Compensation => vec![Event::TaskParked {
                task_id: task_id.clone(),
                error,
            }],
            TaskKind::Step | TaskKind::Human => {
                let wf = &*self.wf;
                let mut p = Planner::new(wf, self.now);
                match wf.find_step(&step_id) {
                    Some(step) => p.step_failed(step, &step_key, Some(task_id), error),
                    None => p.fail_run(error),
                }
                p.out
            }
        };
        self.emit(events);
        self.advance();
    }

    fn fire(&mut self, timer: &Timer) {
        let now = self.now;
        let wf = &*self.wf;
        if wf.terminal.is_some() {
            return;
        }
        let timeout = |kind: &str, what: &str, ms: Option<u64>| {
            let ms = ms.unwrap_or_default();
            ErrorInfo::new(
                format!("timeout.{kind}"),
                format!("{what} timeout of {ms} ms exceeded"),
            )
        };
        match timer {
            Timer::Retry { task_id, attempt } => {
                let Some(t) = wf.tasks.get(task_id) else {
                    return;
                };
                if wf.paused || t.attempt != *attempt || t.retry_at_ms.is_none_or(|at| at > now) {
                    return;
                }
                let next = reschedule(t, t.max_attempts);
                self.emit(vec![next]);
            }
            Timer::ScheduleToStart { task_id, attempt } => {
                let Some(t) = wf.tasks.get(task_id) else {
                    return;
                };
                let Some(s2s) = t.schedule_to_start_timeout_ms else {
                    return;
                };
                let due = deadline(t.scheduled_ms, s2s);
                if t.attempt != *attempt
                    || t.status != TaskStatus::Scheduled
                    || t.retry_at_ms.is_some()
                    || due > now
                {
                    return;
                }
                let e = timeout(
                    "schedule_to_start",
                    "schedule-to-start",
                    t.schedule_to_start_timeout_ms,
                );
                self.attempt_failed(task_id, e, None);
            }
            Timer::StartToClose { task_id, attempt } => {
                let Some(t) = wf.tasks.get(task_id) else {
                    return;
                };
                let due = deadline(t.started_ms.unwrap_or(t.scheduled_ms), t.timeout_ms);
                if t.attempt != *attempt || t.status != TaskStatus::Running || due > now {
                    return;
                }
                let e = timeout("start_to_close", "start-to-close", Some(t.timeout_ms));
                self.attempt_failed(task_id, e, None);
            }
            Timer::Heartbeat { task_id, attempt } => {
                let Some(t) = wf.tasks.get(task_id) else {
                    return;
                };
                let Some(hb) = t.heartbeat_timeout_ms else {
                    return;
                };
                let last = t
                    .last_heartbeat_ms
                    .or(t.started_ms)
                    .unwrap_or(t.scheduled_ms);
                if t.attempt != *attempt
                    || t.status != TaskStatus::Running
                    || deadline(last, hb) > now
                {
                    return;
                }
                let e = timeout("heartbeat", "heartbeat", Some(hb));
                self.attempt_failed(task_id, e, None);
            }
            Timer::Wait { step_key } => {
                let Some(s) = wf.steps.get(step_key) else {
                    return;
                };
                if s.status != StepStatus::Running
                    || s.fire_at_ms.is_none_or(|at| at > now)
                    || !wf.is_live(step_key)
                {
                    return;
                }
                let events = match wf.find_step(&s.step_id) {
                    // A `signal` step whose signal did not come in time has failed.
                    Some(
                        step @ crate::definition::Step {
                            kind: StepKind::Signal { name, .. },
                            ..
                        },
                    ) => {
                        let error = ErrorInfo {
                            kind: "timeout.signal".into(),
                            message: format!("signal {name:?} did not arrive in time"),
                            retryable: false,
                        };
                        let mut p = Planner::new(wf, now);
                        p.step_failed(step, step_key, None, error);
                        p.out
                    }
                    _ => vec![Event::StepCompleted {
                        step_key: step_key.clone(),
                        output: Value::Null,
                    }],
                };
                self.emit(events);
                self.advance();
            }
            Timer::Escalate { task_id } => {
                let Some(t) = wf.tasks.get(task_id) else {
                    return;
                };
                let Some(h) = &t.human else { return };
                let due = h
                    .escalate_after_ms
                    .map(|ms| super::state::deadline(h.created_ms, ms));
                if !t.is_active() || h.escalated || due.is_none_or(|at| at > now) {
                    return;
                }
                let assign = h.escalate_to.clone().unwrap_or_default();
                self.emit(vec![Event::HumanTaskReassigned {
                    task_id: task_id.clone(),
                    assign,
                    by: None,
                }]);
            }
            Timer::HumanTimeout { task_id } => {
                let Some(t) = wf.tasks.get(task_id) else {
                    return;
                };
                let Some(h) = &t.human else { return };
                let due = h
                    .timeout_ms
                    .map(|ms| super::state::deadline(h.created_ms, ms));
                if !t.is_active() || due.is_none_or(|at| at > now) {
                    return;
                }
                let ms = h.timeout_ms.unwrap_or_default();
                let error = ErrorInfo {
                    kind: "timeout.human".into(),
                    message: format!("nobody completed the task within {ms} ms"),
                    retryable: false,
                };
                self.attempt_failed(task_id, error, None);
            }
            Timer::Sla { step_key, breach } => {
                if wf.sla_fired.contains(&(step_key.clone(), *breach)) {
                    return;
                }
                let (start, sla) = match step_key {
                    None => (wf.created_ms, wf.definition.sla.as_ref()),
                    Some(key) => match wf.steps.get(key) {
                        Some(s) if s.status == StepStatus::Running => (
                            s.started_ms,
                            wf.find_step(&s.step_id).and_then(|d| d.sla.as_ref()),
                        ),
                        _ => return,
                    },
                };
                let Some(sla) = sla else { return };
                let after = if *breach {
                    Some(sla.duration)
                } else {
                    sla.warn_after()
                };
                let Some(after) = after else { return };
                let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                if super::state::deadline(start, ms(after)) > now {
                    return;
                }
                let sla_ms = ms(sla.duration);
                let step_key = step_key.clone();
                self.emit(vec![if *breach {
                    Event::SlaBreached { step_key, sla_ms }
                } else {
                    Event::SlaWarned { step_key, sla_ms }
                }]);
            }
        }
    }
}

/// The next attempt of a task, carrying its last checkpoint.
fn reschedule(t: &TaskState, max_attempts: u32) -> Event {
    Event::TaskScheduled {
        http: t.http.clone(),
        task_id: t.id.clone(),
        step_key: t.step_key.clone(),
        step_id: t.step_id.clone(),
        kind: t.kind,
        task: t.task.clone(),
        queue: t.queue.clone(),
        attempt: t.attempt + 1,
        max_attempts,
        input: t.input.clone(),
        checkpoint: t.checkpoint.clone(),
        timeout_ms: t.timeout_ms,
        heartbeat_timeout_ms: t.heartbeat_timeout_ms,
        schedule_to_start_timeout_ms: t.schedule_to_start_timeout_ms,
    }
}

/// Exponential backoff with cap and jitter. The jitter is a deterministic function of the
/// task and attempt, so replaying a decision gives the same schedule.
pub(crate) fn backoff(policy: &RetryPolicy, attempt: u32, task_id: &TaskId) -> i64 {
    let base = policy.initial_interval.as_millis() as f64
        * policy
            .backoff_coefficient
            .powi(attempt.saturating_sub(1) as i32);
    let capped = base.min(policy.max_interval.as_millis() as f64);
    let unit = {
        // FNV-1a over the id and attempt, mapped to [-1, 1].
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in task_id.0.bytes().chain(attempt.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h % 2001) as f64 / 1000.0 - 1.0
    };
    (capped * (1.0 + policy.jitter * unit)).max(0.0).round() as i64
}
