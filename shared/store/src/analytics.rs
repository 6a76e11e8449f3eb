//! Analytics port: what the projector records about task attempts and runs, and the
//! performance, bottleneck and cost reports the API serves from it.
//!
//! The events are folded into two kinds of facts by pure code shared by every backend
//! ([`facts`]): one [`facts::AttemptFact`] per workflow id + task id + attempt, one
//! [`facts::RunFact`] per workflow id. Backends store the facts and answer the reports; the
//! embedded one aggregates in Rust ([`report`], which is also the reference definition of
//! every figure), ClickHouse in SQL. Both pass the [`conformance`] suite.
//!
//! Contract (every backend MUST honour it):
//! - `record` is idempotent: a fact is keyed as above and carries the sequence number of the
//!   last event folded into it, and an event at or below its run's recorded sequence changes
//!   nothing. A replayed or duplicated batch therefore changes no figure.
//! - `record` MUST be given each run's events in log order (as the log delivers them); a batch
//!   MAY mix runs. Events of a run whose `WorkflowStarted` was never recorded are ignored.
//! - What `record` stored is durable once `flush` returned (a backend may sync lazily); the
//!   projector flushes before it commits offsets past the recorded events.
//! - Reports see every batch whose `record` returned.
//! - A report covers the facts that *ended* in its window (`from` inclusive, `to`
//!   exclusive): attempts by their end, runs by their end. Work in flight is not in a
//!   report yet; it is once it ends.
//! - Rows are sorted as each report documents, so two backends give identical answers.
//!
//! Where the events do not carry a figure, it is derived (see [`facts`] for details):
//! - tenant: the run input's `tenant` string, else [`facts::DEFAULT_TENANT`];
//! - time waiting on people: a human task from its creation to its end;
//! - time waiting on an open circuit breaker: from a `TaskDeferred` to its `retry_at_ms`;
//! - fixed per-task costs: [`CostRates::per_task`], by task type, since definitions carry no
//!   cost; the caller builds it from its configuration.
//!
//! Entry points: [`Analytics`], [`sqlite::SqliteAnalytics`],
//! `clickhouse::ClickHouseAnalytics` (cargo feature `clickhouse`), the [`conformance`] suite.

#[cfg(feature = "clickhouse")]
pub mod clickhouse;
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
pub mod facts;
pub mod report;
pub mod sqlite;

use crate::{Result, StoreError};
use async_trait::async_trait;
use distorch_domain::event::EventEnvelope;
use distorch_domain::view::rfc3339;
use serde::Serialize;
use std::collections::BTreeMap;

/// A report's time window: facts that ended at or after `from_ms` and before `to_ms`
/// (ms since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start, inclusive (ms since the Unix epoch).
    pub from_ms: i64,
    /// End, exclusive (ms since the Unix epoch).
    pub to_ms: i64,
}

impl Window {
    /// A non-empty window; an empty or reversed one is a caller's mistake.
    pub fn new(from_ms: i64, to_ms: i64) -> Result<Self> {
        if to_ms <= from_ms {
            return Err(StoreError::BadWindow(format!(
                "`to` ({}) must be after `from` ({})",
                rfc3339(to_ms),
                rfc3339(from_ms)
            )));
        }
        Ok(Self { from_ms, to_ms })
    }

    /// Whether `at_ms` falls in the window (`from_ms` inclusive, `to_ms` exclusive).
    pub fn contains(&self, at_ms: i64) -> bool {
        (self.from_ms..self.to_ms).contains(&at_ms)
    }

    /// Length of the window in seconds, the denominator of every throughput.
    pub fn seconds(&self) -> f64 {
        (self.to_ms - self.from_ms) as f64 / 1000.0
    }
}

/// Linear-interpolation percentiles (numpy's default, ClickHouse's
/// `quantileExactInclusive`), in ms; `None` when nothing was measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// `GET /api/v1/analytics/performance`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Performance {
    /// The window, RFC 3339.
    pub from: String,
    /// End of the window (exclusive), RFC 3339.
    pub to: String,
    /// Sorted by definition.
    pub definitions: Vec<DefinitionPerformance>,
    /// Sorted by definition, step id, task kind.
    pub steps: Vec<StepPerformance>,
}

/// Runs of one definition (any version) that ended in the window, and its task attempts
/// that ended in the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DefinitionPerformance {
    /// Name of the definition.
    pub definition: String,
    /// Runs that ended in the window, whatever their outcome.
    pub runs: u64,
    /// Runs that ended `completed`.
    pub completed: u64,
    /// Runs that ended `failed`.
    pub failed: u64,
    /// Runs that ended `compensated` (failed, then compensated).
    pub compensated: u64,
    /// Runs that ended `cancelled`.
    pub cancelled: u64,
    /// (failed + compensated) / runs.
    pub failure_rate: f64,
    /// Ended runs per second of the window.
    pub throughput_per_s: f64,
    /// Run start to run end.
    pub end_to_end_ms: Percentiles,
    /// Attempts that ended (deferred ones excluded: no call was made).
    pub attempts: u64,
    /// Attempts followed by another attempt (automatic or operator retry).
    pub retries: u64,
    /// retries / attempts.
    pub retry_rate: f64,
}

/// Attempts of one step (and task kind: a compensation shares its step's id) that ended
/// in the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepPerformance {
    /// Name of the definition.
    pub definition: String,
    /// The step of the definition (loop iterations counted together).
    pub step_id: String,
    /// `step`, `compensation` or `human`.
    pub kind: String,
    /// Attempts that ended (deferred ones excluded: no call was made).
    pub attempts: u64,
    /// Attempts that completed.
    pub completed: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// failed / attempts.
    pub failure_rate: f64,
    /// Attempts followed by another attempt (automatic or operator retry).
    pub retries: u64,
    /// retries / attempts.
    pub retry_rate: f64,
    /// Completed attempts per second of the window.
    pub throughput_per_s: f64,
    /// Start to end of an attempt.
    pub run_ms: Percentiles,
    /// Of a task's last attempt: first attempt scheduled to last attempt ended, so queue
    /// waits, backoffs and retries included.
    pub end_to_end_ms: Percentiles,
}

/// `GET /api/v1/analytics/bottlenecks`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Bottlenecks {
    /// Start of the window (inclusive), RFC 3339.
    pub from: String,
    /// End of the window (exclusive), RFC 3339.
    pub to: String,
    /// Sum of every step's `total_ms`.
    pub total_ms: i64,
    /// Largest `total_ms` first, then by definition, step id, kind.
    pub steps: Vec<Bottleneck>,
}

/// Where a step's time went, summed over its attempts that ended in the window. The parts
/// do not overlap: `total_ms` is their sum.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Bottleneck {
    /// Name of the definition.
    pub definition: String,
    /// The step of the definition (loop iterations counted together).
    pub step_id: String,
    /// `step`, `compensation` or `human`.
    pub kind: String,
    /// Share of the window's total task time, 0..=1.
    pub share: f64,
    /// Sum of the parts below, in ms.
    pub total_ms: i64,
    /// Scheduled to started (tasks for workers and HTTP calls).
    pub queue_wait_ms: i64,
    /// Started to ended.
    pub run_ms: i64,
    /// Failed to the next attempt's retry time.
    pub backoff_ms: i64,
    /// Human tasks: created to ended (claimed or not).
    pub human_wait_ms: i64,
    /// Deferred by an open circuit breaker to the retry time.
    pub breaker_wait_ms: i64,
    /// Attempts that ended in the window, deferred ones excluded (their time is breaker wait).
    pub attempts: u64,
    /// Attempts that ended in the window and were followed by another attempt.
    pub retries: u64,
}

/// Prices for `GET /api/v1/analytics/cost`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CostRates {
    /// Per second of worker CPU time.
    pub per_cpu_second: f64,
    /// Per GiB of peak worker memory held for one second of run time.
    pub per_gib_second: f64,
    /// Fixed cost of every attempt.
    pub per_attempt: f64,
    /// Fixed cost of every attempt of a task type, added to `per_attempt`.
    pub per_task: BTreeMap<String, f64>,
}

/// `GET /api/v1/analytics/cost`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Cost {
    /// Start of the window (inclusive), RFC 3339.
    pub from: String,
    /// End of the window (exclusive), RFC 3339.
    pub to: String,
    /// The prices the costs were computed with, as given by the caller.
    pub rates: CostRates,
    /// Sum of every row's `total`.
    pub total: f64,
    /// Sorted by definition, step id, task, queue, tenant.
    pub rows: Vec<CostRow>,
}

/// Resource use and price of the attempts (deferred ones excluded) that ended in the
/// window, per definition, step, task type, queue and tenant.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CostRow {
    /// Name of the definition.
    pub definition: String,
    /// The step of the definition (loop iterations counted together).
    pub step_id: String,
    /// Task type (`human` for human tasks).
    pub task: String,
    /// Task queue (empty for human tasks).
    pub queue: String,
    /// The run's tenant (its input's `tenant`, else `default`).
    pub tenant: String,
    /// Attempts priced in this row.
    pub attempts: u64,
    /// Worker CPU time reported by the attempts, in seconds.
    pub cpu_seconds: f64,
    /// Peak memory (GiB) times run time (s) of each attempt that reported memory.
    pub gib_seconds: f64,
    /// `cpu_seconds` times [`CostRates::per_cpu_second`].
    pub cpu_cost: f64,
    /// `gib_seconds` times [`CostRates::per_gib_second`].
    pub memory_cost: f64,
    /// `attempts` times the per-attempt price ([`CostRates::per_attempt`] plus the task type's
    /// [`CostRates::per_task`]).
    pub fixed_cost: f64,
    /// `cpu_cost` + `memory_cost` + `fixed_cost`.
    pub total: f64,
}

/// Resource use of one cost group before pricing; backends produce it, [`price`] prices it.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    /// Name of the definition.
    pub definition: String,
    /// The step of the definition.
    pub step_id: String,
    /// Task type (`human` for human tasks).
    pub task: String,
    /// Task queue (empty for human tasks).
    pub queue: String,
    /// The run's tenant.
    pub tenant: String,
    /// Attempts in the group (deferred ones excluded).
    pub attempts: u64,
    /// Sum of the worker CPU time the attempts reported, in ms.
    pub cpu_ms: f64,
    /// Sum of peak memory bytes times run ms.
    pub byte_ms: f64,
}

const BYTES_PER_GIB: f64 = (1u64 << 30) as f64;

/// Prices usage rows; shared so every backend computes cost alike.
pub fn price(window: Window, rates: &CostRates, mut usage: Vec<Usage>) -> Cost {
    usage.sort_by(|a, b| {
        (&a.definition, &a.step_id, &a.task, &a.queue, &a.tenant).cmp(&(
            &b.definition,
            &b.step_id,
            &b.task,
            &b.queue,
            &b.tenant,
        ))
    });
    let rows: Vec<CostRow> = usage
        .into_iter()
        .map(|u| {
            let cpu_seconds = u.cpu_ms / 1000.0;
            let gib_seconds = u.byte_ms / BYTES_PER_GIB / 1000.0;
            let per_attempt = rates.per_attempt + rates.per_task.get(&u.task).unwrap_or(&0.0);
            let cpu_cost = cpu_seconds * rates.per_cpu_second;
            let memory_cost = gib_seconds * rates.per_gib_second;
            let fixed_cost = u.attempts as f64 * per_attempt;
            CostRow {
                total: cpu_cost + memory_cost + fixed_cost,
                definition: u.definition,
                step_id: u.step_id,
                task: u.task,
                queue: u.queue,
                tenant: u.tenant,
                attempts: u.attempts,
                cpu_seconds,
                gib_seconds,
                cpu_cost,
                memory_cost,
                fixed_cost,
            }
        })
        .collect();
    Cost {
        from: rfc3339(window.from_ms),
        to: rfc3339(window.to_ms),
        rates: rates.clone(),
        total: rows.iter().map(|r| r.total).sum(),
        rows,
    }
}

/// `part / whole`, 0 when there is no whole.
pub(crate) fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The analytics port: records facts from the events and answers the reports (see the module docs
/// for the contract every backend honours).
#[async_trait]
pub trait Analytics: Send + Sync + 'static {
    /// Folds a batch of events into facts and stores the changed ones (idempotent; durable
    /// after the next [`flush`](Self::flush); see the module contract).
    async fn record(&self, events: &[EventEnvelope]) -> Result<()>;
    /// Makes everything recorded so far survive a power loss (see [`crate::ReadStore::flush`]).
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
    /// Drops every fact; a rebuild from the log follows. Afterwards every report MUST be
    /// empty, and recording the same events again MUST give the same reports.
    async fn reset(&self) -> Result<()>;
    /// Run and step performance of the window: outcomes, failure and retry rates, throughput and
    /// latency percentiles.
    async fn performance(&self, window: Window) -> Result<Performance>;
    /// Where task time went in the window, per step, largest first.
    async fn bottlenecks(&self, window: Window) -> Result<Bottlenecks>;
    /// Resource use of the attempts that ended in the window, priced with `rates`.
    async fn cost(&self, window: Window, rates: &CostRates) -> Result<Cost>;
}
