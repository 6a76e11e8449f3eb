//! The ClickHouse analytics backend (distributed mode), over HTTP with the `clickhouse`
//! crate: RowBinary inserts, LZ4-compressed responses.
//!
//! URL: `clickhouse://[user[:password]@]host[:port]/database` (port 8123 by default; plain
//! HTTP). `network_compression_method=lz4` is set on every request because some servers
//! (chdb's embedded one) otherwise compress responses with ZSTD, which the crate rejects.
//!
//! `record` reads the stored state of the batch's runs (their run facts and the latest
//! attempt of each task, `FINAL`), folds the events with [`facts::fold`] and writes the
//! changed facts: one INSERT per table per call, attempts before runs, because a run's
//! `last_seq` is what makes a replay skip events, so it must not get ahead of the attempts.
//!
//! Idempotency: both tables are `ReplacingMergeTree` keyed like the facts, versioned by the
//! sequence number of the last event folded in, and every read uses `FINAL`. A replayed
//! batch folds to nothing (its events are at or below the stored `last_seq`); one replayed
//! after a crash between the two inserts re-inserts identical attempt rows, which collapse.
//!
//! Reports aggregate in SQL (`quantilesExactInclusive`, which matches [`super::report`]'s
//! interpolation: exact, memory proportional to the window's facts per group).
//!
//! Schema: [`ClickHouseAnalytics::migrate`] applies `schemas/clickhouse/`;
//! [`ClickHouseAnalytics::check_schema`] refuses an older database.

mod rows;
pub mod schema;

use super::facts::{self, RunState};
use super::report::{share, sort_bottlenecks};
use super::{
    Analytics, Bottleneck, Bottlenecks, Cost, CostRates, DefinitionPerformance, Percentiles,
    Performance, StepPerformance, Usage, Window, price, ratio,
};
use crate::{Result, StoreError};
use async_trait::async_trait;
use clickhouse::Client;
use distorch_domain::WorkflowId;
use distorch_domain::event::EventEnvelope;
use distorch_domain::view::rfc3339;
use rows::{AttemptRow, DefinitionAttempts, DefinitionRuns, RunRow, StepRow, StepTime, UsageRow};
use std::collections::{BTreeMap, HashMap};

/// Runs looked up per state query (keeps the query text well under ClickHouse's
/// `max_query_size`).
const LOOKUP_CHUNK: usize = 1000;

/// Attempts that ended and count as work done (deferred ones made no call).
const COUNTED: &str = "status IN ('completed', 'failed', 'cancelled', 'skipped')";
const ENDED: &str = "status IN ('completed', 'failed', 'deferred', 'cancelled', 'skipped')";
const IN_WINDOW: &str = "finished_at >= fromUnixTimestamp64Milli(toInt64(?), 'UTC')
    AND finished_at < fromUnixTimestamp64Milli(toInt64(?), 'UTC')";

/// The ClickHouse [`Analytics`]. Cheap to clone; clones share the HTTP connection pool.
#[derive(Clone)]
pub struct ClickHouseAnalytics {
    /// Bound to the analytics database.
    client: Client,
    /// Bound to `default`, to create the analytics database.
    server: Client,
    database: String,
}

/// A crate error: transport, server or row mismatch; worth retrying (a server back up, a
/// migration run meanwhile).
pub(crate) fn ch(e: clickhouse::error::Error) -> StoreError {
    StoreError::Storage(format!("clickhouse: {e}"))
}

fn setup(msg: impl Into<String>) -> StoreError {
    StoreError::Setup(msg.into())
}

/// The parts of a `clickhouse://` URL.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    http_url: String,
    database: String,
    user: Option<String>,
    password: Option<String>,
}

fn parse_url(url: &str) -> Result<Target> {
    let bad = |why: &str| {
        setup(format!(
            "bad ClickHouse URL {url:?}: {why}; expected clickhouse://[user[:password]@]host[:port]/database"
        ))
    };
    let rest = url
        .strip_prefix("clickhouse://")
        .ok_or_else(|| bad("the scheme must be clickhouse"))?;
    let (authority, database) = rest.split_once('/').ok_or_else(|| bad("no database"))?;
    let (credentials, host) = match authority.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, authority),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let database = database.trim_end_matches('/');
    if database.is_empty()
        || !database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(bad("the database must be a name of letters, digits and _"));
    }
    let (user, password) = match credentials.map(|c| c.split_once(':').unwrap_or((c, ""))) {
        Some((u, p)) => (Some(u.to_owned()), (!p.is_empty()).then(|| p.to_owned())),
        None => (None, None),
    };
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:8123")
    };
    Ok(Target {
        http_url: format!("http://{host}"),
        database: database.to_owned(),
        user,
        password,
    })
}

fn window_bounds(q: clickhouse::query::Query, w: Window) -> clickhouse::query::Query {
    q.bind(w.from_ms).bind(w.to_ms)
}

/// `quantilesExactInclusive` of 0.5, 0.95, 0.99; NaN (nothing measured) becomes `None`.
fn percentiles(q: &[f64]) -> Percentiles {
    let at = |i: usize| q.get(i).copied().filter(|v| !v.is_nan());
    Percentiles {
        p50: at(0),
        p95: at(1),
        p99: at(2),
    }
}

impl ClickHouseAnalytics {
    /// A client for `clickhouse://host:port/database`. Connects lazily: call
    /// [`migrate`](Self::migrate) or [`check_schema`](Self::check_schema) to find out
    /// whether the server is there.
    pub fn from_url(url: &str) -> Result<Self> {
        let t = parse_url(url)?;
        let mut server = Client::default()
            .with_url(&t.http_url)
            .with_option("network_compression_method", "lz4");
        if let Some(user) = t.user {
            server = server.with_user(user);
        }
        if let Some(password) = t.password {
            server = server.with_password(password);
        }
        Ok(Self {
            client: server.clone().with_database(&t.database),
            server: server.with_database("default"),
            database: t.database,
        })
    }

    /// The database the facts live in, from the URL.
    pub fn database(&self) -> &str {
        &self.database
    }

    async fn load(&self, ids: &[WorkflowId]) -> Result<HashMap<WorkflowId, RunState>> {
        let mut runs = Vec::new();
        let mut attempts = Vec::new();
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            // UUIDs print as hex and dashes only, so they are safe to inline.
            let list = chunk
                .iter()
                .map(|id| format!("'{id}'"))
                .collect::<Vec<_>>()
                .join(",");
            runs.extend(
                self.client
                    .query(&format!(
                        "SELECT ?fields FROM run_facts FINAL WHERE workflow_id IN ({list})"
                    ))
                    .fetch_all::<RunRow>()
                    .await
                    .map_err(ch)?,
            );
            attempts.extend(
                self.client
                    .query(&format!(
                        "SELECT ?fields FROM attempt_facts FINAL WHERE workflow_id IN ({list})
                         ORDER BY workflow_id, task_id, attempt DESC
                         LIMIT 1 BY workflow_id, task_id"
                    ))
                    .fetch_all::<AttemptRow>()
                    .await
                    .map_err(ch)?,
            );
        }
        let mut latest: HashMap<WorkflowId, Vec<facts::AttemptFact>> = HashMap::new();
        for row in attempts {
            let fact = row.into_fact()?;
            latest.entry(fact.workflow_id).or_default().push(fact);
        }
        runs.into_iter()
            .map(|row| {
                let run = row.into_fact()?;
                let id = run.workflow_id;
                let attempts = latest.remove(&id).unwrap_or_default();
                Ok((id, RunState::loaded(run, attempts)))
            })
            .collect()
    }
}

#[async_trait]
impl Analytics for ClickHouseAnalytics {
    async fn record(&self, events: &[EventEnvelope]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<WorkflowId> = events.iter().map(|e| e.workflow_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut states = self.load(&ids).await?;
        let changes = facts::fold(&mut states, events);
        if !changes.attempts.is_empty() {
            let mut insert = self
                .client
                .insert::<AttemptRow>("attempt_facts")
                .await
                .map_err(ch)?;
            for a in &changes.attempts {
                insert.write(&AttemptRow::from(a)).await.map_err(ch)?;
            }
            insert.end().await.map_err(ch)?;
        }
        if !changes.runs.is_empty() {
            let mut insert = self
                .client
                .insert::<RunRow>("run_facts")
                .await
                .map_err(ch)?;
            for r in &changes.runs {
                insert.write(&RunRow::from(r)).await.map_err(ch)?;
            }
            insert.end().await.map_err(ch)?;
        }
        Ok(())
    }

    async fn reset(&self) -> Result<()> {
        for table in ["run_facts", "attempt_facts"] {
            self.client
                .query(&format!("TRUNCATE TABLE IF EXISTS {table}"))
                .execute()
                .await
                .map_err(ch)?;
        }
        Ok(())
    }

    async fn performance(&self, window: Window) -> Result<Performance> {
        let runs: Vec<DefinitionRuns> = window_bounds(
            self.client.query(&format!(
                "SELECT definition, count() AS runs,
                    countIf(status = 'completed') AS completed,
                    countIf(status = 'failed') AS failed,
                    countIf(status = 'compensated') AS compensated,
                    countIf(status = 'cancelled') AS cancelled,
                    quantilesExactInclusive(0.5, 0.95, 0.99)(
                        toFloat64(assumeNotNull(duration_ms))) AS end_to_end
                 FROM run_facts FINAL WHERE {IN_WINDOW}
                 GROUP BY definition"
            )),
            window,
        )
        .fetch_all()
        .await
        .map_err(ch)?;
        let attempts: Vec<DefinitionAttempts> = window_bounds(
            self.client.query(&format!(
                "SELECT definition, count() AS attempts, countIf(retried) AS retries
                 FROM attempt_facts FINAL WHERE {IN_WINDOW} AND {COUNTED}
                 GROUP BY definition"
            )),
            window,
        )
        .fetch_all()
        .await
        .map_err(ch)?;
        let steps: Vec<StepRow> = window_bounds(
            self.client.query(&format!(
                "SELECT definition, step_id, kind, count() AS attempts,
                    countIf(status = 'completed') AS completed,
                    countIf(status = 'failed') AS failed,
                    countIf(retried) AS retries,
                    quantilesExactInclusiveIf(0.5, 0.95, 0.99)(
                        toFloat64(assumeNotNull(run_ms)), run_ms IS NOT NULL) AS run_q,
                    quantilesExactInclusiveIf(0.5, 0.95, 0.99)(
                        toFloat64(assumeNotNull(end_to_end_ms)), end_to_end_ms IS NOT NULL)
                        AS end_to_end_q
                 FROM attempt_facts FINAL WHERE {IN_WINDOW} AND {COUNTED}
                 GROUP BY definition, step_id, kind"
            )),
            window,
        )
        .fetch_all()
        .await
        .map_err(ch)?;

        let seconds = window.seconds();
        let mut defs: BTreeMap<String, DefinitionPerformance> = BTreeMap::new();
        let blank = |definition: String| DefinitionPerformance {
            definition,
            runs: 0,
            completed: 0,
            failed: 0,
            compensated: 0,
            cancelled: 0,
            failure_rate: 0.0,
            throughput_per_s: 0.0,
            end_to_end_ms: Percentiles::default(),
            attempts: 0,
            retries: 0,
            retry_rate: 0.0,
        };
        for r in runs {
            defs.insert(
                r.definition.clone(),
                DefinitionPerformance {
                    runs: r.runs,
                    completed: r.completed,
                    failed: r.failed,
                    compensated: r.compensated,
                    cancelled: r.cancelled,
                    failure_rate: ratio(r.failed + r.compensated, r.runs),
                    throughput_per_s: r.runs as f64 / seconds,
                    end_to_end_ms: percentiles(&r.end_to_end),
                    ..blank(r.definition)
                },
            );
        }
        for a in attempts {
            let d = defs
                .entry(a.definition.clone())
                .or_insert_with(|| blank(a.definition));
            d.attempts = a.attempts;
            d.retries = a.retries;
            d.retry_rate = ratio(a.retries, a.attempts);
        }
        let mut steps: Vec<StepPerformance> = steps
            .into_iter()
            .map(|s| StepPerformance {
                failure_rate: ratio(s.failed, s.attempts),
                retry_rate: ratio(s.retries, s.attempts),
                throughput_per_s: s.completed as f64 / seconds,
                run_ms: percentiles(&s.run_q),
                end_to_end_ms: percentiles(&s.end_to_end_q),
                definition: s.definition,
                step_id: s.step_id,
                kind: s.kind,
                attempts: s.attempts,
                completed: s.completed,
                failed: s.failed,
                retries: s.retries,
            })
            .collect();
        steps.sort_by(|a, b| {
            (&a.definition, &a.step_id, &a.kind).cmp(&(&b.definition, &b.step_id, &b.kind))
        });
        Ok(Performance {
            from: rfc3339(window.from_ms),
            to: rfc3339(window.to_ms),
            definitions: defs.into_values().collect(),
            steps,
        })
    }

    async fn bottlenecks(&self, window: Window) -> Result<Bottlenecks> {
        let rows: Vec<StepTime> = window_bounds(
            self.client.query(&format!(
                "SELECT definition, step_id, kind,
                    sumIf(ifNull(queue_wait_ms, 0), kind != 'human') AS queue_wait,
                    sumIf(ifNull(run_ms, 0), kind != 'human') AS run,
                    sum(backoff_ms) AS backoff,
                    sumIf(ifNull(human_wait_ms, 0), kind = 'human') AS human_wait,
                    sum(breaker_wait_ms) AS breaker_wait,
                    countIf(status != 'deferred') AS attempts,
                    countIf(retried) AS retries
                 FROM attempt_facts FINAL WHERE {IN_WINDOW} AND {ENDED}
                 GROUP BY definition, step_id, kind"
            )),
            window,
        )
        .fetch_all()
        .await
        .map_err(ch)?;
        let total_of =
            |r: &StepTime| r.queue_wait + r.run + r.backoff + r.human_wait + r.breaker_wait;
        let total_ms: i64 = rows.iter().map(total_of).sum();
        let mut steps: Vec<Bottleneck> = rows
            .into_iter()
            .map(|r| {
                let step_total = total_of(&r);
                Bottleneck {
                    share: share(step_total, total_ms),
                    total_ms: step_total,
                    queue_wait_ms: r.queue_wait,
                    run_ms: r.run,
                    backoff_ms: r.backoff,
                    human_wait_ms: r.human_wait,
                    breaker_wait_ms: r.breaker_wait,
                    attempts: r.attempts,
                    retries: r.retries,
                    definition: r.definition,
                    step_id: r.step_id,
                    kind: r.kind,
                }
            })
            .collect();
        sort_bottlenecks(&mut steps);
        Ok(Bottlenecks {
            from: rfc3339(window.from_ms),
            to: rfc3339(window.to_ms),
            total_ms,
            steps,
        })
    }

    async fn cost(&self, window: Window, rates: &CostRates) -> Result<Cost> {
        let rows: Vec<UsageRow> = window_bounds(
            self.client.query(&format!(
                "SELECT definition, step_id, task, queue, tenant, count() AS attempts,
                    sum(ifNull(cpu_ms, 0)) AS cpu,
                    sum(toFloat64(ifNull(peak_memory_bytes, 0)) * ifNull(run_ms, 0)) AS byte_ms
                 FROM attempt_facts FINAL WHERE {IN_WINDOW} AND {COUNTED}
                 GROUP BY definition, step_id, task, queue, tenant"
            )),
            window,
        )
        .fetch_all()
        .await
        .map_err(ch)?;
        let usage = rows
            .into_iter()
            .map(|r| Usage {
                definition: r.definition,
                step_id: r.step_id,
                task: r.task,
                queue: r.queue,
                tenant: r.tenant,
                attempts: r.attempts,
                cpu_ms: r.cpu,
                byte_ms: r.byte_ms,
            })
            .collect();
        Ok(price(window, rates, usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_server_and_database() {
        assert_eq!(
            parse_url("clickhouse://ch.internal:8124/analytics").unwrap(),
            Target {
                http_url: "http://ch.internal:8124".into(),
                database: "analytics".into(),
                user: None,
                password: None,
            }
        );
        let t = parse_url("clickhouse://bi:s3cret@localhost/distorch").unwrap();
        assert_eq!(t.http_url, "http://localhost:8123");
        assert_eq!(
            (t.user.as_deref(), t.password.as_deref()),
            (Some("bi"), Some("s3cret"))
        );
    }

    #[test]
    fn bad_urls_are_refused_with_the_expected_form() {
        for url in [
            "http://localhost:8123/db",
            "clickhouse://localhost:8123",
            "clickhouse://localhost/",
            "clickhouse://localhost/db;DROP",
            "clickhouse:///db",
        ] {
            let err = parse_url(url).unwrap_err();
            assert!(matches!(err, StoreError::Setup(_)), "{url}: {err}");
            assert!(err.to_string().contains("clickhouse://"), "{url}: {err}");
            assert!(!err.is_retryable());
        }
    }
}
