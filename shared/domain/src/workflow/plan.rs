//! Planning: given a run's state, what happens next. Walks the definition tree against the
//! recorded step states and emits the events that start, finish, skip, cancel or
//! compensate steps. Only `decide` calls it; the events it returns are applied and the
//! planner runs again until it has nothing left to say.

use super::context::{self, Scope};
use super::state::{StepState, StepStatus, Workflow, compensation_of};
use crate::command::ErrorInfo;
use crate::definition::{Join, OnFailure, Step, StepKind};
use crate::event::{Event, TaskKind};
use crate::expr::Expr;
use crate::ids::TaskId;
use serde_json::{Map, Value};

enum Seq {
    /// Every step is done; the output of the last one.
    Done(Value),
    Blocked,
}

pub(crate) struct Planner<'a> {
    pub wf: &'a Workflow,
    pub now: i64,
    next_task: u32,
    pub out: Vec<Event>,
    /// Signals taken by `signal` steps during this pass, by name (from the state's count).
    signals_taken: std::collections::HashMap<String, usize>,
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<'a> Planner<'a> {
    pub fn new(wf: &'a Workflow, now: i64) -> Self {
        Self {
            wf,
            now,
            next_task: wf.next_task,
            out: Vec::new(),
            signals_taken: std::collections::HashMap::new(),
        }
    }

    /// The next events of a run that is free to move.
    pub fn next(mut self) -> Vec<Event> {
        let wf = self.wf;
        if wf.terminal.is_some() || wf.paused {
            return Vec::new();
        }
        if wf.compensation.is_some() {
            self.compensate_next();
            return self.out;
        }
        let root = wf.root_steps();
        if let Seq::Done(_) = self.sequence(&root, "", None, &Scope::default())
            && self.out.is_empty()
        {
            self.complete_run(&root);
        }
        self.out
    }

    fn new_task_id(&mut self) -> TaskId {
        let id = TaskId::new(self.wf.id, self.next_task);
        self.next_task += 1;
        id
    }

    fn eval(&self, expr: Option<&Expr>, scope: &Scope) -> Result<Value, String> {
        match expr {
            None => Ok(self.wf.input.clone()),
            Some(e) => e
                .eval(&context::build(self.wf, scope))
                .map_err(|err| format!("`{}`: {err}", e.source())),
        }
    }

    /// The call an `http` step makes, rendered with the run context plus `.task_id` (stable
    /// across attempts, so it makes a good `Idempotency-Key`).
    fn render_http(
        &self,
        h: &crate::definition::HttpSpec,
        spec: &crate::definition::TaskSpec,
        task_id: &TaskId,
        scope: &Scope,
    ) -> Result<crate::event::HttpRequest, String> {
        let mut ctx = context::build(self.wf, scope);
        ctx["task_id"] = Value::String(task_id.to_string());
        let render = |t: &crate::expr::Template| {
            t.render(&ctx).map_err(|e| format!("`{}`: {e}", t.source()))
        };
        let mut headers = std::collections::BTreeMap::new();
        for (name, value) in &h.headers {
            headers.insert(name.clone(), render(value)?);
        }
        let body = match &h.body {
            Some(b) => Some(
                b.eval(&ctx)
                    .map_err(|e| format!("body `{}`: {e}", b.source()))?,
            ),
            None => None,
        };
        Ok(crate::event::HttpRequest {
            method: h.method.clone(),
            url: render(&h.url)?,
            headers,
            body,
            success: h.success.clone(),
            timeout_ms: millis(h.timeout.unwrap_or(spec.timeout)),
            breaker: h.breaker.clone(),
        })
    }

    fn sequence(
        &mut self,
        steps: &[Step],
        prefix: &str,
        parent: Option<&str>,
        scope: &Scope,
    ) -> Seq {
        let wf = self.wf;
        let mut last: Option<&StepState> = None;
        for step in steps {
            let key = format!("{prefix}{}", step.id);
            match wf.steps.get(&key) {
                None => {
                    self.start(step, &key, parent, scope);
                    return Seq::Blocked;
                }
                Some(st) if st.status == StepStatus::Running => {
                    self.progress(step, &key, prefix, st, scope);
                    return Seq::Blocked;
                }
                Some(st) => last = Some(st),
            }
        }
        Seq::Done(match last {
            Some(st) if st.status == StepStatus::Completed => st.output.clone(),
            _ => Value::Null,
        })
    }

    fn start(&mut self, step: &Step, key: &str, parent: Option<&str>, scope: &Scope) {
        let parent = parent.map(str::to_string);
        if let Some(when) = &step.when {
            let ctx = context::build(self.wf, scope);
            match when.eval_bool(&ctx) {
                Ok(true) => {}
                Ok(false) => {
                    self.out.push(Event::StepSkipped {
                        step_key: key.to_string(),
                        step_id: step.id.clone(),
                        parent,
                    });
                    return;
                }
                Err(e) => {
                    self.out.push(Event::StepStarted {
                        step_key: key.to_string(),
                        step_id: step.id.clone(),
                        parent,
                    });
                    let msg = format!("`when` of step {}: `{}`: {e}", step.id, when.source());
                    self.step_failed(step, key, None, ErrorInfo::new("expression", msg));
                    return;
                }
            }
        }
        self.out.push(Event::StepStarted {
            step_key: key.to_string(),
            step_id: step.id.clone(),
            parent,
        });
        let fail = |p: &mut Self, what: &str, msg: String| {
            let error = ErrorInfo::new("expression", format!("{what} of step {}: {msg}", step.id));
            p.step_failed(step, key, None, error);
        };
        match &step.kind {
            StepKind::Task(spec) => {
                let input = match self.eval(spec.input.as_ref(), scope) {
                    Ok(v) => v,
                    Err(msg) => return fail(self, "input", msg),
                };
                let task_id = match self.wf.reserved_task(key) {
                    Some(id) => id.clone(),
                    None => self.new_task_id(),
                };
                let http = match &spec.http {
                    None => None,
                    Some(h) => match self.render_http(h, spec, &task_id, scope) {
                        Ok(req) => Some(req),
                        Err(msg) => return fail(self, "http", msg),
                    },
                };
                self.out.push(Event::TaskScheduled {
                    http,
                    task_id,
                    step_key: key.to_string(),
                    step_id: step.id.clone(),
                    kind: TaskKind::Step,
                    task: spec.task.clone(),
                    queue: spec.queue.clone(),
                    attempt: 1,
                    max_attempts: spec.retry.max_attempts,
                    input,
                    checkpoint: None,
                    timeout_ms: millis(spec.timeout),
                    heartbeat_timeout_ms: spec.heartbeat_timeout.map(millis),
                    schedule_to_start_timeout_ms: spec.schedule_to_start_timeout.map(millis),
                });
            }
            StepKind::Switch { cases, .. } => {
                let ctx = context::build(self.wf, scope);
                let mut branch = None;
                for (i, (cond, _)) in cases.iter().enumerate() {
                    match cond.eval_bool(&ctx) {
                        Ok(true) => {
                            branch = Some(i);
                            break;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            return fail(
                                self,
                                &format!("case {i}"),
                                format!("`{}`: {e}", cond.source()),
                            );
                        }
                    }
                }
                self.out.push(Event::BranchChosen {
                    step_key: key.to_string(),
                    branch,
                });
            }
            StepKind::Parallel { .. } => {}
            StepKind::Foreach { items, .. } => match self.eval(Some(items), scope) {
                Ok(Value::Array(items)) => self.out.push(Event::ForeachStarted {
                    step_key: key.to_string(),
                    items,
                }),
                Ok(other) => {
                    let msg = format!("`{}` must give an array, got {other}", items.source());
                    fail(self, "items", msg)
                }
                Err(msg) => fail(self, "items", msg),
            },
            StepKind::Wait(d) => self.out.push(Event::TimerStarted {
                step_key: key.to_string(),
                fire_at_ms: super::state::deadline(self.now, millis(*d)),
            }),
            StepKind::Signal { timeout, .. } => {
                if let Some(d) = timeout {
                    self.out.push(Event::TimerStarted {
                        step_key: key.to_string(),
                        fire_at_ms: super::state::deadline(self.now, millis(*d)),
                    });
                }
            }
            StepKind::Human(spec) => {
                let ctx = context::build(self.wf, scope);
                let title = match spec.title.render(&ctx) {
                    Ok(t) => t,
                    Err(e) => {
                        return fail(self, "title", format!("`{}`: {e}", spec.title.source()));
                    }
                };
                let task_id = self.new_task_id();
                self.out.push(Event::HumanTaskCreated {
                    task_id,
                    step_key: key.to_string(),
                    step_id: step.id.clone(),
                    title,
                    assign: spec.assign.clone(),
                    form: spec.form.as_ref().map(|(_, source)| source.clone()),
                    timeout_ms: spec.timeout.map(millis),
                    escalate_after_ms: spec.escalate.as_ref().map(|(after, _)| millis(*after)),
                    escalate_to: spec.escalate.as_ref().map(|(_, to)| to.clone()),
                });
            }
            StepKind::Workflow {
                name,
                version,
                input,
            } => {
                let input = match self.eval(input.as_ref(), scope) {
                    Ok(v) => v,
                    Err(msg) => return fail(self, "input", msg),
                };
                self.out.push(Event::ChildWorkflowRequested {
                    step_key: key.to_string(),
                    child_id: self.wf.id.child(key),
                    definition: name.clone(),
                    version: *version,
                    input,
                });
            }
        }
    }

    /// Moves a running container forward; finishes it when its children are done.
    fn progress(&mut self, step: &Step, key: &str, prefix: &str, st: &StepState, scope: &Scope) {
        let done = |output| Event::StepCompleted {
            step_key: key.to_string(),
            output,
        };
        match &step.kind {
            StepKind::Switch { cases, default } => {
                let Some(branch) = st.branch else { return };
                let steps = match branch {
                    Some(i) => cases.get(i).map(|(_, s)| s.as_slice()).unwrap_or_default(),
                    None => default.as_slice(),
                };
                if let Seq::Done(v) = self.sequence(steps, prefix, Some(key), scope) {
                    self.out.push(done(v));
                }
            }
            StepKind::Parallel { join, branches } => {
                let mark = self.out.len();
                let mut outputs = Vec::with_capacity(branches.len());
                let mut first_done = None;
                for (i, b) in branches.iter().enumerate() {
                    match self.sequence(b, prefix, Some(key), scope) {
                        Seq::Done(v) => {
                            first_done.get_or_insert(i);
                            outputs.push(Some(v));
                        }
                        Seq::Blocked => outputs.push(None),
                    }
                }
                match join {
                    Join::All if outputs.iter().all(Option::is_some) => {
                        let all = outputs.into_iter().map(Option::unwrap_or_default).collect();
                        self.out.push(done(Value::Array(all)));
                    }
                    Join::Any => {
                        let Some(winner) = first_done else { return };
                        // The race is decided: nothing else in the other branches may start.
                        self.out.truncate(mark);
                        for (i, b) in branches.iter().enumerate() {
                            if i != winner {
                                for s in b {
                                    self.cancel_under(Some(&format!("{prefix}{}", s.id)));
                                }
                            }
                        }
                        let v = outputs[winner].take().unwrap_or_default();
                        self.out.push(done(v));
                    }
                    Join::All => {}
                }
            }
            StepKind::Foreach {
                max_concurrency,
                steps,
                ..
            } => {
                let Some(items) = &st.items else { return };
                let mut outputs = Vec::with_capacity(items.len());
                let mut active = 0u32;
                let mut finished = true;
                for (i, item) in items.iter().enumerate() {
                    let iprefix = format!("{key}[{i}].");
                    let started = steps.first().is_none_or(|first| {
                        self.wf
                            .steps
                            .contains_key(&format!("{iprefix}{}", first.id))
                    });
                    if !started && active >= *max_concurrency {
                        finished = false;
                        break;
                    }
                    let iscope = scope.enter(iprefix.clone(), item.clone(), i);
                    match self.sequence(steps, &iprefix, Some(key), &iscope) {
                        Seq::Done(v) => outputs.push(v),
                        Seq::Blocked => {
                            active += 1;
                            finished = false;
                        }
                    }
                }
                if finished {
                    self.out.push(done(Value::Array(outputs)));
                }
            }
            StepKind::Signal { name, .. } => {
                // Signals are taken in arrival order, one per `signal` step.
                let taken = self
                    .signals_taken
                    .entry(name.clone())
                    .or_insert_with(|| self.wf.signals_consumed.get(name).copied().unwrap_or(0));
                if let Some(payload) = self.wf.signals.get(name).and_then(|s| s.get(*taken)) {
                    *taken += 1;
                    self.out.push(done(payload.clone()));
                }
            }
            StepKind::Task(_) if st.fallback.is_some() => {
                let fallback = st.fallback.as_deref().unwrap_or_default();
                let Some(fb) = self
                    .wf
                    .definition
                    .fallbacks
                    .iter()
                    .find(|f| f.id == fallback)
                else {
                    return;
                };
                // The fallback runs in the step's place, under its own key.
                let fprefix = format!("{key}/");
                if let Seq::Done(v) =
                    self.sequence(std::slice::from_ref(fb), &fprefix, Some(key), scope)
                {
                    self.out.push(done(v));
                }
            }
            StepKind::Task(_)
            | StepKind::Wait(_)
            | StepKind::Workflow { .. }
            | StepKind::Human(_) => {}
        }
    }

    /// A step could not succeed: apply its `on_failure` policy.
    pub fn step_failed(&mut self, step: &Step, key: &str, task: Option<&TaskId>, error: ErrorInfo) {
        match (step.on_failure, task) {
            (OnFailure::Continue, _) => self.out.push(Event::StepFailed {
                step_key: key.to_string(),
                error,
            }),
            (OnFailure::Park, Some(task_id)) => self.out.push(Event::TaskParked {
                task_id: task_id.clone(),
                error,
            }),
            (OnFailure::Park | OnFailure::Fail, _) => self.fail_run(error),
            (OnFailure::Compensate, _) => self.start_compensation(error, false),
        }
    }

    pub fn fail_run(&mut self, error: ErrorInfo) {
        self.cancel_under(None);
        self.out.push(Event::WorkflowFailed {
            error,
            parent: self.wf.parent.clone(),
        });
    }

    pub fn start_compensation(&mut self, reason: ErrorInfo, then_cancel: bool) {
        self.cancel_under(None);
        self.out.push(Event::CompensationStarted {
            reason,
            then_cancel,
        });
    }

    /// Cancels the active and parked tasks and the child runs under `root` (everything when
    /// `None`). A parked task is cancelled too: nothing waits for it any more, so it must
    /// leave the dead-letter queue rather than keep the run `parked` or be retried later.
    pub fn cancel_under(&mut self, root: Option<&str>) {
        let wf = self.wf;
        let under = |key: &str| root.is_none_or(|r| wf.is_under(key, r));
        let mut tasks: Vec<&TaskId> = wf
            .tasks
            .values()
            .filter(|t| {
                (t.is_active() || t.parked)
                    && (t.kind != TaskKind::Compensation && under(&t.step_key) || root.is_none())
            })
            .map(|t| &t.id)
            .collect();
        tasks.sort_by_key(|id| (id.0.len(), id.0.clone()));
        for task_id in tasks {
            self.out.push(Event::TaskCancelled {
                task_id: task_id.clone(),
            });
        }
        let mut children: Vec<(&String, &StepState)> = wf
            .steps
            .iter()
            .filter(|(k, s)| s.status == StepStatus::Running && s.child.is_some() && under(k))
            .collect();
        children.sort_by(|a, b| a.0.cmp(b.0));
        for (key, s) in children {
            if let Some(child_id) = s.child {
                self.out.push(Event::ChildCancelRequested {
                    step_key: key.clone(),
                    child_id,
                });
            }
        }
    }

    /// Schedules the next compensation (reverse completion order), or ends the run.
    fn compensate_next(&mut self) {
        let wf = self.wf;
        let Some(comp) = &wf.compensation else { return };
        let comp_tasks = || {
            wf.tasks
                .values()
                .filter(|t| t.kind == TaskKind::Compensation)
        };
        if comp_tasks().any(|t| t.is_active() || t.parked) {
            return;
        }
        let compensated: std::collections::HashSet<&str> = comp_tasks()
            .filter(|t| {
                matches!(
                    t.status,
                    super::TaskStatus::Completed | super::TaskStatus::Skipped
                )
            })
            .map(|t| t.step_key.as_str())
            .collect();
        for key in wf.completed_order.iter().rev() {
            if compensated.contains(key.as_str()) {
                continue;
            }
            let Some(st) = wf.steps.get(key) else {
                continue;
            };
            let Some(name) = wf.find_step(&st.step_id).and_then(compensation_of) else {
                continue;
            };
            let Some(c) = wf.definition.compensations.get(name) else {
                continue;
            };
            let task_id = self.new_task_id();
            let scope = Scope::of_key(wf, key);
            let (input, error) = match self.eval(c.input.as_ref(), &scope) {
                Ok(v) => (v, None),
                Err(msg) => (Value::Null, Some(msg)),
            };
            self.out.push(Event::TaskScheduled {
                http: None,
                task_id: task_id.clone(),
                step_key: key.clone(),
                step_id: st.step_id.clone(),
                kind: TaskKind::Compensation,
                task: c.task.clone(),
                queue: c.queue.clone(),
                attempt: 1,
                max_attempts: c.retry.max_attempts,
                input,
                checkpoint: None,
                timeout_ms: millis(c.timeout),
                heartbeat_timeout_ms: None,
                schedule_to_start_timeout_ms: None,
            });
            if let Some(msg) = error {
                let message = format!("input of compensation {name}: {msg}");
                let error = ErrorInfo {
                    kind: "expression".into(),
                    message,
                    retryable: false,
                };
                self.out.push(Event::TaskParked { task_id, error });
            }
            return;
        }
        self.out.push(if comp.then_cancel {
            Event::WorkflowCancelled {
                reason: Some(comp.reason.message.clone()),
                parent: wf.parent.clone(),
            }
        } else {
            Event::WorkflowCompensated {
                parent: wf.parent.clone(),
            }
        });
    }

    fn complete_run(&mut self, root: &[Step]) {
        let wf = self.wf;
        let output = match &wf.definition.output {
            Some(expr) => match expr.eval(&context::build(wf, &Scope::default())) {
                Ok(v) => v,
                Err(e) => {
                    let msg = format!("output `{}`: {e}", expr.source());
                    return self.fail_run(ErrorInfo::new("expression", msg));
                }
            },
            None => {
                let mut out = Map::new();
                for s in root {
                    if let Some(st) = wf.steps.get(&s.id)
                        && st.status == StepStatus::Completed
                    {
                        out.insert(s.id.clone(), st.output.clone());
                    }
                }
                Value::Object(out)
            }
        };
        self.out.push(Event::WorkflowCompleted {
            output,
            parent: wf.parent.clone(),
        });
    }
}
