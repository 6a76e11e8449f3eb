//! Subscriptions over the graphql-ws protocol (and the older subscriptions-transport-ws),
//! fed by [`crate::feed::Feed`]: see there for why every event arrives once and in order,
//! and how `afterSeq` resumes without a gap.

use super::error::OrGql;
use super::types::{TaskUpdate, WorkflowEvent};
use crate::routes::{AppState, parse_workflow_id};
use async_graphql::{Context, ID, Result, Subscription};
use futures::{Stream, StreamExt};

/// The subscription root, fed by the live [`crate::feed::Feed`].
pub struct Subscription;

/// Live events over a WebSocket at `/graphql` (protocol `graphql-transport-ws`, or the older
/// `graphql-ws`).
#[Subscription]
impl Subscription {
    /// The run's events with a seq above `afterSeq` (its history first, then live), each
    /// once, in order. To resume after a disconnect, pass the last `seq` received.
    async fn workflow_events(
        &self,
        ctx: &Context<'_>,
        workflow_id: ID,
        #[graphql(default = 0)] after_seq: u64,
    ) -> Result<impl Stream<Item = Result<WorkflowEvent>> + use<>> {
        let state = ctx.data_unchecked::<AppState>();
        let id = parse_workflow_id(&workflow_id).gql()?;
        let events = state.feed.run_events(id, after_seq).await.gql()?;
        Ok(events.map(|item| item.map(WorkflowEvent).gql()))
    }

    /// Events about the tasks of `queue` (scheduled, started, heartbeat, completed,
    /// failed...), from now on.
    async fn task_updates(
        &self,
        ctx: &Context<'_>,
        queue: String,
    ) -> Result<impl Stream<Item = Result<TaskUpdate>> + use<>> {
        let state = ctx.data_unchecked::<AppState>();
        let updates = state.feed.task_updates(Some(queue)).await.gql()?;
        Ok(updates.map(|item| item.map(TaskUpdate).gql()))
    }
}
