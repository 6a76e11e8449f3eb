//! The distributed read store: ScyllaDB (or Cassandra) through the `scylla` driver, behind
//! the cargo feature `scylla`.
//!
//! Entry points: [`ScyllaStore::connect`] (checks the schema first) and [`migrate()`] (what
//! `distorch migrate` runs). URL: `scylla://[user:pass@]host:9042[,host2]/keyspace
//! [?replication_factor=N]` ([`url`]). Statements are prepared once at connect
//! ([`statements`]); the schema is `schemas/cql/*.cql` ([`migrate`](mod@migrate)).
//!
//! # Tables and their partitions
//! Each table serves one query of [`ReadStore`], and no partition grows with the age of
//! the system (the CQL file says the same next to each table):
//! - `workflows` (one run) and `events` (one run's history, clustered by `seq`);
//! - `runs_by_time`: listings, partitioned by (status or any, definition or any, day of
//!   creation, shard of 8), clustered newest first; a run has a row in each of its four
//!   scopes. `buckets` lists the days that hold rows, so a page walks only those;
//! - `human_tasks`: the inbox by (scope, class, bucket), where open work sits in one
//!   bucket (bounded by what is open) and everything else in its day of creation;
//! - `dead_letters` by shard (bounded by what is parked now); `sla_alerts` by day;
//!   `definitions` by name, `definition_catalog` in one small partition.
//!
//! # Writing: read-modify-write by the run's one writer
//! `apply` loads each run's row, folds the new events in (those with `seq > last_seq`),
//! writes the history and every derived row (listing, inbox, dead letters, SLA alerts),
//! and writes the run's row last. The run's row is the commit point: a failure before it
//! leaves `last_seq` behind, so the projector's retry redoes the same writes, and every
//! write is an idempotent upsert or delete of a key computed from the events.
//!
//! This is safe without lightweight transactions because one projector owns a log
//! partition, hence every run in it, at a time. A lightweight transaction per run and batch
//! (four round trips of Paxos, serialised per partition) would guard against two owners at
//! once, which the consumer group already prevents. As a cheap second line, every
//! view-derived write carries `USING TIMESTAMP <last_seq after the write>`: a late or
//! replayed write from an older state loses to any row or tombstone a newer state wrote for
//! the same key, so the view itself can never go backwards. What remains possible, only
//! with two owners at once, is a stale row under a key the newer state never touched (a
//! run listed under a status it has left); rebuilding the keyspace from the log clears it.
//!
//! # Waiting
//! `wait_for_seq`, `wait_for_end` and `wait_for_definition` poll the store, every 5 ms at first and then
//! backing off to 100 ms, and re-check at once when this process applies something (the
//! API and projector share a process in small deployments). Polling keeps the API free of
//! any channel to the projector; a wait costs one single-partition read per poll.

mod apply;
pub mod keys;
pub mod migrate;
mod read;
pub mod statements;
pub mod url;

pub use migrate::{MigrationReport, check_schema};
pub use url::ScyllaUrl;

use crate::{
    DefinitionSummary, HumanTask, HumanTaskFilter, Page, ReadStore, Result, SlaRecord, StoreError,
    WorkflowFilter, WorkflowSummary,
};
use async_trait::async_trait;
use distorch_domain::event::{DefinitionRegistered, EventEnvelope};
use distorch_domain::view::{DeadLetter, TaskView, WorkflowView};
use distorch_domain::{TaskId, WorkflowId};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use statements::Statements;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// First and longest pause between two polls of a wait.
const FIRST_POLL: Duration = Duration::from_millis(5);
const LONGEST_POLL: Duration = Duration::from_millis(100);

/// A driver error: the node, the network or a timeout; retryable.
pub(crate) fn cql_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(format!("ScyllaDB: {e}"))
}

/// A row that does not decode (or a view that does not encode).
pub(crate) fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string())
}

/// Every table of read models, what `reset` truncates (`schema_migrations` is not one).
pub(crate) const READ_MODEL_TABLES: [&str; 9] = [
    "workflows",
    "events",
    "runs_by_time",
    "buckets",
    "dead_letters",
    "human_tasks",
    "sla_alerts",
    "definitions",
    "definition_catalog",
];

/// `(kind, k1, k2, bucket)` of a `buckets` row.
type BucketKey = (&'static str, String, String, i32);

/// Bound of the set of `buckets` rows this process knows it wrote; past it, it starts over
/// (and writes a few of them again, harmlessly).
const MAX_KNOWN_BUCKETS: usize = 100_000;

/// The ScyllaDB [`ReadStore`]. Cheap to clone; clones share the session.
#[derive(Clone)]
pub struct ScyllaStore {
    inner: Arc<Inner>,
}

struct Inner {
    session: Session,
    st: Statements,
    keyspace: String,
    /// `buckets` rows already written: every run of a day would otherwise rewrite the same
    /// few rows, a hot partition for nothing.
    known_buckets: Mutex<HashSet<BucketKey>>,
    /// Bumped after every `apply`, so local waiters re-check at once.
    changed: watch::Sender<u64>,
}

async fn session(url: &ScyllaUrl) -> Result<Session> {
    let mut builder = SessionBuilder::new().known_nodes(&url.nodes);
    if let Some((user, password)) = &url.credentials {
        builder = builder.user(user, password);
    }
    builder
        .build()
        .await
        .map_err(|e| cql_error(format!("cannot connect to {}: {e}", url.nodes.join(","))))
}

/// Creates the keyspace if needed and applies every pending migration of `schemas/cql/`.
/// Idempotent: safe to run on every deploy, also by several deploys at once.
pub async fn migrate(url: &str) -> Result<MigrationReport> {
    let url = ScyllaUrl::parse(url)?;
    let session = session(&url).await?;
    migrate::run(&session, &url.keyspace, url.replication_factor).await
}

impl ScyllaStore {
    /// Connects, checks that the keyspace's schema is current (failing with a message
    /// that says to run `distorch migrate` when it is not) and prepares every statement.
    pub async fn connect(url: &str) -> Result<Self> {
        let url = ScyllaUrl::parse(url)?;
        let session = session(&url).await?;
        check_schema(&session, &url.keyspace).await?;
        let st = Statements::prepare(&session, &url.keyspace).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                session,
                st,
                keyspace: url.keyspace.clone(),
                known_buckets: Mutex::new(HashSet::new()),
                changed: watch::channel(0).0,
            }),
        })
    }

    /// Polls `check` with backoff (and at once after a local apply) until it holds or
    /// `timeout` passes.
    async fn wait_until<F, Fut>(&self, timeout: Duration, check: F) -> Result<bool>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let deadline = Instant::now() + timeout;
        let mut changed = self.inner.changed.subscribe();
        let mut pause = FIRST_POLL;
        loop {
            // Seen before checking, so an apply between the check and the nap wakes us.
            changed.borrow_and_update();
            if check().await? {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            // An error means the sender is gone, which cannot happen while `self` lives.
            let _ = tokio::time::timeout((deadline - now).min(pause), changed.changed()).await;
            pause = (pause * 2).min(LONGEST_POLL);
        }
    }
}

#[async_trait]
impl ReadStore for ScyllaStore {
    async fn apply(&self, events: &[EventEnvelope]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let out = self.apply_batch(events).await;
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
        out
    }

    async fn apply_definitions(&self, defs: &[DefinitionRegistered]) -> Result<()> {
        for d in defs {
            self.register(d).await?;
        }
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    async fn reset(&self) -> Result<()> {
        // TRUNCATE drops the data outright rather than writing tombstones, so the replay's
        // writes, timestamped by `last_seq` from 1 again, are not shadowed by the old rows.
        for table in READ_MODEL_TABLES {
            let cql = format!("TRUNCATE {}.{table}", self.inner.keyspace);
            self.inner
                .session
                .query_unpaged(cql, ())
                .await
                .map_err(cql_error)?;
        }
        self.inner
            .known_buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    async fn workflow(&self, id: WorkflowId) -> Result<Option<WorkflowView>> {
        Ok(self.load_run(id).await?.view)
    }

    async fn workflows(
        &self,
        filter: &WorkflowFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<WorkflowSummary>> {
        let cursor = cursor.map(keys::Cursor::decode).transpose()?;
        self.list(filter, limit, cursor).await
    }

    async fn history(&self, id: WorkflowId) -> Result<Vec<EventEnvelope>> {
        self.history_of(id).await
    }

    async fn task(&self, id: &TaskId) -> Result<Option<TaskView>> {
        let Some(workflow_id) = id.workflow_id() else {
            return Ok(None);
        };
        let view = self.load_run(workflow_id).await?.view;
        Ok(view.and_then(|v| v.tasks.into_iter().find(|t| &t.task_id == id)))
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        self.all_dead_letters().await
    }

    async fn human_tasks(&self, filter: &HumanTaskFilter, limit: usize) -> Result<Vec<HumanTask>> {
        self.inbox(filter, limit).await
    }

    async fn sla_breaches(&self, limit: usize) -> Result<Vec<SlaRecord>> {
        self.sla_alerts(limit).await
    }

    async fn definitions(&self) -> Result<Vec<DefinitionSummary>> {
        self.catalog().await
    }

    async fn definition(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<DefinitionRegistered>> {
        self.find_definition(name, version).await
    }

    async fn wait_for_seq(&self, id: WorkflowId, seq: u64, timeout: Duration) -> Result<bool> {
        self.wait_until(timeout, || async move {
            Ok(self.last_seq(id).await?.is_some_and(|last| last >= seq))
        })
        .await
    }

    async fn wait_for_end(&self, id: WorkflowId, timeout: Duration) -> Result<bool> {
        self.wait_until(timeout, || async move {
            Ok(self
                .workflow(id)
                .await?
                .is_some_and(|view| view.status.is_terminal()))
        })
        .await
    }

    async fn wait_for_definition(
        &self,
        name: &str,
        version: u32,
        timeout: Duration,
    ) -> Result<bool> {
        self.wait_until(timeout, || async move {
            Ok(self.find_definition(name, Some(version)).await?.is_some())
        })
        .await
    }
}
