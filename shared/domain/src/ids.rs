//! Identifiers. A task id embeds its workflow id so that any command about a task can be
//! routed to the partition that owns the workflow without a lookup.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// Namespace for deterministic (v5) ids derived from other ids.
const NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_2b3c_9a4e_4c11_8f0e_d15f_0c4a_7e21);

/// A run's id, a UUID: time-ordered when DisTorch picks it, chosen by the caller when a
/// start names one, derived from the definition name and idempotency key when a start
/// carries a key (so the same key names the same run), and derived from the parent run and
/// step for a child run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkflowId(pub Uuid);

impl WorkflowId {
    /// The id of a new run, from a UUID the caller generated (the API passes a time-ordered
    /// v7 one): the domain reads no randomness itself.
    pub fn new_random(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The id of a run started with an idempotency key: the same key for the same
    /// definition always names the same run, which is what makes starts idempotent.
    pub fn from_idempotency_key(definition: &str, key: &str) -> Self {
        Self(Uuid::new_v5(
            &NAMESPACE,
            format!("start/{definition}/{key}").as_bytes(),
        ))
    }

    /// The id of the child run started by `step_key` of this run.
    pub fn child(&self, step_key: &str) -> Self {
        Self(Uuid::new_v5(
            &NAMESPACE,
            format!("child/{}/{step_key}", self.0).as_bytes(),
        ))
    }
}

impl fmt::Display for WorkflowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for WorkflowId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// A task's id, `<workflow id>.<n>`: the n-th task its run created, counting from 1.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub String);

impl TaskId {
    /// The id of the `n`-th task of run `workflow`.
    pub fn new(workflow: WorkflowId, n: u32) -> Self {
        Self(format!("{workflow}.{n}"))
    }

    /// The run this task belongs to, or `None` when the id is not of the form above.
    pub fn workflow_id(&self) -> Option<WorkflowId> {
        let (wf, n) = self.0.rsplit_once('.')?;
        n.parse::<u32>().ok()?;
        wf.parse().ok()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Every command carries an id; the engine drops a command whose id it has already applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommandId(pub String);

impl CommandId {
    /// An id derived from something that already identifies the cause (an event, a timer),
    /// so that a replayed cause yields the same id and is dropped as a duplicate.
    pub fn derived(parts: &str) -> Self {
        Self(Uuid::new_v5(&NAMESPACE, parts.as_bytes()).to_string())
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_id_round_trips_its_workflow() {
        let wf = WorkflowId(Uuid::from_u128(42));
        let t = TaskId::new(wf, 7);
        assert_eq!(t.workflow_id(), Some(wf));
        assert_eq!(TaskId("nonsense".into()).workflow_id(), None);
        assert_eq!(TaskId(format!("{wf}.x")).workflow_id(), None);
    }

    #[test]
    fn idempotency_key_names_one_run_per_definition() {
        let a = WorkflowId::from_idempotency_key("orders", "k1");
        assert_eq!(a, WorkflowId::from_idempotency_key("orders", "k1"));
        assert_ne!(a, WorkflowId::from_idempotency_key("billing", "k1"));
    }
}
