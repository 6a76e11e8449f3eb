//! Engine metrics, registered into the process's Prometheus registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub partition: u32,
}

/// The engine's Prometheus metrics (`distorch_*`). Clones share the same series, so the
/// driver and its [`Core`](crate::Core) update one set.
#[derive(Clone)]
pub struct Metrics {
    /// Runs started (`WorkflowStarted` events recorded).
    pub runs_started: Counter,
    /// Runs ended, by terminal status.
    pub runs_finished: Family<StatusLabel, Counter>,
    /// Task attempts offered to workers on `tasks.<queue>`, by queue (`http` steps, which the
    /// saga processor calls, are not counted).
    pub tasks_dispatched: Family<QueueLabel, Counter>,
    /// Waiting attempts offered again when their partition was acquired.
    pub tasks_reoffered: Counter,
    /// Task attempts that failed or timed out, by queue.
    pub attempts_failed: Family<QueueLabel, Counter>,
    /// Seconds from an attempt's scheduling to its completion.
    pub step_latency: Histogram,
    /// Seconds from a run's start to its end.
    pub run_latency: Histogram,
    /// Command records polled from owned partitions, whatever became of them (timer firings
    /// are not counted).
    pub commands: Counter,
    /// Commands refused (invalid, naming something unknown, or in conflict with the run's
    /// state, e.g. a stale attempt), whether or not anyone awaits the answer.
    pub commands_rejected: Counter,
    /// Command records moved to the DLQ: undecodable, or rejected with nobody to tell.
    pub commands_dead_lettered: Counter,
    /// Commands found on another partition than their run's, re-published there.
    pub commands_forwarded: Counter,
    /// Records on the commands topic not yet processed by this engine.
    pub command_lag: Gauge,
    /// Runs of the owned partitions whose full state the engine holds (ended runs excluded).
    pub runs_in_memory: Gauge,
    /// Pending timers of those runs (retry backoffs, task timeouts, waits, escalations,
    /// SLAs).
    pub timers: Gauge,
    /// Partition snapshots written.
    pub snapshots: Counter,
    /// Commands partitions this engine owns.
    pub partitions_owned: Gauge,
    /// 1 for each commands partition this engine owns, 0 for one it released.
    pub partition_owned: Family<PartitionLabel, Gauge>,
    /// Runs restored from a snapshot (rather than replayed) when taking over a partition.
    pub runs_restored: Counter,
    /// Owned partitions let go because another engine claimed them meanwhile (this engine
    /// had been paused past its group's session timeout).
    pub fenced: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` under the `distorch` prefix;
    /// call it once per registry.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            runs_started: Counter::default(),
            runs_finished: Family::default(),
            tasks_dispatched: Family::default(),
            tasks_reoffered: Counter::default(),
            attempts_failed: Family::default(),
            step_latency: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
            run_latency: Histogram::new(exponential_buckets(0.005, 2.0, 22)),
            commands: Counter::default(),
            commands_rejected: Counter::default(),
            commands_dead_lettered: Counter::default(),
            commands_forwarded: Counter::default(),
            command_lag: Gauge::default(),
            runs_in_memory: Gauge::default(),
            timers: Gauge::default(),
            snapshots: Counter::default(),
            partitions_owned: Gauge::default(),
            partition_owned: Family::default(),
            runs_restored: Counter::default(),
            fenced: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("distorch");
        r.register("runs_started", "Runs started", m.runs_started.clone());
        r.register(
            "commands_forwarded",
            "Commands re-published to their run's partition (keyed differently by the sender)",
            m.commands_forwarded.clone(),
        );
        r.register(
            "engine_snapshots",
            "Partition snapshots written by this engine",
            m.snapshots.clone(),
        );
        r.register(
            "engine_runs_restored",
            "Runs restored from a partition snapshot on takeover",
            m.runs_restored.clone(),
        );
        r.register(
            "engine_partitions_fenced",
            "Partitions let go because another engine claimed them while this one was paused",
            m.fenced.clone(),
        );
        r.register(
            "engine_partitions_owned",
            "Commands partitions this engine owns",
            m.partitions_owned.clone(),
        );
        r.register(
            "engine_partition_owned",
            "1 for each commands partition this engine owns (0 once released)",
            m.partition_owned.clone(),
        );
        r.register(
            "runs_finished",
            "Runs ended, by final status",
            m.runs_finished.clone(),
        );
        r.register(
            "tasks_dispatched",
            "Task attempts dispatched to a queue",
            m.tasks_dispatched.clone(),
        );
        r.register(
            "tasks_reoffered",
            "Waiting task attempts offered to workers again when their partition was acquired",
            m.tasks_reoffered.clone(),
        );
        r.register(
            "attempts_failed",
            "Task attempts failed or timed out",
            m.attempts_failed.clone(),
        );
        r.register(
            "step_latency_seconds",
            "Schedule-to-completion time of a task attempt",
            m.step_latency.clone(),
        );
        r.register(
            "run_latency_seconds",
            "Start-to-end time of a run",
            m.run_latency.clone(),
        );
        r.register(
            "engine_commands",
            "Commands processed by the engine",
            m.commands.clone(),
        );
        r.register(
            "engine_commands_rejected",
            "Commands the engine rejected",
            m.commands_rejected.clone(),
        );
        r.register(
            "engine_commands_dead_lettered",
            "Command records moved to the DLQ (malformed, or rejected with no reply_to)",
            m.commands_dead_lettered.clone(),
        );
        r.register(
            "engine_command_lag",
            "Command records not yet processed (log consumer lag)",
            m.command_lag.clone(),
        );
        r.register(
            "engine_runs_in_memory",
            "Runs whose state the engine holds",
            m.runs_in_memory.clone(),
        );
        r.register("engine_timers", "Pending timers", m.timers.clone());
        m
    }
}
