//! The engine's timers: for every run it owns, the deadlines its state implies
//! (`Workflow::timers`). Rebuilt from state after a restart, so nothing here is durable.

use distorch_domain::WorkflowId;
use distorch_domain::workflow::Timer;
use std::collections::{BTreeSet, HashMap};

#[derive(Default)]
pub struct Timers {
    due: BTreeSet<(i64, WorkflowId, Timer)>,
    by_run: HashMap<WorkflowId, Vec<(i64, Timer)>>,
}

impl Timers {
    /// Replaces the timers of a run.
    pub fn set(&mut self, run: WorkflowId, timers: Vec<(i64, Timer)>) {
        if let Some(old) = self.by_run.remove(&run) {
            for (at, t) in old {
                self.due.remove(&(at, run, t));
            }
        }
        for (at, t) in &timers {
            self.due.insert((*at, run, t.clone()));
        }
        if !timers.is_empty() {
            self.by_run.insert(run, timers);
        }
    }

    pub fn next_deadline(&self) -> Option<i64> {
        self.due.first().map(|(at, _, _)| *at)
    }

    /// Removes and returns every timer due at `now`.
    pub fn take_due(&mut self, now: i64) -> Vec<(WorkflowId, Timer)> {
        let mut out = Vec::new();
        while let Some((at, _, _)) = self.due.first() {
            if *at > now {
                break;
            }
            let (_, run, timer) = self.due.pop_first().expect("checked non-empty");
            if let Some(list) = self.by_run.get_mut(&run) {
                list.retain(|(_, t)| *t != timer);
            }
            out.push((run, timer));
        }
        out
    }

    pub fn len(&self) -> usize {
        self.due.len()
    }
}
