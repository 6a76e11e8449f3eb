//! Row types of the ClickHouse tables and report queries (framework types stay here, at
//! the edge). Times are DateTime64(3) columns carried as ms since the epoch.

use crate::Result;
use crate::StoreError;
use crate::analytics::facts::{self, AttemptFact, AttemptStatus, RunFact};
use clickhouse::Row;
use distorch_domain::workflow::Status;
use distorch_domain::{TaskId, WorkflowId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

fn bad(what: &str, value: &str) -> StoreError {
    StoreError::Storage(format!("unknown {what} {value:?} in ClickHouse"))
}

#[derive(Debug, Row, Serialize, Deserialize)]
pub(super) struct RunRow {
    #[serde(with = "clickhouse::serde::uuid")]
    workflow_id: Uuid,
    definition: String,
    version: u32,
    tenant: String,
    status: String,
    started_at: i64,
    finished_at: Option<i64>,
    duration_ms: Option<i64>,
    attempts: u32,
    retries: u32,
    last_seq: u64,
}

impl From<&RunFact> for RunRow {
    fn from(r: &RunFact) -> Self {
        Self {
            workflow_id: r.workflow_id.0,
            definition: r.definition.clone(),
            version: r.version,
            tenant: r.tenant.clone(),
            status: r.status.as_str().to_owned(),
            started_at: r.started_at_ms,
            finished_at: r.finished_at_ms,
            duration_ms: r.finished_at_ms.map(|f| f - r.started_at_ms),
            attempts: r.attempts,
            retries: r.retries,
            last_seq: r.last_seq,
        }
    }
}

impl RunRow {
    pub(super) fn into_fact(self) -> Result<RunFact> {
        use Status::*;
        let status = [Running, Completed, Failed, Compensated, Cancelled]
            .into_iter()
            .find(|s| s.as_str() == self.status)
            .ok_or_else(|| bad("run status", &self.status))?;
        Ok(RunFact {
            workflow_id: WorkflowId(self.workflow_id),
            definition: self.definition,
            version: self.version,
            tenant: self.tenant,
            status,
            started_at_ms: self.started_at,
            finished_at_ms: self.finished_at,
            attempts: self.attempts,
            retries: self.retries,
            last_seq: self.last_seq,
        })
    }
}

#[derive(Debug, Row, Serialize, Deserialize)]
pub(super) struct AttemptRow {
    #[serde(with = "clickhouse::serde::uuid")]
    workflow_id: Uuid,
    task_id: String,
    attempt: u32,
    definition: String,
    version: u32,
    tenant: String,
    step_id: String,
    step_key: String,
    kind: String,
    task: String,
    queue: String,
    status: String,
    error_type: Option<String>,
    task_scheduled_at: i64,
    scheduled_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    queue_wait_ms: Option<i64>,
    run_ms: Option<i64>,
    human_wait_ms: Option<i64>,
    end_to_end_ms: Option<i64>,
    retried: bool,
    backoff_ms: i64,
    breaker_wait_ms: i64,
    worker_id: Option<String>,
    cpu_ms: Option<f64>,
    peak_memory_bytes: Option<u64>,
    seq: u64,
}

impl From<&AttemptFact> for AttemptRow {
    fn from(a: &AttemptFact) -> Self {
        Self {
            workflow_id: a.workflow_id.0,
            task_id: a.task_id.0.clone(),
            attempt: a.attempt,
            definition: a.definition.clone(),
            version: a.version,
            tenant: a.tenant.clone(),
            step_id: a.step_id.clone(),
            step_key: a.step_key.clone(),
            kind: facts::kind_str(a.kind).to_owned(),
            task: a.task.clone(),
            queue: a.queue.clone(),
            status: a.status.as_str().to_owned(),
            error_type: a.error_type.clone(),
            task_scheduled_at: a.task_scheduled_at_ms,
            scheduled_at: a.scheduled_at_ms,
            started_at: a.started_at_ms,
            finished_at: a.finished_at_ms,
            queue_wait_ms: a.queue_wait_ms(),
            run_ms: a.run_ms(),
            human_wait_ms: a.human_wait_ms(),
            end_to_end_ms: a.end_to_end_ms(),
            retried: a.retried,
            backoff_ms: a.backoff_ms,
            breaker_wait_ms: a.breaker_wait_ms,
            worker_id: a.worker_id.clone(),
            cpu_ms: a.cpu_ms,
            peak_memory_bytes: a.peak_memory_bytes,
            seq: a.seq,
        }
    }
}

impl AttemptRow {
    pub(super) fn into_fact(self) -> Result<AttemptFact> {
        Ok(AttemptFact {
            workflow_id: WorkflowId(self.workflow_id),
            task_id: TaskId(self.task_id),
            attempt: self.attempt,
            definition: self.definition,
            version: self.version,
            tenant: self.tenant,
            step_id: self.step_id,
            step_key: self.step_key,
            kind: facts::parse_kind(&self.kind).ok_or_else(|| bad("task kind", &self.kind))?,
            task: self.task,
            queue: self.queue,
            status: AttemptStatus::parse(&self.status)
                .ok_or_else(|| bad("attempt status", &self.status))?,
            error_type: self.error_type,
            task_scheduled_at_ms: self.task_scheduled_at,
            scheduled_at_ms: self.scheduled_at,
            started_at_ms: self.started_at,
            finished_at_ms: self.finished_at,
            retried: self.retried,
            backoff_ms: self.backoff_ms,
            breaker_wait_ms: self.breaker_wait_ms,
            worker_id: self.worker_id,
            cpu_ms: self.cpu_ms,
            peak_memory_bytes: self.peak_memory_bytes,
            seq: self.seq,
        })
    }
}

#[derive(Debug, Row, Deserialize)]
pub(super) struct DefinitionRuns {
    pub definition: String,
    pub runs: u64,
    pub completed: u64,
    pub failed: u64,
    pub compensated: u64,
    pub cancelled: u64,
    pub end_to_end: Vec<f64>,
}

#[derive(Debug, Row, Deserialize)]
pub(super) struct DefinitionAttempts {
    pub definition: String,
    pub attempts: u64,
    pub retries: u64,
}

#[derive(Debug, Row, Deserialize)]
pub(super) struct StepRow {
    pub definition: String,
    pub step_id: String,
    pub kind: String,
    pub attempts: u64,
    pub completed: u64,
    pub failed: u64,
    pub retries: u64,
    pub run_q: Vec<f64>,
    pub end_to_end_q: Vec<f64>,
}

#[derive(Debug, Row, Deserialize)]
pub(super) struct StepTime {
    pub definition: String,
    pub step_id: String,
    pub kind: String,
    pub queue_wait: i64,
    pub run: i64,
    pub backoff: i64,
    pub human_wait: i64,
    pub breaker_wait: i64,
    pub attempts: u64,
    pub retries: u64,
}

#[derive(Debug, Row, Deserialize)]
pub(super) struct UsageRow {
    pub definition: String,
    pub step_id: String,
    pub task: String,
    pub queue: String,
    pub tenant: String,
    pub attempts: u64,
    pub cpu: f64,
    pub byte_ms: f64,
}
