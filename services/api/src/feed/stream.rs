//! The streams subscribers consume: one run's events, every event, task updates. Each
//! subscription runs small pump tasks that move events from [`Cursor`]s into a bounded
//! channel: a slow client holds back only its own pumps (which then catch up from the
//! log), and a client that goes away stops them at once.

use super::cursor::Cursor;
use super::{Feed, FeedEvent, Position};
use crate::error::ApiError;
use distorch_domain::event::{Event, EventEnvelope};
use distorch_domain::{TaskId, WorkflowId};
use distorch_eventlog::partition_for;
use futures::Stream;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Items a subscriber's channel buffers before its pumps wait for it.
const SUBSCRIBER_BUFFER: usize = 256;
/// One wait of a seq-gap fill for the projector (it is retried while the client listens).
const STORE_WAIT: Duration = Duration::from_secs(5);

/// A live stream; an `Err` item ends it.
pub type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, ApiError>> + Send>>;

type Tx<T> = mpsc::Sender<Result<T, ApiError>>;

fn channel_stream<T: Send + 'static>(rx: mpsc::Receiver<Result<T, ApiError>>) -> EventStream<T> {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// A task event with the queue it belongs to.
#[derive(Debug, Clone)]
pub struct TaskUpdate {
    /// The task the event is about.
    pub task_id: TaskId,
    /// The task's queue; never empty (human tasks have none and are left out).
    pub queue: String,
    /// The event, as its run's history shows it.
    pub envelope: Arc<EventEnvelope>,
}

impl Feed {
    /// Every event of run `id` with a seq above `after_seq`, then its new events as they
    /// happen: each once, in seq order. `NotFound` when the store knows no such run.
    pub async fn run_events(
        &self,
        id: WorkflowId,
        after_seq: u64,
    ) -> Result<EventStream<Arc<EventEnvelope>>, ApiError> {
        let inner = &self.inner;
        let partition = partition_for(&id.to_string(), self.partitions());
        // Order matters: the store has every event before `committed`, and the cursor
        // delivers every event from it on. See the module doc.
        let committed = inner
            .log
            .committed(&inner.projector_group, &inner.topic, partition)
            .await?
            .unwrap_or(0);
        let cursor = Cursor::open(self, partition, Some(committed)).await?;
        let history = inner.store.history(id).await?;
        if history.is_empty() {
            return Err(ApiError::NotFound(format!("no workflow run {id}")));
        }
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        let pump = RunPump {
            feed: self.clone(),
            id,
            last: after_seq,
            tx,
        };
        tokio::spawn(pump.run(history, cursor));
        Ok(channel_stream(rx))
    }

    /// Every event of every run from `from` (or from now), each partition in order, with
    /// the position after each event.
    pub async fn all_events(
        &self,
        from: Option<Position>,
    ) -> Result<EventStream<(Position, FeedEvent)>, ApiError> {
        let mut cursors = Vec::with_capacity(self.partitions() as usize);
        for partition in 0..self.partitions() {
            let start = from.as_ref().map(|p| p.0[partition as usize]);
            cursors.push(Cursor::open(self, partition, start).await?);
        }
        let mut position = Position(cursors.iter().map(Cursor::position).collect());
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        for cursor in cursors {
            tokio::spawn(pump_partition(cursor, tx.clone()));
        }
        let events = channel_stream(rx);
        // Each partition's events arrive in order, so the position after an event is the
        // position after the previous one with that partition moved on.
        Ok(Box::pin(futures::StreamExt::map(events, move |item| {
            item.map(|event| {
                position.0[event.partition as usize] = event.offset + 1;
                (position.clone(), event)
            })
        })))
    }

    /// Task events (scheduled, started, heartbeat, completed, failed...) of `queue`, or of
    /// every queue, from now on. Human tasks have no queue and are not included.
    pub async fn task_updates(
        &self,
        queue: Option<String>,
    ) -> Result<EventStream<TaskUpdate>, ApiError> {
        let events = self.all_events(None).await?;
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        let pump = TaskPump {
            feed: self.clone(),
            queue,
            queues: HashMap::new(),
            tx,
        };
        tokio::spawn(pump.run(events));
        Ok(channel_stream(rx))
    }
}

async fn pump_partition(mut cursor: Cursor, tx: Tx<FeedEvent>) {
    loop {
        let batch = tokio::select! {
            batch = cursor.next() => batch,
            () = tx.closed() => return,
        };
        match batch {
            Ok(events) => {
                for event in events {
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

struct RunPump {
    feed: Feed,
    id: WorkflowId,
    /// Seq of the last event delivered (or the client's `after_seq`).
    last: u64,
    tx: Tx<Arc<EventEnvelope>>,
}

impl RunPump {
    async fn run(mut self, history: Vec<EventEnvelope>, cursor: Cursor) {
        if let Err(e) = self.serve(history, cursor).await {
            let _ = self.tx.send(Err(e)).await;
        }
    }

    async fn serve(
        &mut self,
        history: Vec<EventEnvelope>,
        mut cursor: Cursor,
    ) -> Result<(), ApiError> {
        for event in history {
            if event.seq > self.last && !self.deliver(Arc::new(event)).await {
                return Ok(());
            }
        }
        loop {
            let events = tokio::select! {
                events = cursor.next() => events?,
                () = self.tx.closed() => return Ok(()),
            };
            for event in events {
                let seq = event.envelope.seq;
                if event.envelope.workflow_id != self.id || seq <= self.last {
                    continue;
                }
                if seq > self.last + 1 {
                    for missing in self.missing_from_store(seq).await? {
                        if !self.deliver(Arc::new(missing)).await {
                            return Ok(());
                        }
                    }
                }
                if !self.deliver(event.envelope).await {
                    return Ok(());
                }
            }
        }
    }

    /// False when the subscriber has gone.
    async fn deliver(&mut self, event: Arc<EventEnvelope>) -> bool {
        self.last = event.seq;
        self.tx.send(Ok(event)).await.is_ok()
    }

    /// The run's events between the last delivered one and `upto` (exclusive), once the
    /// store has them.
    async fn missing_from_store(&self, upto: u64) -> Result<Vec<EventEnvelope>, ApiError> {
        let store = &self.feed.inner.store;
        loop {
            if store.wait_for_seq(self.id, upto - 1, STORE_WAIT).await? {
                let history = store.history(self.id).await?;
                return Ok(history
                    .into_iter()
                    .filter(|e| e.seq > self.last && e.seq < upto)
                    .collect());
            }
            if self.tx.is_closed() {
                return Ok(Vec::new());
            }
            tracing::warn!(workflow_id = %self.id, seq = upto - 1, "feed: waiting for the read model to fill a gap");
        }
    }
}

struct TaskPump {
    feed: Feed,
    queue: Option<String>,
    /// Queue of each task seen or looked up, until it ends.
    queues: HashMap<TaskId, String>,
    tx: Tx<TaskUpdate>,
}

impl TaskPump {
    async fn run(mut self, mut events: EventStream<(Position, FeedEvent)>) {
        loop {
            let item = tokio::select! {
                item = futures::StreamExt::next(&mut events) => item,
                () = self.tx.closed() => return,
            };
            let update = match item {
                None => return,
                Some(Ok((_, event))) => match self.update(event.envelope).await {
                    Ok(Some(update)) => Ok(update),
                    Ok(None) => continue,
                    Err(e) => Err(e),
                },
                Some(Err(e)) => Err(e),
            };
            let failed = update.is_err();
            if self.tx.send(update).await.is_err() || failed {
                return;
            }
        }
    }

    async fn update(
        &mut self,
        envelope: Arc<EventEnvelope>,
    ) -> Result<Option<TaskUpdate>, ApiError> {
        let (task_id, ends) = match &envelope.event {
            Event::TaskScheduled { task_id, queue, .. } => {
                // Human tasks have no queue; they never reach a worker.
                if !queue.is_empty() {
                    self.queues.insert(task_id.clone(), queue.clone());
                }
                (task_id, false)
            }
            Event::TaskStarted { task_id, .. }
            | Event::TaskHeartbeat { task_id, .. }
            | Event::TaskFailed { task_id, .. }
            | Event::TaskDeferred { task_id, .. }
            | Event::TaskParked { task_id, .. }
            | Event::TaskRetried { task_id } => (task_id, false),
            Event::TaskCompleted { task_id, .. }
            | Event::TaskCancelled { task_id }
            | Event::TaskSkipped { task_id, .. } => (task_id, true),
            _ => return Ok(None),
        };
        let queue = match self.queues.get(task_id) {
            Some(queue) => Some(queue.clone()),
            // Scheduled before this subscription began.
            None => {
                let task = self.feed.inner.store.task(task_id).await?;
                let queue = task.map(|t| t.queue).filter(|q| !q.is_empty());
                if let Some(q) = &queue {
                    self.queues.insert(task_id.clone(), q.clone());
                }
                queue
            }
        };
        let task_id = task_id.clone();
        if ends {
            self.queues.remove(&task_id);
        }
        let Some(queue) = queue else { return Ok(None) };
        if self.queue.as_ref().is_some_and(|wanted| *wanted != queue) {
            return Ok(None);
        }
        Ok(Some(TaskUpdate {
            task_id,
            queue,
            envelope,
        }))
    }
}
