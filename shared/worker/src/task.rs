//! What a handler sees and returns: [`TaskContext`] and [`TaskError`].

use crate::client::ErrorReport;
use crate::source::Backend;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::time::Instant;

/// The future a registered handler returns, boxed so handlers of different types can share
/// one registry.
pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, TaskError>> + Send>>;
pub(crate) type BoxedHandler = Arc<dyn Fn(TaskContext) -> HandlerFuture + Send + Sync>;

/// Wraps any `async` closure or fn `TaskContext -> Result<Value, TaskError>`.
pub(crate) fn boxed<F, Fut>(f: F) -> BoxedHandler
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, TaskError>> + Send + 'static,
{
    Arc::new(move |ctx| Box::pin(f(ctx)))
}

/// One task attempt, as handed to a handler.
///
/// Cloning is cheap apart from `input` and `checkpoint`; clones share the attempt's lease, so
/// a sub-task of the handler may heartbeat too.
#[derive(Clone)]
pub struct TaskContext {
    /// The task's id (`<workflow id>.<n>`), the same for all its attempts; a stable key for
    /// making side effects idempotent across retries.
    pub task_id: String,
    /// The run the task belongs to.
    pub workflow_id: String,
    /// The `id` of the definition step that created the task.
    pub step_id: String,
    /// The task type this handler was registered for.
    pub task: String,
    /// 1-based attempt number; `> 1` means an earlier attempt failed or timed out.
    pub attempt: u32,
    /// The step's input, as the definition computed it for this task.
    pub input: Value,
    /// The last checkpoint an earlier attempt saved with [`TaskContext::heartbeat`]; resume
    /// from it instead of starting over.
    pub checkpoint: Option<Value>,
    pub(crate) lease: Arc<Lease>,
}

impl std::fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskContext")
            .field("task_id", &self.task_id)
            .field("workflow_id", &self.workflow_id)
            .field("step_id", &self.step_id)
            .field("task", &self.task)
            .field("attempt", &self.attempt)
            .field("input", &self.input)
            .field("checkpoint", &self.checkpoint)
            .finish_non_exhaustive()
    }
}

impl TaskContext {
    /// Sends a heartbeat now, saving `checkpoint` when given, and returns whether this
    /// attempt is still current.
    ///
    /// `false` means the server superseded the attempt (it timed out, the run was cancelled,
    /// or another attempt completed; HTTP `409`, or the engine's rejection over the log) or
    /// asked for it to be cancelled
    /// (`cancel_requested` in the ack): stop working and return; whatever the handler
    /// returns afterwards is discarded. The worker also aborts the handler at its next
    /// `.await`.
    ///
    /// Automatic heartbeats keep the lease alive anyway; call this to save progress or to
    /// find out early that work should stop. A network failure is logged and reported as
    /// `true`: the attempt may well still be current, and the next heartbeat will tell.
    pub async fn heartbeat(&self, checkpoint: Option<Value>) -> bool {
        self.lease.beat(checkpoint.as_ref()).await
    }

    /// Whether a heartbeat already learnt that this attempt is superseded. Cheap; lets a
    /// CPU-bound handler, which the worker cannot abort, stop on its own.
    pub fn is_superseded(&self) -> bool {
        self.lease.is_superseded()
    }
}

/// The server-side lease of one attempt, shared by its handler and the worker's automatic
/// heartbeats.
pub(crate) struct Lease {
    backend: Backend,
    task_id: String,
    attempt: u32,
    /// Flips to `true` once, on the first `409` or cancellation request.
    superseded: watch::Sender<bool>,
    /// When a heartbeat was last sent (successfully or not): automatic heartbeats are due an
    /// interval after it, so a handler that heartbeats often causes no extra requests, and a
    /// server outage does not turn into a tight retry loop.
    last_beat: Mutex<Instant>,
}

impl Lease {
    pub fn new(backend: Backend, task_id: String, attempt: u32) -> Self {
        Self {
            backend,
            task_id,
            attempt,
            superseded: watch::Sender::new(false),
            last_beat: Mutex::new(Instant::now()),
        }
    }

    pub fn is_superseded(&self) -> bool {
        *self.superseded.borrow()
    }

    /// Resolves once the attempt is known to be superseded.
    pub async fn superseded(&self) {
        // The sender lives in `self`, so `wait_for` cannot fail while we borrow it.
        let _ = self.superseded.subscribe().wait_for(|s| *s).await;
    }

    pub fn last_beat(&self) -> Instant {
        *self.last_beat.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn beat(&self, checkpoint: Option<&Value>) -> bool {
        if self.is_superseded() {
            return false;
        }
        *self.last_beat.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        match self
            .backend
            .heartbeat(&self.task_id, self.attempt, checkpoint)
            .await
        {
            Ok(ack) if ack.cancel_requested => {
                tracing::debug!(task_id = %self.task_id, attempt = self.attempt, "cancellation requested");
                self.superseded.send_replace(true);
                false
            }
            Ok(_) => true,
            Err(e) if e.is_conflict() => {
                tracing::debug!(task_id = %self.task_id, attempt = self.attempt, "attempt superseded");
                self.superseded.send_replace(true);
                false
            }
            Err(e) => {
                tracing::warn!(task_id = %self.task_id, attempt = self.attempt, error = %e, "heartbeat failed");
                true
            }
        }
    }
}

/// Why a handler failed. The server retries the task per its retry policy when `retryable`
/// (and `kind` is not in the policy's `non_retryable` list), otherwise fails the step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct TaskError {
    /// A stable, machine-matchable category such as `timeout` or `invalid_input`; retry
    /// policies and compensation logic match on it.
    pub kind: String,
    /// Human-readable description, shown in the run's history.
    pub message: String,
    /// Whether the server may try the task again (see the type's docs).
    pub retryable: bool,
    /// Wait at least this long before the next attempt (a rate limit's `Retry-After`, say);
    /// the retry policy still decides whether there is one, and its backoff applies when
    /// longer. Set with [`TaskError::retry_after`].
    pub retry_after: Option<std::time::Duration>,
}

impl TaskError {
    /// A failure that may succeed if tried again (a dependency was down, a lock was taken).
    pub fn retryable(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            retryable: true,
            retry_after: None,
        }
    }

    /// A failure that will recur on every attempt (bad input, a business rule said no).
    pub fn fatal(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }

    /// The same failure, asking that the next attempt wait at least `delay` (sent as the
    /// report's `retry_after_ms`). Meaningless on a fatal error: there is no next attempt.
    pub fn retry_after(mut self, delay: std::time::Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }
}

impl From<TaskError> for ErrorReport {
    fn from(e: TaskError) -> Self {
        ErrorReport {
            kind: e.kind,
            message: e.message,
            retryable: e.retryable,
        }
    }
}

/// Whole milliseconds of `delay`, rounded up (so a sub-millisecond delay still delays), as the
/// fail report's `retry_after_ms`.
pub(crate) fn retry_after_ms(delay: std::time::Duration) -> u64 {
    let ms = delay.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}
