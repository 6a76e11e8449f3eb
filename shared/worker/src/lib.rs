#![warn(missing_docs)]
//! The DisTorch worker SDK for Rust: run task handlers for a queue against a DisTorch server
//! over its REST worker protocol, or straight from the log (Kafka).
//!
//! This crate owns the worker side of the protocol: taking tasks of a queue in batches,
//! running handlers concurrently, heartbeating (with checkpoints) while they run, and
//! reporting completions and failures reliably. By default it depends only on the HTTP
//! protocol, not on any server crate, so it can be vendored into services that know nothing
//! of DisTorch's internals. The `kafka` cargo feature adds `LogSource`: tasks straight from
//! `<prefix>.tasks.<queue>` and results published to `<prefix>.commands`, with no API
//! process in between (it pulls in the domain model and librdkafka).
//!
//! Entry points:
//! - [`Worker::builder`] (HTTP) or [`Worker::with_source`] (a [`TaskSource`]: a [`Client`]
//!   or a `LogSource`) → [`WorkerBuilder`] → [`Worker::run`] or [`Worker::spawn`]: the
//!   worker loop. Handlers, concurrency, heartbeats and checkpoints are the same with
//!   either source.
//! - [`TaskContext`] and [`TaskError`]: what a handler receives and may return.
//! - [`Client`]: one typed call per REST endpoint (definitions, workflows, the worker
//!   protocol), for drivers, tests and load generators.
//!
//! ```no_run
//! use distorch_worker::{TaskError, Worker};
//! use serde_json::json;
//!
//! # async fn demo() -> Result<(), distorch_worker::Error> {
//! let worker = Worker::builder("http://127.0.0.1:8000", "payments")
//!     .concurrency(32)
//!     .handler("charge-card", |ctx| async move {
//!         let amount = ctx.input["amount"].as_u64()
//!             .ok_or_else(|| TaskError::fatal("invalid_input", "amount missing"))?;
//!         Ok(json!({ "charged": amount }))
//!     })
//!     .build()?;
//! worker.run(async { tokio::signal::ctrl_c().await.ok(); }).await;
//! # Ok(()) }
//! ```
//!
//! # Delivery guarantees
//! Tasks are delivered at least once: an attempt whose report is lost (or whose worker dies)
//! times out on the server and is retried, so handlers should be idempotent, keyed by
//! `task_id` where they have side effects. A handler runs only for an attempt whose start
//! the engine has recorded, so a task whose completion was recorded never runs again; this
//! holds for both sources (see `LogSource` for the log's offsets). Within a worker:
//! - at most `concurrency` attempts run at once, and a poll asks for
//!   `min(free slots, max_tasks_per_poll)` tasks;
//! - a result is reported until the server accepts it, rejects it with a 4xx, or the worker
//!   is shutting down; a `409` means the attempt was superseded and is dropped silently;
//! - a task type without a handler fails non-retryably with type `unknown_task`; a handler
//!   panic fails retryably with type `panic`;
//! - heartbeats are automatic while a handler runs; if one learns the attempt was
//!   superseded (`409`) or that cancellation was requested, the handler is aborted at its
//!   next `.await` and nothing is reported.
//!
//! # Metrics
//! Each report carries `metrics`, read from `/proc/self` (Linux only; elsewhere none are
//! sent):
//! - `cpu_ms`: the change in the process's `utime + stime` across the handler call,
//!   assuming 100 clock ticks per second (`getconf CLK_TCK` on mainstream Linux), so it
//!   has a 10 ms resolution;
//! - `peak_memory_bytes`: the process high-water mark (`VmHWM`) if it rose during the
//!   call, else the largest `VmRSS` seen at its start, heartbeats and end.
//!
//! These are **process-wide** figures: with several handlers in flight, each one's numbers
//! include the others' (and the SDK's own). They are exact only with `concurrency(1)`.
//! Samples are shared across attempts for up to 10 ms to keep their cost flat under
//! load. Turn them off with [`WorkerBuilder::metrics`].

mod backoff;
mod client;
mod error;
#[cfg(feature = "kafka")]
mod log;
mod source;
mod task;
mod telemetry;
mod worker;

pub use client::{
    Client, DefinitionRef, ErrorReport, HeartbeatAck, Metrics, StartWorkflow, StartedWorkflow,
    Task, Workflow, WorkflowStatus,
};
pub use error::Error;
#[cfg(feature = "kafka")]
pub use log::{LogSource, LogSourceBuilder};
pub use source::TaskSource;
pub use task::{TaskContext, TaskError};
pub use worker::{Worker, WorkerBuilder, WorkerHandle};
