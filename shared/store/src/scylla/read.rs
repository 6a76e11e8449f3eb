//! The read path: listings across day buckets and shards, the inbox, dead letters, SLA
//! alerts, history and definitions.

use super::keys::{self, ANY, Cursor, SHARDS};
use super::{ScyllaStore, cql_error, storage};
use crate::{
    DefinitionSummary, HumanTask, HumanTaskFilter, MAX_LIMIT, Page, Result, SlaRecord,
    WorkflowFilter, WorkflowSummary,
};
use distorch_domain::WorkflowId;
use distorch_domain::event::{DefinitionRegistered, EventEnvelope};
use distorch_domain::view::{DeadLetter, rfc3339};
use distorch_domain::workflow::Status;
use futures::future::try_join_all;
use scylla::deserialize::row::DeserializeRow;
use scylla::response::PagingState;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use std::ops::ControlFlow;

/// Most days one listing page walks. A filter whose matches are sparse (a status few runs
/// keep) then returns a short page and a cursor instead of walking the whole history in
/// one request.
const DAYS_PER_PAGE: usize = 31;
/// Days fetched per query when walking SLA alert days.
const DAYS_PER_QUERY: i32 = 64;

/// A `runs_by_time` row: created_at_ms, id, definition, version, status, updated_at_ms.
type ListRow = (i64, String, String, i32, String, i64);

fn summary(
    (created, id, definition, version, status, updated): ListRow,
) -> Result<WorkflowSummary> {
    Ok(WorkflowSummary {
        workflow_id: id.parse().map_err(storage)?,
        definition,
        version: u32::try_from(version).map_err(storage)?,
        status: serde_json::from_value::<Status>(serde_json::Value::String(status))
            .map_err(storage)?,
        created_at: rfc3339(created),
        updated_at: rfc3339(updated),
    })
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(storage)
}

fn limit_of(limit: usize) -> usize {
    limit.clamp(1, MAX_LIMIT)
}

impl ScyllaStore {
    /// Runs `st` page by page (manual paging with the driver's `PagingState`), handing each
    /// row to `visit` until it says stop.
    async fn scan<R, V>(
        &self,
        st: &PreparedStatement,
        values: V,
        mut visit: impl FnMut(R) -> Result<ControlFlow<()>>,
    ) -> Result<()>
    where
        V: SerializeRow,
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        let mut paging = PagingState::start();
        loop {
            let (result, next) = self
                .inner
                .session
                .execute_single_page(st, &values, paging)
                .await
                .map_err(cql_error)?;
            let rows = result.into_rows_result().map_err(storage)?;
            for row in rows.rows::<R>().map_err(storage)? {
                if visit(row.map_err(storage)?)?.is_break() {
                    return Ok(());
                }
            }
            match next.into_paging_control_flow() {
                ControlFlow::Break(()) => return Ok(()),
                ControlFlow::Continue(state) => paging = state,
            }
        }
    }

    /// Every row of `st` (answers bounded by one partition).
    async fn scan_all<R, V>(&self, st: &PreparedStatement, values: V) -> Result<Vec<R>>
    where
        V: SerializeRow,
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        let mut out = Vec::new();
        self.scan(st, values, |row| {
            out.push(row);
            Ok(ControlFlow::Continue(()))
        })
        .await?;
        Ok(out)
    }

    /// Days of `kind/k1/k2` holding rows, newest first, at most `top`, at most `limit`.
    async fn days_desc(&self, key: (&str, &str, &str), top: i32, limit: i32) -> Result<Vec<i32>> {
        let (kind, k1, k2) = key;
        let rows: Vec<(i32,)> = self
            .scan_all(&self.inner.st.buckets_desc, (kind, k1, k2, top, limit))
            .await?;
        Ok(rows.into_iter().map(|(d,)| d).collect())
    }

    pub(super) async fn list(
        &self,
        filter: &WorkflowFilter,
        limit: usize,
        cursor: Option<Cursor>,
    ) -> Result<Page<WorkflowSummary>> {
        let limit = limit_of(limit);
        let status = filter.status.map_or(ANY, Status::as_str);
        let definition = filter.definition.as_deref().unwrap_or(ANY);
        let top = cursor.as_ref().map_or(i32::MAX, Cursor::top_day);
        // One day more than a page walks tells whether older days remain.
        let days = self
            .days_desc(("runs", status, definition), top, DAYS_PER_PAGE as i32 + 1)
            .await?;

        // One row more than the page tells whether another page exists.
        let want = limit + 1;
        let mut rows: Vec<ListRow> = Vec::with_capacity(want);
        let mut walked = 0;
        for &day in days.iter().take(DAYS_PER_PAGE) {
            let after = match &cursor {
                Some(Cursor::After { created_at_ms, id }) if keys::day(*created_at_ms) == day => {
                    Some((*created_at_ms, id.as_str()))
                }
                _ => None,
            };
            rows.extend(
                self.list_day(status, definition, day, after, want - rows.len())
                    .await?,
            );
            walked += 1;
            if rows.len() >= want {
                break;
            }
        }

        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|(created_at_ms, id, ..)| Cursor::After {
                created_at_ms: *created_at_ms,
                id: id.clone(),
            })
        } else if days.len() > walked {
            // Stopped after its share of days, not for lack of them.
            days.get(walked - 1).map(|&day| Cursor::BeforeDay(day))
        } else {
            None
        };
        Ok(Page {
            items: rows.into_iter().map(summary).collect::<Result<_>>()?,
            next_cursor: next_cursor.map(|c| c.encode()),
        })
    }

    /// The newest `need` rows of one day (below `after`), merged across its shards.
    async fn list_day(
        &self,
        status: &str,
        definition: &str,
        day: i32,
        after: Option<(i64, &str)>,
        need: usize,
    ) -> Result<Vec<ListRow>> {
        let st = &self.inner.st;
        let session = &self.inner.session;
        let need_i32 = i32::try_from(need).unwrap_or(i32::MAX);
        let shards = (0..SHARDS).map(|shard| async move {
            let result = match after {
                Some((ms, id)) => {
                    let values = (status, definition, day, shard, ms, id, need_i32);
                    session.execute_unpaged(&st.list_bucket_after, values).await
                }
                None => {
                    let values = (status, definition, day, shard, need_i32);
                    session.execute_unpaged(&st.list_bucket, values).await
                }
            };
            let rows = result
                .map_err(cql_error)?
                .into_rows_result()
                .map_err(storage)?;
            rows.rows::<ListRow>()
                .map_err(storage)?
                .map(|r| r.map_err(storage))
                .collect::<Result<Vec<_>>>()
        });
        let mut rows: Vec<ListRow> = try_join_all(shards).await?.into_iter().flatten().collect();
        // Newest first, then the larger id: the clustering order of each shard.
        rows.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
        rows.truncate(need);
        Ok(rows)
    }

    pub(super) async fn history_of(&self, id: WorkflowId) -> Result<Vec<EventEnvelope>> {
        let rows: Vec<(String,)> = self.scan_all(&self.inner.st.history, (id.0,)).await?;
        rows.iter().map(|(event,)| from_json(event)).collect()
    }

    /// Every shard's parked tasks, merged oldest parked first.
    pub(super) async fn all_dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let st = &self.inner.st;
        let shards = (0..SHARDS)
            .map(|shard| self.scan_all::<(i64, String, String), _>(&st.dead_letters, (shard,)));
        let mut rows: Vec<_> = try_join_all(shards).await?.into_iter().flatten().collect();
        rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        rows.iter().map(|(_, _, item)| from_json(item)).collect()
    }

    /// Walks the filter's (scope, class) partitions oldest day first, keeping the rows that
    /// match all of the filter (a query by assignee and group reads the assignee's rows).
    pub(super) async fn inbox(
        &self,
        filter: &HumanTaskFilter,
        limit: usize,
    ) -> Result<Vec<HumanTask>> {
        let limit = limit_of(limit);
        let (scope, class) = keys::inbox_query(filter);
        let st = &self.inner.st;
        let days: Vec<(i32,)> = self
            .scan_all(&st.buckets_asc, ("inbox", scope.as_str(), class))
            .await?;
        let mut out = Vec::new();
        for (bucket,) in days {
            self.scan(
                &st.inbox,
                (scope.as_str(), class, bucket),
                |(item,): (String,)| {
                    let task: HumanTask = from_json(&item)?;
                    if filter.matches(&task) {
                        out.push(task);
                    }
                    Ok(if out.len() >= limit {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    })
                },
            )
            .await?;
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub(super) async fn sla_alerts(&self, limit: usize) -> Result<Vec<SlaRecord>> {
        let limit = limit_of(limit);
        let mut out = Vec::with_capacity(limit);
        let mut top = i32::MAX;
        loop {
            let days = self.days_desc(("sla", "", ""), top, DAYS_PER_QUERY).await?;
            for &day in &days {
                let need = i32::try_from(limit - out.len()).unwrap_or(i32::MAX);
                let rows: Vec<(String,)> = self
                    .scan_all(&self.inner.st.sla_alerts, (day, need))
                    .await?;
                for (item,) in rows {
                    out.push(from_json(&item)?);
                }
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            match days.last() {
                Some(&oldest) if days.len() == DAYS_PER_QUERY as usize && oldest > i32::MIN => {
                    top = oldest - 1;
                }
                _ => return Ok(out),
            }
        }
    }

    pub(super) async fn catalog(&self) -> Result<Vec<DefinitionSummary>> {
        let rows: Vec<(String, i32, Option<String>)> =
            self.scan_all(&self.inner.st.catalog, ()).await?;
        let mut out: Vec<DefinitionSummary> = Vec::new();
        // Clustered by name, then version: the last row of a name is its latest.
        for (name, version, description) in rows {
            let version = u32::try_from(version).map_err(storage)?;
            match out.last_mut() {
                Some(d) if d.name == name => {
                    d.latest_version = version;
                    d.versions.push(version);
                    d.description = description;
                }
                _ => out.push(DefinitionSummary {
                    name,
                    latest_version: version,
                    versions: vec![version],
                    description,
                }),
            }
        }
        Ok(out)
    }

    pub(super) async fn find_definition(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<DefinitionRegistered>> {
        let st = &self.inner.st;
        let session = &self.inner.session;
        let result = match version {
            Some(v) => {
                let Ok(v) = i32::try_from(v) else {
                    return Ok(None);
                };
                session.execute_unpaged(&st.definition, (name, v)).await
            }
            None => {
                session
                    .execute_unpaged(&st.latest_definition, (name,))
                    .await
            }
        };
        let rows = result
            .map_err(cql_error)?
            .into_rows_result()
            .map_err(storage)?;
        rows.maybe_first_row::<(String,)>()
            .map_err(storage)?
            .map(|(record,)| from_json(&record))
            .transpose()
    }
}
