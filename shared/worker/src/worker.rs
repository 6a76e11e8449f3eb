//! The poll/execute/report loop: [`Worker`], its builder and its handle.

use crate::Error;
use crate::backoff::Backoff;
use crate::client::{Client, ErrorReport, Metrics, Task};
use crate::source::{Backend, Feed, Receipt, TaskSource};
use crate::task::{BoxedHandler, Lease, TaskContext, TaskError, boxed};
use crate::telemetry::AttemptUsage;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// Heartbeat cadence when neither the builder nor the task says otherwise.
const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// Floor for heartbeat intervals derived from tiny `heartbeat_timeout_ms` values, so a
/// misconfigured step cannot make a worker spin on heartbeats.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(10);

/// Configures a [`Worker`]. Obtain one with [`Worker::builder`].
pub struct WorkerBuilder {
    base_url: String,
    source: Option<TaskSource>,
    queue: String,
    worker_id: Option<String>,
    concurrency: usize,
    max_tasks_per_poll: u32,
    poll_wait: Duration,
    pollers: usize,
    heartbeat_interval: Option<Duration>,
    metrics: bool,
    handlers: HashMap<String, BoxedHandler>,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("base_url", &self.base_url)
            .field("source", &self.source)
            .field("queue", &self.queue)
            .field("worker_id", &self.worker_id)
            .field("concurrency", &self.concurrency)
            .field("max_tasks_per_poll", &self.max_tasks_per_poll)
            .field("poll_wait", &self.poll_wait)
            .field("pollers", &self.pollers)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("metrics", &self.metrics)
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// Identifies this worker to the server (shown in task views, used for lease
    /// bookkeeping). Default: `<hostname>-<pid>-<n>`, unique per worker in the process.
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// Most attempts running at once. Polls ask only for free slots, so a busy worker leaves
    /// tasks to its peers. Default 10.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Most tasks one poll asks for. Larger batches cut round trips under load. Default 10;
    /// the server accepts at most 100.
    pub fn max_tasks_per_poll(mut self, n: u32) -> Self {
        self.max_tasks_per_poll = n;
        self
    }

    /// How long one long-poll may wait for work before returning empty. Default 20 s; the
    /// server accepts at most 60 s.
    pub fn poll_wait(mut self, wait: Duration) -> Self {
        self.poll_wait = wait;
        self
    }

    /// Concurrent poll loops. One suffices unless polls are slow relative to tasks: a second
    /// loop picks up slots freed while the first is waiting on the server. Default 1.
    pub fn pollers(mut self, n: usize) -> Self {
        self.pollers = n;
        self
    }

    /// Fixed interval of automatic heartbeats. Default: a third of the task's
    /// `heartbeat_timeout_ms` (so two can be lost before the lease lapses), or 10 s.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = Some(interval);
        self
    }

    /// Whether reports carry `metrics` (see the crate docs for what they mean). Default on.
    pub fn metrics(mut self, enabled: bool) -> Self {
        self.metrics = enabled;
        self
    }

    /// Uses an existing client (sharing its connection pool) instead of building one from
    /// the base URL.
    pub fn client(mut self, client: Client) -> Self {
        self.source = Some(client.into());
        self
    }

    /// Takes tasks from `source` (the HTTP API through a [`Client`], or the log through a
    /// `LogSource`) instead of the base URL's server.
    pub fn source(mut self, source: impl Into<TaskSource>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Runs `handler` for tasks of type `task`. Registering a type twice keeps the last.
    pub fn handler<F, Fut>(mut self, task: impl Into<String>, handler: F) -> Self
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, TaskError>> + Send + 'static,
    {
        self.handlers.insert(task.into(), boxed(handler));
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<Worker, Error> {
        if self.queue.is_empty() {
            return Err(Error::Config("queue must not be empty".into()));
        }
        if self.concurrency == 0 || self.max_tasks_per_poll == 0 || self.pollers == 0 {
            return Err(Error::Config(
                "concurrency, max_tasks_per_poll and pollers must be at least 1".into(),
            ));
        }
        if u32::try_from(self.concurrency).is_err() {
            return Err(Error::Config("concurrency must fit in a u32".into()));
        }
        if self.heartbeat_interval.is_some_and(|i| i.is_zero()) {
            return Err(Error::Config("heartbeat_interval must be positive".into()));
        }
        let backend = match self.source {
            Some(source) => source.backend,
            None => Backend::Http(Client::new(self.base_url)?),
        };
        Ok(Worker {
            inner: Arc::new(Inner {
                backend,
                worker_id: self.worker_id.unwrap_or_else(default_worker_id),
                queue: self.queue,
                concurrency: self.concurrency,
                max_tasks_per_poll: self.max_tasks_per_poll,
                poll_wait: self.poll_wait,
                pollers: self.pollers,
                heartbeat_interval: self.heartbeat_interval,
                metrics: self.metrics,
                handlers: self.handlers,
            }),
        })
    }

    /// [`build`](Self::build) then [`Worker::spawn`].
    pub fn spawn(self) -> Result<WorkerHandle, Error> {
        Ok(self.build()?.spawn())
    }
}

/// A configured worker for one queue. Start it with [`Worker::run`] or [`Worker::spawn`].
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.inner.queue)
            .field("worker_id", &self.inner.worker_id)
            .finish_non_exhaustive()
    }
}

struct Inner {
    backend: Backend,
    queue: String,
    worker_id: String,
    concurrency: usize,
    max_tasks_per_poll: u32,
    poll_wait: Duration,
    pollers: usize,
    heartbeat_interval: Option<Duration>,
    metrics: bool,
    handlers: HashMap<String, BoxedHandler>,
}

impl Worker {
    /// Starts configuring a worker for `queue` on the server at `base_url`: it takes tasks
    /// from the HTTP poll endpoint.
    pub fn builder(base_url: impl Into<String>, queue: impl Into<String>) -> WorkerBuilder {
        WorkerBuilder {
            base_url: base_url.into(),
            source: None,
            queue: queue.into(),
            worker_id: None,
            concurrency: 10,
            max_tasks_per_poll: 10,
            poll_wait: Duration::from_secs(20),
            pollers: 1,
            heartbeat_interval: None,
            metrics: true,
            handlers: HashMap::new(),
        }
    }

    /// Starts configuring a worker for `queue` that takes tasks from `source`: a [`Client`]
    /// (the HTTP poll endpoint) or, with the `kafka` feature, a `LogSource`
    /// (`<prefix>.tasks.<queue>` straight from the log). Handlers, concurrency, heartbeats
    /// and checkpoints work the same with either.
    pub fn with_source(source: impl Into<TaskSource>, queue: impl Into<String>) -> WorkerBuilder {
        let mut builder = Self::builder(String::new(), queue);
        builder.source = Some(source.into());
        builder
    }

    /// The id this worker polls with.
    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    /// Polls and runs tasks until `shutdown` resolves, then stops polling and returns once
    /// every in-flight attempt has finished and been reported (graceful shutdown).
    ///
    /// A long-poll outstanding at shutdown is abandoned; should the server have handed it
    /// tasks in that instant, they are redelivered after their timeout. (A `LogSource` has
    /// no such window: attempts it has started are run and reported before `run` returns.) Dropping this future also
    /// stops polling, but leaves in-flight attempts to finish in the background.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let _stop_on_drop = StopOnDrop(&stop_tx);
        let slots = Arc::new(Semaphore::new(self.inner.concurrency));
        let prefetch = self
            .inner
            .concurrency
            .max(self.inner.max_tasks_per_poll as usize);
        let feed = Arc::new(self.inner.backend.open(&self.inner.queue, prefetch));
        tracing::info!(
            queue = %self.inner.queue,
            worker_id = %self.inner.worker_id,
            handlers = ?self.inner.handlers.keys().collect::<Vec<_>>(),
            "worker started"
        );
        let pollers: Vec<JoinHandle<()>> = (0..self.inner.pollers)
            .map(|_| {
                tokio::spawn(poll_loop(
                    self.inner.clone(),
                    feed.clone(),
                    slots.clone(),
                    stop_rx.clone(),
                ))
            })
            .collect();

        shutdown.await;
        tracing::info!(queue = %self.inner.queue, "worker shutting down; draining in-flight tasks");
        stop_tx.send_replace(true);
        for p in pollers {
            // A poller only ends by returning; a panic in one is a bug worth surfacing.
            if let Err(e) = p.await {
                tracing::error!(error = %e, "poll loop panicked");
            }
        }
        // Every attempt holds one slot until it is reported, so owning all of them means
        // nothing is in flight.
        let all = u32::try_from(self.inner.concurrency).expect("checked in build");
        let _ = slots.acquire_many(all).await;
        // The pollers are gone, so this is the last reference.
        if let Ok(feed) = Arc::try_unwrap(feed) {
            feed.close().await;
        }
        tracing::info!(queue = %self.inner.queue, "worker stopped");
    }

    /// Runs the worker on the current tokio runtime until [`WorkerHandle::shutdown`].
    pub fn spawn(self) -> WorkerHandle {
        let (tx, rx) = oneshot::channel::<()>();
        let join = tokio::spawn(self.run(async {
            // A dropped handle also means "stop": nobody could stop the worker otherwise.
            let _ = rx.await;
        }));
        WorkerHandle { stop: tx, join }
    }
}

/// Controls a [`Worker::spawn`]ed worker. Dropping it shuts the worker down in the
/// background.
#[derive(Debug)]
pub struct WorkerHandle {
    stop: oneshot::Sender<()>,
    join: JoinHandle<()>,
}

impl WorkerHandle {
    /// Stops polling and waits until in-flight attempts have finished and been reported.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.join.await {
            tracing::error!(error = %e, "worker task failed");
        }
    }
}

struct StopOnDrop<'a>(&'a watch::Sender<bool>);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// Resolves when shutdown begins (or the worker's `run` future is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn poll_loop(
    inner: Arc<Inner>,
    feed: Arc<Feed>,
    slots: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        // Wait for one free slot, then take whatever else is free without waiting: asking
        // for slots we do not have would make the server lease tasks we cannot start.
        let mut permit = tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let extra = (slots.available_permits() as u32).min(inner.max_tasks_per_poll - 1);
        if extra > 0
            && let Ok(more) = slots.clone().try_acquire_many_owned(extra)
        {
            permit.merge(more);
        }
        let wanted = permit.num_permits() as u32;

        // Returns early (empty) when shutdown begins while waiting for work; attempts it
        // had already started are run and reported like any other.
        let polled = feed
            .poll(
                &inner.queue,
                &inner.worker_id,
                wanted,
                inner.poll_wait,
                &mut stop,
            )
            .await;
        let tasks = match polled {
            Ok(tasks) => {
                failures = 0;
                tasks
            }
            Err(e) => {
                drop(permit);
                let delay = Backoff::RETRY.delay_random(failures);
                failures = failures.saturating_add(1);
                if e.is_retryable() {
                    tracing::warn!(queue = %inner.queue, error = %e, retry_in = ?delay, "poll failed");
                } else {
                    // Retrying will not fix a rejected poll (bad queue name, `max_tasks` over the
                    // server's limit), but stopping silently would be worse: keep trying, loudly.
                    tracing::error!(queue = %inner.queue, error = %e, retry_in = ?delay, "poll rejected");
                }
                tokio::select! {
                    () = stopped(&mut stop) => return,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };

        for (task, receipt) in tasks {
            let slot = match permit.split(1) {
                Some(slot) => slot,
                None => {
                    // The server sent more than asked for. Run it anyway (it is leased to us)
                    // but only once a slot frees up, keeping the concurrency promise.
                    tracing::warn!(asked = wanted, "poll returned more tasks than requested");
                    slots
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("semaphore never closed")
                }
            };
            let span = tracing::info_span!(
                "task",
                task_id = %task.task_id,
                workflow_id = %task.workflow_id,
                task = %task.task,
                attempt = task.attempt,
            );
            tokio::spawn(
                execute(inner.clone(), task, receipt, slot, stop.clone()).instrument(span),
            );
        }
        // Slots asked for but not filled go back to the pool when `permit` drops here.
    }
}

/// How an attempt ended, as it will be reported.
enum Outcome {
    Completed(Value),
    /// The failure, and how long the next attempt should wait at least.
    Failed(ErrorReport, Option<Duration>),
}

/// Runs one attempt to its report. `_slot` is held throughout so the attempt counts against
/// the worker's concurrency until the server knows the result. The receipt is settled once
/// the attempt needs its source no more: reported, or found superseded.
async fn execute(
    inner: Arc<Inner>,
    task: Task,
    receipt: Receipt,
    _slot: OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) {
    let Some(handler) = inner.handlers.get(&task.task).cloned() else {
        tracing::warn!("no handler for task type; failing it");
        let outcome = Outcome::Failed(
            ErrorReport {
                kind: "unknown_task".into(),
                message: format!(
                    "worker {} on queue {} has no handler for task type `{}`",
                    inner.worker_id, inner.queue, task.task
                ),
                retryable: false,
            },
            None,
        );
        if report(
            &inner,
            &task.task_id,
            task.attempt,
            &outcome,
            None,
            &mut stop,
        )
        .await
        {
            receipt.settle();
        }
        return;
    };

    let interval = inner
        .heartbeat_interval
        .unwrap_or_else(|| heartbeat_interval_for(task.heartbeat_timeout_ms));
    let lease = Arc::new(Lease::new(
        inner.backend.clone(),
        task.task_id.clone(),
        task.attempt,
    ));
    let (task_id, attempt) = (task.task_id.clone(), task.attempt);
    let ctx = TaskContext {
        task_id: task.task_id,
        workflow_id: task.workflow_id,
        step_id: task.step_id,
        task: task.task,
        attempt: task.attempt,
        input: task.input,
        checkpoint: task.checkpoint,
        lease: lease.clone(),
    };

    let mut usage = inner.metrics.then(AttemptUsage::begin);
    // Its own tokio task so a panic is contained (and reported) and a superseded attempt can
    // be aborted.
    let mut running = tokio::spawn(handler(ctx).in_current_span());
    let joined = tokio::select! {
        r = &mut running => r,
        () = keep_alive(&lease, interval, usage.as_mut()) => {
            running.abort();
            tracing::debug!("attempt superseded; handler aborted, nothing reported");
            receipt.settle();
            return;
        }
    };
    let metrics = usage.and_then(AttemptUsage::finish);
    if lease.is_superseded() {
        tracing::debug!("attempt superseded while finishing; result dropped");
        receipt.settle();
        return;
    }

    let outcome = match joined {
        Ok(Ok(output)) => Outcome::Completed(output),
        Ok(Err(e)) => {
            let retry_after = e.retry_after;
            Outcome::Failed(e.into(), retry_after)
        }
        Err(e) if e.is_panic() => {
            let message = panic_message(e.into_panic());
            tracing::error!(panic = %message, "handler panicked");
            Outcome::Failed(
                ErrorReport {
                    kind: "panic".into(),
                    message,
                    retryable: true,
                },
                None,
            )
        }
        Err(_) => {
            // Only the runtime shutting down cancels it; the server will time the attempt out.
            tracing::warn!("handler cancelled by runtime shutdown; nothing reported");
            return;
        }
    };
    if report(&inner, &task_id, attempt, &outcome, metrics, &mut stop).await {
        receipt.settle();
    }
}

/// Heartbeats every `interval` after the last heartbeat (automatic or the handler's own).
/// Returns only once the attempt is superseded.
async fn keep_alive(lease: &Lease, interval: Duration, mut usage: Option<&mut AttemptUsage>) {
    loop {
        let due = lease.last_beat() + interval;
        tokio::select! {
            () = lease.superseded() => return,
            () = tokio::time::sleep_until(due) => {}
        }
        // The handler may have heartbeaten while we slept; then the next beat is later.
        if lease.last_beat() + interval > tokio::time::Instant::now() {
            continue;
        }
        if let Some(u) = usage.as_deref_mut() {
            u.observe();
        }
        if !lease.beat(None).await {
            return;
        }
    }
}

/// Sends the outcome, retrying transport failures and 5xx with backoff so a result survives
/// a server restart. Stops on success, on 409 (superseded: dropped silently), on any other
/// 4xx (logged), and on a retryable failure once shutdown has begun: the attempt then times
/// out on the server and is retried there, which is the at-least-once fallback.
///
/// Returns whether the attempt is settled: its result is recorded or can never be.
async fn report(
    inner: &Inner,
    task_id: &str,
    attempt: u32,
    outcome: &Outcome,
    metrics: Option<Metrics>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let mut retry = 0u32;
    loop {
        let result = match outcome {
            Outcome::Completed(output) => {
                inner
                    .backend
                    .complete(task_id, attempt, output, metrics)
                    .await
            }
            Outcome::Failed(error, retry_after) => {
                inner
                    .backend
                    .fail(task_id, attempt, error, *retry_after, metrics)
                    .await
            }
        };
        let e = match result {
            Ok(()) => return true,
            Err(e) => e,
        };
        if e.is_conflict() {
            tracing::debug!(error = %e, "report rejected: attempt superseded");
            return true;
        }
        if !e.is_retryable() {
            tracing::error!(error = %e, "report rejected; result dropped");
            return true;
        }
        if *stop.borrow() {
            tracing::warn!(error = %e, "report failed during shutdown; the server will retry the task after its timeout");
            return false;
        }
        let delay = Backoff::RETRY.delay_random(retry);
        retry = retry.saturating_add(1);
        tracing::warn!(error = %e, retry_in = ?delay, "report failed; retrying");
        // Shutdown cuts the wait short for one last try rather than abandoning at once.
        tokio::select! {
            () = stopped(stop) => {}
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Default heartbeat interval for a task: a third of its timeout, else 10 s.
fn heartbeat_interval_for(heartbeat_timeout_ms: Option<u64>) -> Duration {
    heartbeat_timeout_ms
        .filter(|&ms| ms > 0)
        .map_or(DEFAULT_HEARTBEAT_INTERVAL, |ms| {
            Duration::from_millis(ms) / 3
        })
        .max(MIN_HEARTBEAT_INTERVAL)
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "handler panicked with a non-string payload".to_string()
    }
}

fn default_worker_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{host}-{}-{n}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_interval_is_a_third_of_the_timeout_with_a_floor() {
        assert_eq!(
            heartbeat_interval_for(Some(30_000)),
            Duration::from_secs(10)
        );
        assert_eq!(
            heartbeat_interval_for(Some(900)),
            Duration::from_millis(300)
        );
        assert_eq!(heartbeat_interval_for(Some(3)), MIN_HEARTBEAT_INTERVAL);
        assert_eq!(heartbeat_interval_for(Some(0)), DEFAULT_HEARTBEAT_INTERVAL);
        assert_eq!(heartbeat_interval_for(None), DEFAULT_HEARTBEAT_INTERVAL);
    }

    #[test]
    fn panic_payloads_become_messages() {
        assert_eq!(panic_message(Box::new("boom")), "boom");
        assert_eq!(panic_message(Box::new(String::from("bang"))), "bang");
        assert!(panic_message(Box::new(42)).contains("non-string"));
    }

    #[test]
    fn default_worker_ids_are_unique_in_the_process() {
        assert_ne!(default_worker_id(), default_worker_id());
    }

    #[test]
    fn builder_rejects_unusable_settings() {
        let b = || Worker::builder("http://127.0.0.1:1", "q");
        assert!(matches!(b().concurrency(0).build(), Err(Error::Config(_))));
        assert!(matches!(
            b().max_tasks_per_poll(0).build(),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            b().heartbeat_interval(Duration::ZERO).build(),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Worker::builder("127.0.0.1:1", "q").build(),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Worker::builder("http://h", "").build(),
            Err(Error::Config(_))
        ));
        assert!(b().build().is_ok());
    }
}
