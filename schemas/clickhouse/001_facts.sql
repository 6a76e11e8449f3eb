-- Analytics facts, written by the projector (distorch-store, analytics/clickhouse.rs).
--
-- Both tables are ReplacingMergeTree keyed like the facts (run: workflow id; attempt:
-- workflow id + task id + attempt) with the sequence number of the last event folded in as
-- the version. A replayed batch re-inserts rows with the same key and version, and a later
-- change inserts a higher version; background merges keep one row per key. Queries read
-- them with FINAL (or the views of 002), so duplicates never reach a figure.
--
-- Times are DateTime64(3, 'UTC'); durations are Int64 milliseconds.

CREATE TABLE IF NOT EXISTS run_facts (
    workflow_id    UUID,
    definition     LowCardinality(String),
    version        UInt32,
    tenant         LowCardinality(String),
    -- running | completed | failed | compensated | cancelled
    status         LowCardinality(String),
    started_at     DateTime64(3, 'UTC'),
    finished_at    Nullable(DateTime64(3, 'UTC')),
    -- started_at to finished_at
    duration_ms    Nullable(Int64),
    attempts       UInt32,
    retries        UInt32,
    last_seq       UInt64,
    INDEX finished_at_idx finished_at TYPE minmax GRANULARITY 4
) ENGINE = ReplacingMergeTree(last_seq)
PARTITION BY toYYYYMM(started_at)
ORDER BY workflow_id;

CREATE TABLE IF NOT EXISTS attempt_facts (
    workflow_id          UUID,
    task_id              String,
    attempt              UInt32,
    definition           LowCardinality(String),
    version              UInt32,
    tenant               LowCardinality(String),
    step_id              LowCardinality(String),
    step_key             String,
    -- step | compensation | human
    kind                 LowCardinality(String),
    task                 LowCardinality(String),
    queue                LowCardinality(String),
    -- scheduled | running | completed | failed | deferred | cancelled | skipped
    status               LowCardinality(String),
    error_type           Nullable(String),
    -- when the task's first attempt was scheduled
    task_scheduled_at    DateTime64(3, 'UTC'),
    scheduled_at         DateTime64(3, 'UTC'),
    started_at           Nullable(DateTime64(3, 'UTC')),
    finished_at          Nullable(DateTime64(3, 'UTC')),
    queue_wait_ms        Nullable(Int64),
    run_ms               Nullable(Int64),
    -- human tasks: created to ended
    human_wait_ms        Nullable(Int64),
    -- the task's last attempt: first scheduled to ended
    end_to_end_ms        Nullable(Int64),
    -- another attempt follows this one
    retried              Bool,
    backoff_ms           Int64,
    breaker_wait_ms      Int64,
    worker_id            Nullable(String),
    cpu_ms               Nullable(Float64),
    peak_memory_bytes    Nullable(UInt64),
    seq                  UInt64,
    INDEX finished_at_idx finished_at TYPE minmax GRANULARITY 4
) ENGINE = ReplacingMergeTree(seq)
PARTITION BY toYYYYMM(scheduled_at)
ORDER BY (workflow_id, task_id, attempt);
