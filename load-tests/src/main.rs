//! `distorch-load`: a load generator for DisTorch.
//!
//! It owns the standard throughput workload: register `load-seq-<steps>` (a chain of no-op
//! task steps on queue `load`), run SDK workers for it in this process, start `--runs` runs
//! keeping `--concurrency` in flight, and print one JSON [`stats::Summary`] line on stdout.
//! Logs go to stderr (`RUST_LOG`, default `warn`), so stdout stays machine-readable.
//!
//! Workers run in-process on purpose: it is the cheapest way to make every step a real
//! round trip through the worker protocol, and it reuses the production SDK. The workers
//! do compete with the server for CPU when both run on one machine; load-tests/README.md
//! says how to read the numbers. With `--source kafka` they take tasks straight from the log
//! (`<prefix>.tasks.load` on the broker at `--kafka`) instead of the API's poll endpoint;
//! runs are still started and watched through the API.

mod records;
mod stats;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use distorch_worker::{Client, LogSource, StartWorkflow, TaskSource, Worker, WorkflowStatus};
use serde_json::{Value, json};
use stats::Summary;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Queue every load step is dispatched to.
const QUEUE: &str = "load";
/// Task type of every load step.
const TASK: &str = "noop";

/// Where the workers take tasks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Source {
    /// The API's long-poll endpoint (`POST /api/v1/queues/load/poll`).
    Http,
    /// Straight from the log: `<prefix>.tasks.load` on the broker given by `--kafka`.
    Kafka,
}

#[derive(Debug, Parser)]
#[command(name = "distorch-load", version, about)]
struct Args {
    /// Base URL of the DisTorch server.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Runs to start in total.
    #[arg(long, default_value_t = 1000)]
    runs: usize,
    /// Runs in flight at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Sequential task steps per run.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// In-process SDK workers polling queue `load`.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Tasks each worker runs at once.
    #[arg(long, default_value_t = 64)]
    worker_concurrency: usize,
    /// Most tasks one worker poll asks for.
    #[arg(long, default_value_t = 32)]
    batch: u32,
    /// Poll loops per worker; more than one keeps a worker fetching while a poll is out.
    #[arg(long, default_value_t = 2)]
    pollers: usize,
    /// Where the workers take tasks from.
    #[arg(long, value_enum, default_value_t = Source::Http)]
    source: Source,
    /// Kafka bootstrap servers (`host:port[,host:port]` or a `kafka://` URL) for
    /// `--source kafka`: the broker the services run on.
    #[arg(long)]
    kafka: Option<String>,
    /// Also report the records the deployment appends per step, by topic, read from the
    /// broker at `--kafka` (any `--source`): the growth of every topic under
    /// `--topic-prefix` from before the first run to after the last.
    #[arg(long)]
    count_records: bool,
    /// The deployment's topic prefix (`[api] topic_prefix`), for `--source kafka` and
    /// `--count-records`.
    #[arg(long, default_value = "distorch")]
    topic_prefix: String,
    /// Long-poll wait of the workers, in ms.
    #[arg(long, default_value_t = 1000)]
    poll_wait_ms: u64,
    /// Retry interval when a run is not visible yet (runs are otherwise watched with a long-poll), in ms.
    #[arg(long, default_value_t = 20)]
    status_interval_ms: u64,
    /// A run not completed after this many seconds counts as failed.
    #[arg(long, default_value_t = 60)]
    run_timeout_s: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    if args.runs == 0 || args.concurrency == 0 || args.steps == 0 || args.workers == 0 {
        bail!("--runs, --concurrency, --steps and --workers must be at least 1");
    }

    let client = Client::new(&args.url)?;
    let name = format!("load-seq-{}", args.steps);
    let version = register(&client, &name, args.steps).await?;

    // Kafka: one source for all workers. Each still has its own consumer (a member of the
    // queue's group); their commands share the source's batching writer. HTTP: each worker
    // has its own client, as separate worker processes would.
    let log_source: Option<TaskSource> = match (args.source, &args.kafka) {
        (Source::Http, None) => None,
        (Source::Http, Some(_)) if !args.count_records => {
            bail!("--kafka needs --source kafka or --count-records")
        }
        (Source::Http, Some(_)) => None,
        (Source::Kafka, None) => bail!("--source kafka needs --kafka host:port"),
        (Source::Kafka, Some(brokers)) => Some(
            LogSource::builder()
                .topic_prefix(&args.topic_prefix)
                .connect(brokers)
                .await
                .with_context(|| format!("connecting the workers to Kafka at {brokers}"))?
                .into(),
        ),
    };
    let mut workers = Vec::with_capacity(args.workers);
    for i in 0..args.workers {
        let builder = match &log_source {
            Some(source) => Worker::with_source(source.clone(), QUEUE),
            None => Worker::builder(&args.url, QUEUE),
        };
        let handle = builder
            .worker_id(format!("distorch-load-{}-{i}", std::process::id()))
            .concurrency(args.worker_concurrency)
            .max_tasks_per_poll(args.batch)
            .pollers(args.pollers)
            .poll_wait(Duration::from_millis(args.poll_wait_ms))
            .handler(
                TASK,
                |ctx| async move { Ok(json!({ "step": ctx.step_id })) },
            )
            .spawn()?;
        workers.push(handle);
    }

    let counter = match (&args.kafka, args.count_records) {
        (Some(brokers), true) => {
            let url = if brokers.starts_with("kafka://") {
                brokers.clone()
            } else {
                format!("kafka://{brokers}")
            };
            let log = distorch_eventlog::kafka::KafkaLog::connect_url(&url)
                .await
                .with_context(|| format!("connecting to Kafka at {brokers} to count records"))?;
            let before = records::count(&log, &args.topic_prefix, QUEUE).await?;
            Some((log, before))
        }
        (None, true) => bail!("--count-records needs --kafka host:port"),
        _ => None,
    };
    let driver = Driver {
        client,
        definition: name,
        version,
        // Keys unique to this invocation, so reruns against one data dir start new runs.
        key_prefix: format!("load-{}-{}", std::process::id(), unix_nanos()),
        status_interval: Duration::from_millis(args.status_interval_ms),
        run_timeout: Duration::from_secs(args.run_timeout_s),
    };
    let (wall, latencies) = drive(Arc::new(driver), args.runs, args.concurrency).await;

    // Workers are idle by now; bound the drain anyway so a wedged server cannot hang us.
    let drain = async {
        for w in workers {
            w.shutdown().await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        eprintln!("workers did not stop within 10 s; exiting anyway");
    }

    let mut summary = Summary::new(args.runs, args.concurrency, args.steps, wall, latencies);
    if let Some((log, before)) = counter {
        let after = records::count(&log, &args.topic_prefix, QUEUE).await?;
        let steps = (args.runs - summary.failed) * args.steps;
        summary.records_per_step = Some(records::per_step(&before, &after, steps));
    }
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// The definition under load: `steps` no-op tasks in sequence.
///
/// Kept in one place because it is written against the definition format by hand: if the
/// format changes, this is the line to update.
fn definition(name: &str, steps: usize) -> Value {
    let steps: Vec<Value> = (1..=steps)
        .map(|i| json!({ "id": format!("step-{i}"), "task": TASK, "queue": QUEUE }))
        .collect();
    json!({
        "name": name,
        "description": "distorch-load: sequential no-op tasks",
        "steps": steps,
    })
}

/// Registers the load definition and returns the version to start, or `None` (latest) when
/// the server already has it and answers `409`.
async fn register(client: &Client, name: &str, steps: usize) -> anyhow::Result<Option<u32>> {
    match client.register_definition(&definition(name, steps)).await {
        Ok(d) => Ok(Some(d.version)),
        Err(e) if e.is_conflict() => Ok(None),
        Err(e) => Err(e).with_context(|| {
            format!(
                "registering definition {name} (is the server up at {}?)",
                client.base_url()
            )
        }),
    }
}

struct Driver {
    client: Client,
    definition: String,
    version: Option<u32>,
    key_prefix: String,
    status_interval: Duration,
    run_timeout: Duration,
}

/// Runs `runs` runs, `concurrency` at a time; returns the wall time and the latency of each
/// completed run.
async fn drive(driver: Arc<Driver>, runs: usize, concurrency: usize) -> (Duration, Vec<Duration>) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let lanes: Vec<_> = (0..concurrency.min(runs))
        .map(|_| {
            let (driver, next) = (driver.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= runs {
                        return latencies;
                    }
                    match driver.run_one(i).await {
                        Ok(latency) => latencies.push(latency),
                        Err(e) => eprintln!("run {i}: {e:#}"),
                    }
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(runs);
    for lane in lanes {
        // A lane only ends by returning; if one panicked its runs count as failed.
        if let Ok(l) = lane.await {
            latencies.extend(l);
        }
    }
    (started.elapsed(), latencies)
}

impl Driver {
    /// Starts run `i` and waits for it to complete; `Err` says why it did not.
    async fn run_one(&self, i: usize) -> anyhow::Result<Duration> {
        let sent = Instant::now();
        let start = StartWorkflow {
            definition: self.definition.clone(),
            version: self.version,
            input: json!({ "run": i }),
            // Makes the start retry below safe: a repeat returns the same run.
            idempotency_key: Some(format!("{}-{i}", self.key_prefix)),
        };
        let mut tries = 0;
        let started = loop {
            tries += 1;
            match self.client.start_workflow(&start).await {
                Ok(s) => break s,
                Err(e) if e.is_retryable() && tries < 3 => {
                    tokio::time::sleep(Duration::from_millis(100 * tries)).await
                }
                Err(e) => return Err(e).context("start"),
            }
        };

        // `None` until a status is seen: the start may answer before the read model has the
        // run, and until then GET answers 404.
        let mut status = started.status;
        while !status.is_some_and(WorkflowStatus::is_terminal) {
            if sent.elapsed() > self.run_timeout {
                bail!(
                    "{} still {} after {:?}",
                    started.workflow_id,
                    status.map_or("unseen".to_string(), |s| format!("{s:?}")),
                    self.run_timeout
                );
            }
            // The server holds the request until the run finishes (or the wait ends), so the
            // latency is observed when it happens, without polling traffic.
            match self
                .client
                .wait_workflow(&started.workflow_id, Duration::from_secs(10))
                .await
            {
                Ok(w) => status = Some(w.status),
                Err(e) if e.is_retryable() || e.status() == Some(404) => {
                    // Not visible yet (or a transient error): look again shortly.
                    tokio::time::sleep(self.status_interval).await;
                }
                Err(e) => return Err(e).context("status"),
            }
        }
        let latency = sent.elapsed();
        if status != Some(WorkflowStatus::Completed) {
            bail!("{} ended {status:?}", started.workflow_id);
        }
        Ok(latency)
    }
}

fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
