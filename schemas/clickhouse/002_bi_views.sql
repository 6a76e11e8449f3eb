-- Views for BI tools (Grafana, Metabase, Superset). They read the facts with FINAL, so
-- each fact counts once however often the projector replayed it. They show only what has
-- ended, bucketed by the hour it ended in (`hour`, UTC); filter on `hour` for a time range.
-- infra/grafana/distorch-analytics.json is a Grafana dashboard built on them.

-- Attempts that ended, one row each: the base for ad-hoc questions.
CREATE OR REPLACE VIEW bi_attempts AS
SELECT
    toStartOfHour(assumeNotNull(finished_at)) AS hour,
    workflow_id, task_id, attempt, definition, version, tenant, step_id, step_key, kind,
    task, queue, status, error_type, scheduled_at, started_at, finished_at,
    queue_wait_ms, run_ms, human_wait_ms, end_to_end_ms, retried, backoff_ms,
    breaker_wait_ms, worker_id, cpu_ms, peak_memory_bytes
FROM attempt_facts FINAL
WHERE status IN ('completed', 'failed', 'deferred', 'cancelled', 'skipped');

-- Runs that ended, per definition and hour.
CREATE OR REPLACE VIEW bi_definition_performance AS
SELECT
    toStartOfHour(assumeNotNull(finished_at)) AS hour,
    definition,
    count() AS runs,
    countIf(status = 'completed') AS completed,
    countIf(status IN ('failed', 'compensated')) AS failed,
    countIf(status = 'cancelled') AS cancelled,
    quantileExactInclusive(0.5)(assumeNotNull(duration_ms)) AS p50_ms,
    quantileExactInclusive(0.95)(assumeNotNull(duration_ms)) AS p95_ms,
    quantileExactInclusive(0.99)(assumeNotNull(duration_ms)) AS p99_ms
FROM run_facts FINAL
WHERE finished_at IS NOT NULL
GROUP BY hour, definition;

-- Attempts that ended (deferred ones excluded: no call was made), per step and hour.
CREATE OR REPLACE VIEW bi_step_performance AS
SELECT
    toStartOfHour(assumeNotNull(finished_at)) AS hour,
    definition, step_id, kind,
    count() AS attempts,
    countIf(status = 'completed') AS completed,
    countIf(status = 'failed') AS failed,
    countIf(retried) AS retries,
    quantileExactInclusiveIf(0.5)(assumeNotNull(run_ms), run_ms IS NOT NULL) AS run_p50_ms,
    quantileExactInclusiveIf(0.95)(assumeNotNull(run_ms), run_ms IS NOT NULL) AS run_p95_ms,
    quantileExactInclusiveIf(0.99)(assumeNotNull(run_ms), run_ms IS NOT NULL) AS run_p99_ms,
    quantileExactInclusiveIf(0.95)(assumeNotNull(end_to_end_ms), end_to_end_ms IS NOT NULL)
        AS end_to_end_p95_ms
FROM attempt_facts FINAL
WHERE status IN ('completed', 'failed', 'cancelled', 'skipped')
GROUP BY hour, definition, step_id, kind;

-- Where each step's time went, per hour: the parts do not overlap (a human task's whole
-- time is human wait), so total_ms is their sum.
CREATE OR REPLACE VIEW bi_step_time AS
SELECT
    toStartOfHour(assumeNotNull(finished_at)) AS hour,
    definition, step_id, kind,
    sumIf(ifNull(queue_wait_ms, 0), kind != 'human') AS queue_wait_ms,
    sumIf(ifNull(run_ms, 0), kind != 'human') AS run_ms,
    sum(backoff_ms) AS backoff_ms,
    sumIf(ifNull(human_wait_ms, 0), kind = 'human') AS human_wait_ms,
    sum(breaker_wait_ms) AS breaker_wait_ms,
    queue_wait_ms + run_ms + backoff_ms + human_wait_ms + breaker_wait_ms AS total_ms,
    countIf(status != 'deferred') AS attempts,
    countIf(retried) AS retries
FROM attempt_facts FINAL
WHERE status IN ('completed', 'failed', 'deferred', 'cancelled', 'skipped')
GROUP BY hour, definition, step_id, kind;

-- Resource use per definition, step, task type, queue, tenant and hour; multiply by your
-- rates (the API's /api/v1/analytics/cost does, with its configured rates).
CREATE OR REPLACE VIEW bi_cost_usage AS
SELECT
    toStartOfHour(assumeNotNull(finished_at)) AS hour,
    definition, step_id, task, queue, tenant,
    count() AS attempts,
    sum(ifNull(cpu_ms, 0)) / 1000 AS cpu_seconds,
    sum(toFloat64(ifNull(peak_memory_bytes, 0)) * ifNull(run_ms, 0)) / 1073741824 / 1000
        AS gib_seconds
FROM attempt_facts FINAL
WHERE status IN ('completed', 'failed', 'cancelled', 'skipped')
GROUP BY hour, definition, step_id, task, queue, tenant;
