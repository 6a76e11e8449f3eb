//! Given/when/then harness for the workflow state machine, shared by the `workflow_*` test
//! files (each includes it with `#[path] mod harness;`).
//!
//! A [`Run`] holds one run's state, the definitions it may use, a fake clock and every
//! envelope emitted so far. Tasks are addressed by step key (`charge`, `pack[2].item`), not
//! by task id, so tests read like the definition they exercise.
//!
//! Every command the state machine accepts and every event it emits is checked against the
//! JSON Schemas under `schemas/` (closed: a field they do not name fails too), so the schemas
//! cannot drift from the code.
#![allow(dead_code)]

#[path = "support/schemas.rs"]
mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use distorch_domain::command::{Command, CommandEnvelope, ErrorInfo, Rejection};
use distorch_domain::definition::{Definition, SourceFormat};
use distorch_domain::event::{Event, EventEnvelope, TaskKind};
use distorch_domain::ids::{CommandId, TaskId, WorkflowId};
use distorch_domain::workflow::{
    Decision, DefinitionSource, Status, StepStatus, TaskState, TaskStatus, Timer, Workflow,
    WorkflowSnapshot, evolve, handle,
};
use serde_json::Value;

/// Engine time at which every run starts.
pub const T0: i64 = 1_000_000;

/// Definitions by name, every version kept.
#[derive(Default)]
pub struct Defs(HashMap<String, Vec<Arc<Definition>>>);

impl Defs {
    /// Registers the next version of the definition in `yaml`; returns its name.
    pub fn add(&mut self, yaml: &str) -> String {
        let probe = Definition::from_text(yaml, SourceFormat::Yaml, 1)
            .unwrap_or_else(|e| panic!("test definition does not parse: {e}\n{yaml}"));
        let versions = self.0.entry(probe.name.clone()).or_default();
        let def = Definition::from_text(yaml, SourceFormat::Yaml, versions.len() as u32 + 1)
            .expect("parsed once already");
        versions.push(Arc::new(def));
        probe.name
    }
}

impl DefinitionSource for Defs {
    fn definition(&self, name: &str, version: Option<u32>) -> Option<Arc<Definition>> {
        let versions = self.0.get(name)?;
        match version {
            None => versions.last().cloned(),
            Some(v) => versions.get(v.checked_sub(1)? as usize).cloned(),
        }
    }
}

pub struct Run {
    pub defs: Defs,
    pub id: WorkflowId,
    pub state: Option<Workflow>,
    pub now: i64,
    /// Every envelope emitted, in order.
    pub log: Vec<EventEnvelope>,
    /// The envelopes of the last accepted command.
    pub last: Vec<EventEnvelope>,
    commands: u32,
}

/// Given a run of `yaml` started with `input`.
pub fn start(yaml: &str, input: Value) -> Run {
    let mut run = Run::new(yaml);
    let name = run.defs.0.keys().next().cloned().expect("one definition");
    run.try_start(&name, input)
        .unwrap_or_else(|r| panic!("start rejected: {r:?}"));
    run
}

pub fn error(kind: &str) -> ErrorInfo {
    ErrorInfo::new(kind, format!("{kind} happened"))
}

pub fn fatal(kind: &str) -> ErrorInfo {
    ErrorInfo {
        retryable: false,
        ..error(kind)
    }
}

impl Run {
    /// A registry holding `yaml`, and no run yet.
    pub fn new(yaml: &str) -> Run {
        let mut defs = Defs::default();
        defs.add(yaml);
        Run {
            defs,
            id: WorkflowId(uuid::Uuid::from_u128(0x5eed)),
            state: None,
            now: T0,
            log: Vec::new(),
            last: Vec::new(),
            commands: 0,
        }
    }

    pub fn try_start(&mut self, definition: &str, input: Value) -> Result<Decision, Rejection> {
        self.send(Command::StartWorkflow {
            workflow_id: self.id,
            definition: definition.to_string(),
            version: None,
            input,
            idempotency_key: None,
            parent: None,
        })
    }

    pub fn next_command_id(&mut self) -> CommandId {
        self.commands += 1;
        CommandId(format!("cmd-{}", self.commands))
    }

    /// Sends `command` with a fresh command id.
    pub fn send(&mut self, command: Command) -> Result<Decision, Rejection> {
        let id = self.next_command_id();
        self.send_as(id, command)
    }

    /// Sends `command` under a given command id (to test deduplication).
    pub fn send_as(&mut self, id: CommandId, command: Command) -> Result<Decision, Rejection> {
        let env = CommandEnvelope {
            id,
            reply_to: None,
            command,
        };
        let before = self.state.as_ref().map(|w| w.last_seq);
        // A run restored from its snapshot (as a new partition owner does) must decide
        // exactly as the live one.
        let mut restored = self.state.as_ref().map(|wf| self.restore(wf));
        let decision = handle(&mut self.state, &env, &self.defs, self.now);
        let restored_decision = handle(&mut restored, &env, &self.defs, self.now);
        assert_eq!(
            decision, restored_decision,
            "a run restored from its snapshot decided differently"
        );
        match &decision {
            Ok(d) => {
                wire::check_written(wire::Wire::Command, &env);
                for event in &d.events {
                    wire::check_written(wire::Wire::Event, event);
                }
                self.last = d.events.clone();
                self.log.extend(d.events.iter().cloned());
            }
            Err(_) => {
                self.last.clear();
                assert_eq!(
                    before,
                    self.state.as_ref().map(|w| w.last_seq),
                    "a rejected command must leave the state untouched"
                );
            }
        }
        decision
    }

    /// Sends `command`, panicking if it is rejected; returns the names of its events.
    pub fn ok(&mut self, command: Command) -> Vec<&'static str> {
        let name = command.name();
        if let Err(r) = self.send(command) {
            panic!("{name} rejected: {r:?}");
        }
        self.names()
    }

    pub fn wf(&self) -> &Workflow {
        self.state.as_ref().expect("the run has started")
    }

    pub fn status(&self) -> Status {
        self.wf().status()
    }

    /// Names of the events of the last accepted command.
    pub fn names(&self) -> Vec<&'static str> {
        self.last.iter().map(|e| e.event.name()).collect()
    }

    /// Events of the last accepted command.
    pub fn events(&self) -> Vec<&Event> {
        self.last.iter().map(|e| &e.event).collect()
    }

    /// Every event so far.
    pub fn all_events(&self) -> Vec<&Event> {
        self.log.iter().map(|e| &e.event).collect()
    }

    // ----- tasks, by step key -----

    /// The newest task (step or compensation) of `step_key`.
    pub fn task(&self, step_key: &str) -> &TaskState {
        self.tasks_of(step_key)
            .last()
            .copied()
            .unwrap_or_else(|| panic!("no task for step {step_key}; tasks: {:?}", self.keys()))
    }

    /// The task of kind `kind` of `step_key`.
    pub fn task_of(&self, step_key: &str, kind: TaskKind) -> &TaskState {
        self.tasks_of(step_key)
            .into_iter()
            .rfind(|t| t.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?} task for step {step_key}"))
    }

    fn tasks_of(&self, step_key: &str) -> Vec<&TaskState> {
        let mut tasks: Vec<&TaskState> = self
            .wf()
            .tasks
            .values()
            .filter(|t| t.step_key == step_key)
            .collect();
        tasks.sort_by_key(|t| task_number(&t.id));
        tasks
    }

    fn keys(&self) -> Vec<(String, TaskStatus)> {
        let mut keys: Vec<_> = self
            .wf()
            .tasks
            .values()
            .map(|t| (t.step_key.clone(), t.status))
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        keys
    }

    /// Step keys of the tasks a worker may currently report on, sorted.
    pub fn active(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .wf()
            .tasks
            .values()
            .filter(|t| t.is_active() && t.retry_at_ms.is_none())
            .map(|t| t.step_key.clone())
            .collect();
        keys.sort();
        keys
    }

    pub fn step_status(&self, key: &str) -> Option<StepStatus> {
        self.wf().steps.get(key).map(|s| s.status)
    }

    // ----- worker verbs -----

    pub fn start_task(&mut self, step_key: &str) -> Vec<&'static str> {
        let t = self.task(step_key);
        let (task_id, attempt) = (t.id.clone(), t.attempt);
        self.ok(Command::StartTask {
            task_id,
            attempt,
            worker_id: "w1".into(),
            via: None,
            replaces: None,
        })
    }

    /// When the worker completes the current attempt of `step_key` with `output`.
    pub fn complete(&mut self, step_key: &str, output: Value) -> Vec<&'static str> {
        let command = self.complete_cmd(step_key, output);
        self.ok(command)
    }

    pub fn complete_cmd(&self, step_key: &str, output: Value) -> Command {
        let t = self.task(step_key);
        Command::CompleteTask {
            task_id: t.id.clone(),
            attempt: t.attempt,
            output,
            metrics: None,
        }
    }

    /// When the worker fails the current attempt of `step_key`.
    pub fn fail(&mut self, step_key: &str, error: ErrorInfo) -> Vec<&'static str> {
        let t = self.task(step_key);
        let command = Command::FailTask {
            task_id: t.id.clone(),
            attempt: t.attempt,
            error,
            metrics: None,
            retry_after_ms: None,
        };
        self.ok(command)
    }

    pub fn heartbeat(&mut self, step_key: &str, checkpoint: Option<Value>) -> Vec<&'static str> {
        let t = self.task(step_key);
        let command = Command::Heartbeat {
            task_id: t.id.clone(),
            attempt: t.attempt,
            checkpoint,
        };
        self.ok(command)
    }

    // ----- operator verbs -----

    pub fn retry_task(&mut self, step_key: &str) -> Result<Decision, Rejection> {
        let task_id = self.task(step_key).id.clone();
        self.send(Command::RetryTask { task_id })
    }

    pub fn skip_task(&mut self, step_key: &str, output: Value) -> Result<Decision, Rejection> {
        let task_id = self.task(step_key).id.clone();
        self.send(Command::SkipTask { task_id, output })
    }

    pub fn cancel(&mut self, compensate: bool) -> Result<Decision, Rejection> {
        self.send(Command::CancelWorkflow {
            workflow_id: self.id,
            compensate,
            reason: Some("operator".into()),
        })
    }

    pub fn pause(&mut self) -> Result<Decision, Rejection> {
        self.send(Command::PauseWorkflow {
            workflow_id: self.id,
        })
    }

    pub fn resume(&mut self) -> Result<Decision, Rejection> {
        self.send(Command::ResumeWorkflow {
            workflow_id: self.id,
        })
    }

    // ----- time -----

    /// When the engine fires `timer` at the current time.
    pub fn fire(&mut self, timer: Timer) -> Vec<&'static str> {
        self.ok(Command::FireTimer {
            workflow_id: self.id,
            timer,
        })
    }

    /// The timers the engine holds now, sorted by due time.
    pub fn timers(&self) -> Vec<(i64, Timer)> {
        let mut timers = self.wf().timers();
        timers.sort();
        timers
    }

    /// The due time of the one timer matching `pred`.
    pub fn timer_at(&self, pred: impl Fn(&Timer) -> bool) -> i64 {
        let found: Vec<i64> = self
            .timers()
            .into_iter()
            .filter(|(_, t)| pred(t))
            .map(|(at, _)| at)
            .collect();
        assert_eq!(found.len(), 1, "timers: {:?}", self.timers());
        found[0]
    }

    /// Moves the clock to `at` and fires every timer due by then, earliest first; returns
    /// the names of all events they caused.
    pub fn advance_to(&mut self, at: i64) -> Vec<&'static str> {
        self.now = at;
        let mut names = Vec::new();
        for (due, timer) in self.timers() {
            if due <= at {
                names.extend(self.fire(timer));
            }
        }
        names
    }

    // ----- replay -----

    /// The run as a new partition owner restores it: snapshot, JSON and back.
    fn restore(&self, wf: &Workflow) -> Workflow {
        let json = serde_json::to_vec(&wf.snapshot()).expect("a snapshot serialises");
        let snap: WorkflowSnapshot = serde_json::from_slice(&json).expect("a snapshot decodes");
        Workflow::restore(snap, &self.defs).expect("a snapshot restores")
    }

    /// Then: folding the log from scratch gives the live state.
    pub fn assert_replays(&self) {
        let live = self.wf();
        let (first, rest) = self.log.split_first().expect("a started run");
        let mut replayed =
            Workflow::new(first, live.definition.clone()).expect("the log opens with a start");
        for env in rest {
            evolve(&mut replayed, env);
        }
        assert_eq!(replayed.snapshot(), live.snapshot(), "replayed != live");
        assert_eq!(
            self.restore(live).snapshot(),
            live.snapshot(),
            "restored != live"
        );
        assert_eq!(replayed.timers().len(), live.timers().len());
        for (i, env) in self.log.iter().enumerate() {
            assert_eq!(env.seq, i as u64 + 1, "sequence numbers have no gaps");
        }
    }
}

pub fn task_number(id: &TaskId) -> u32 {
    id.0.rsplit_once('.').unwrap().1.parse().unwrap()
}
