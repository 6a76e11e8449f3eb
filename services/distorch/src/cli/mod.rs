//! The client commands of `distorch` (`definition`, `workflow`, `task`, `dlq`): each is one
//! or a few REST calls to a running server, printed as a table or as the API's JSON.
//!
//! Exit codes (see [`outcome`]): 0 ok; 1 a waited-for run ended failed, cancelled or
//! compensated; 2 a usage error or a request the API refused (4xx); 3 the server was
//! unreachable or failed (5xx); 4 `--timeout` expired while waiting.

mod http;
mod input;
mod outcome;
mod render;

use clap::{Args, Subcommand, ValueEnum};
use http::{Api, Body, Reply};
use outcome::Failure;
use serde_json::{Value, json};
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub const DEFAULT_URL: &str = "http://127.0.0.1:8000";

/// Run statuses `workflow list --status` accepts (and completes in the shell).
const RUN_STATUSES: [&str; 8] = [
    "running",
    "paused",
    "parked",
    "compensating",
    "completed",
    "failed",
    "compensated",
    "cancelled",
];

/// Where the server is; given to every client command.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Base URL of the DisTorch API.
    #[arg(long, global = true, env = "DISTORCH_URL", default_value = DEFAULT_URL)]
    pub url: String,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The API's JSON, pretty-printed, for scripts.
    Json,
}

/// `-o/--output table|json`.
#[derive(Args, Debug, Clone)]
pub struct Out {
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        visible_alias = "format",
        value_name = "FORMAT",
        global = true,
        value_enum,
        default_value_t
    )]
    pub output: Format,
}

#[derive(Args, Debug)]
pub struct DefinitionArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    out: Out,
    #[command(subcommand)]
    command: DefinitionCmd,
}

#[derive(Subcommand, Debug)]
enum DefinitionCmd {
    /// Register a definition file (YAML or JSON) as the next version of its name.
    Apply {
        /// The definition document; `-` reads stdin. `.json` is sent as JSON, `.yaml`/`.yml`
        /// as YAML, anything else as JSON when it starts with `{`, else as YAML.
        #[arg(short = 'f', long = "file", value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
        file: String,
    },
    /// List registered definitions with their versions.
    List,
    /// Show a definition: its latest version, or `--version N`.
    Show {
        name: String,
        /// A version other than the latest.
        #[arg(long, value_name = "N")]
        version: Option<u32>,
    },
}

#[derive(Args, Debug)]
pub struct WorkflowArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    out: Out,
    #[command(subcommand)]
    command: WorkflowCmd,
}

#[derive(Subcommand, Debug)]
enum WorkflowCmd {
    /// Start a run of a definition.
    Start {
        /// Definition name.
        definition: String,
        /// Definition version (default: the latest).
        #[arg(long, value_name = "N")]
        version: Option<u32>,
        /// The run's input: JSON, `@file` or `@-` (stdin).
        #[arg(long, value_name = "JSON|@FILE")]
        input: Option<String>,
        /// Choose the run's id (a UUID): starting again with the same id returns that run.
        #[arg(long, value_name = "ID", conflicts_with = "idempotency_key")]
        workflow_id: Option<String>,
        /// Starting again with the same key (and definition) returns the run it started.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
        /// Wait until the run ends; print it; exit 1 unless it completed.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (e.g. 30s, 5m) and exit 4.
        #[arg(long, value_name = "DURATION", requires = "wait", value_parser = input::duration)]
        timeout: Option<Duration>,
    },
    /// List runs, newest first.
    List {
        /// Only runs in this status.
        #[arg(long, value_parser = RUN_STATUSES)]
        status: Option<String>,
        /// Only runs of this definition.
        #[arg(long, value_name = "NAME")]
        definition: Option<String>,
        /// Page size (the server's default is 50, its maximum 1000).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// The next page: the cursor a previous listing printed.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show a run with its tasks.
    Show { id: String },
    /// Show a run's events in order.
    History { id: String },
    /// Cancel a run.
    Cancel {
        id: String,
        /// Undo the completed steps (their compensations) before ending cancelled.
        #[arg(long)]
        compensate: bool,
        /// Why; recorded in the run's history.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Pause a run: nothing new is scheduled until it is resumed.
    Pause { id: String },
    /// Resume a paused run.
    Resume { id: String },
    /// Send a signal to a run (kept until a `signal` step of that name takes it).
    Signal {
        id: String,
        /// Signal name.
        name: String,
        /// Its payload: JSON, `@file` or `@-` (stdin); default null.
        #[arg(long, value_name = "JSON|@FILE")]
        payload: Option<String>,
    },
    /// Wait until a run ends and print it; exit 0 when it completed, 1 otherwise.
    Wait {
        id: String,
        /// Give up after this long (e.g. 30s, 5m) and exit 4; default: wait as long as it takes.
        #[arg(long, value_name = "DURATION", value_parser = input::duration)]
        timeout: Option<Duration>,
    },
}

#[derive(Args, Debug)]
pub struct TaskArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: TaskCmd,
}

/// `-o/--format table|json` where `--output` is the task's output.
#[derive(Args, Debug, Clone)]
struct TaskOut {
    /// Output format.
    #[arg(short = 'o', long = "format", value_enum, default_value_t)]
    format: Format,
}

#[derive(Subcommand, Debug)]
enum TaskCmd {
    /// Show a task with its latest attempt.
    Show {
        /// Task id (`<run id>.<n>`).
        id: String,
        #[command(flatten)]
        out: Out,
    },
    /// Run a failed or parked task again, with a fresh attempt budget.
    Retry {
        /// Task id (`<run id>.<n>`).
        id: String,
        #[command(flatten)]
        out: Out,
    },
    /// Treat an unfinished task as completed with the given output; the run goes on.
    Skip {
        /// Task id (`<run id>.<n>`).
        id: String,
        /// The task's output: JSON, `@file` or `@-` (stdin); default null.
        #[arg(long, value_name = "JSON|@FILE")]
        output: Option<String>,
        #[command(flatten)]
        out: TaskOut,
    },
}

#[derive(Args, Debug)]
pub struct DlqArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    out: Out,
    #[command(subcommand)]
    command: DlqCmd,
}

#[derive(Subcommand, Debug)]
enum DlqCmd {
    /// List the tasks parked in the dead-letter queue.
    List,
    /// Run a parked task again, with a fresh attempt budget (same as `task retry`).
    Redrive {
        /// Task id, as `dlq list` shows it.
        id: String,
    },
}

/// A client command, ready to run.
pub enum Request {
    Definition(DefinitionArgs),
    Workflow(WorkflowArgs),
    Task(TaskArgs),
    Dlq(DlqArgs),
}

/// Runs a client command and returns its exit code; errors go to stderr.
pub fn run(request: Request) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let code = match runtime {
        Ok(rt) => match rt.block_on(dispatch(request)) {
            Ok(code) => code,
            Err(failure) => {
                eprintln!("distorch: {failure}");
                failure.exit_code()
            }
        },
        Err(e) => {
            eprintln!("distorch: cannot start the async runtime: {e}");
            outcome::SERVER
        }
    };
    ExitCode::from(code)
}

/// Writes to stdout, ignoring a closed pipe (`distorch workflow list | head`).
fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// The API's JSON as it sent it, pretty-printed, or the table `human` renders.
fn show(format: Format, reply: &Reply, human: impl FnOnce(&Value) -> String) {
    match format {
        Format::Json => print(&format!("{}\n", render::pretty_json(&reply.text))),
        Format::Table => print(&human(&reply.body)),
    }
}

async fn dispatch(request: Request) -> Result<u8, Failure> {
    match request {
        Request::Definition(a) => {
            definition(&Api::new(&a.conn.url)?, a.out.output, a.command).await
        }
        Request::Workflow(a) => workflow(&Api::new(&a.conn.url)?, a.out.output, a.command).await,
        Request::Task(a) => task(&Api::new(&a.conn.url)?, a.command).await,
        Request::Dlq(a) => dlq(&Api::new(&a.conn.url)?, a.out.output, a.command).await,
    }
}

async fn definition(api: &Api, fmt: Format, cmd: DefinitionCmd) -> Result<u8, Failure> {
    match cmd {
        DefinitionCmd::Apply { file } => {
            let (text, media) = input::definition_file(&file)?;
            let reply = api.post(&["definitions"], Body::Text(media, text)).await?;
            show(fmt, &reply, render::registered);
        }
        DefinitionCmd::List => {
            let reply = api.get(&["definitions"], &[]).await?;
            show(fmt, &reply, render::definitions);
        }
        DefinitionCmd::Show { name, version } => {
            let reply = match version {
                None => api.get(&["definitions", &name], &[]).await?,
                Some(v) => {
                    let v = v.to_string();
                    api.get(&["definitions", &name, "versions", &v], &[])
                        .await?
                }
            };
            show(fmt, &reply, render::definition);
        }
    }
    Ok(outcome::OK)
}

async fn workflow(api: &Api, fmt: Format, cmd: WorkflowCmd) -> Result<u8, Failure> {
    match cmd {
        WorkflowCmd::Start {
            definition,
            version,
            input,
            workflow_id,
            idempotency_key,
            wait,
            timeout,
        } => {
            let mut body = json!({ "definition": definition });
            if let Some(v) = version {
                body["version"] = json!(v);
            }
            if let Some(raw) = input {
                body["input"] = input::json_arg("--input", &raw)?;
            }
            if let Some(id) = workflow_id {
                body["workflow_id"] = json!(id);
            }
            if let Some(key) = idempotency_key {
                body["idempotency_key"] = json!(key);
            }
            let reply = start(api, body).await?;
            let id = reply
                .body
                .get("workflow_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if !wait {
                show(fmt, &reply, |b| render::started(b, reply.status == 200));
                return Ok(outcome::OK);
            }
            if fmt == Format::Table {
                eprint!("{}", render::started(&reply.body, reply.status == 200));
            }
            wait_and_show(api, fmt, &id, timeout).await
        }
        WorkflowCmd::List {
            status,
            definition,
            limit,
            cursor,
        } => {
            let mut query = Vec::new();
            query.extend(status.map(|s| ("status", s)));
            query.extend(definition.map(|d| ("definition", d)));
            query.extend(limit.map(|l| ("limit", l.to_string())));
            query.extend(cursor.map(|c| ("cursor", c)));
            let reply = api.get(&["workflows"], &query).await?;
            show(fmt, &reply, render::workflows);
            if let (Format::Table, Some(next)) = (fmt, render::next_cursor(&reply.body)) {
                eprintln!("more runs: add --cursor {next}");
            }
            Ok(outcome::OK)
        }
        WorkflowCmd::Show { id } => {
            let reply = api.get(&["workflows", &id], &[]).await?;
            show(fmt, &reply, render::workflow);
            Ok(outcome::OK)
        }
        WorkflowCmd::History { id } => {
            let reply = api.get(&["workflows", &id, "history"], &[]).await?;
            show(fmt, &reply, render::history);
            Ok(outcome::OK)
        }
        WorkflowCmd::Cancel {
            id,
            compensate,
            reason,
        } => {
            let mut body = json!({ "compensate": compensate });
            if let Some(r) = reason {
                body["reason"] = json!(r);
            }
            let reply = api
                .post(&["workflows", &id, "cancel"], Body::Json(body))
                .await?;
            show(fmt, &reply, render::run_status);
            Ok(outcome::OK)
        }
        WorkflowCmd::Pause { id } => {
            let reply = api.post(&["workflows", &id, "pause"], Body::None).await?;
            show(fmt, &reply, render::run_status);
            Ok(outcome::OK)
        }
        WorkflowCmd::Resume { id } => {
            let reply = api.post(&["workflows", &id, "resume"], Body::None).await?;
            show(fmt, &reply, render::run_status);
            Ok(outcome::OK)
        }
        WorkflowCmd::Signal { id, name, payload } => {
            let payload = match payload {
                Some(raw) => input::json_arg("--payload", &raw)?,
                None => Value::Null,
            };
            let reply = api
                .post(&["workflows", &id, "signals", &name], Body::Json(payload))
                .await?;
            show(fmt, &reply, render::signal_sent);
            Ok(outcome::OK)
        }
        WorkflowCmd::Wait { id, timeout } => wait_and_show(api, fmt, &id, timeout).await,
    }
}

/// How often a start answered 503 "not confirmed" is repeated with the run id it names.
const START_RETRIES: u32 = 3;

/// `POST /workflows`. A 503 naming a `workflow_id` means the start is durable but the engine
/// did not answer in time: repeating it with that id (or the same idempotency key) is safe and
/// never starts a second run, so the CLI does so a few times before giving up.
async fn start(api: &Api, mut body: Value) -> Result<Reply, Failure> {
    let mut tries = 0;
    loop {
        match api.post(&["workflows"], Body::Json(body.clone())).await {
            Err(Failure::Api(e)) if e.status == 503 && tries < START_RETRIES => {
                let Some(id) = e.workflow_id.clone() else {
                    return Err(Failure::Api(e));
                };
                tries += 1;
                eprintln!("distorch: the start of run {id} is not confirmed yet; repeating it");
                if body.get("idempotency_key").is_none() {
                    body["workflow_id"] = json!(id);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

/// Longest `wait_ms` the API honours in one long-poll.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Long-polls the run until it ends (or `timeout`), prints it, and returns the exit code
/// for its final status.
async fn wait_and_show(
    api: &Api,
    fmt: Format,
    id: &str,
    timeout: Option<Duration>,
) -> Result<u8, Failure> {
    let started = Instant::now();
    loop {
        let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
        let wait = left.unwrap_or(MAX_WAIT).min(MAX_WAIT);
        let asked = Instant::now();
        let query = [("wait_ms", wait.as_millis().to_string())];
        let reply = api
            .get_within(&["workflows", id], &query, wait + Duration::from_secs(30))
            .await?;
        let status = reply
            .body
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if outcome::is_terminal(&status) {
            show(fmt, &reply, render::workflow);
            return Ok(outcome::exit_for_status(&status));
        }
        if let Some(limit) = timeout.filter(|t| started.elapsed() >= *t) {
            show(fmt, &reply, render::workflow);
            return Err(Failure::WaitTimedOut {
                workflow_id: id.to_owned(),
                status,
                after: humantime::format_duration(limit).to_string(),
            });
        }
        // A server that answered at once (no long-poll) is not asked again in a busy loop.
        if asked.elapsed() < Duration::from_millis(100) {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn task(api: &Api, cmd: TaskCmd) -> Result<u8, Failure> {
    match cmd {
        TaskCmd::Show { id, out } => {
            let reply = api.get(&["tasks", &id], &[]).await?;
            show(out.output, &reply, render::task);
        }
        TaskCmd::Retry { id, out } => {
            let reply = api.post(&["tasks", &id, "retry"], Body::None).await?;
            show(out.output, &reply, render::task_action);
        }
        TaskCmd::Skip { id, output, out } => {
            let output = match output {
                Some(raw) => input::json_arg("--output", &raw)?,
                None => Value::Null,
            };
            let body = Body::Json(json!({ "output": output }));
            let reply = api.post(&["tasks", &id, "skip"], body).await?;
            show(out.format, &reply, render::task_action);
        }
    }
    Ok(outcome::OK)
}

async fn dlq(api: &Api, fmt: Format, cmd: DlqCmd) -> Result<u8, Failure> {
    match cmd {
        DlqCmd::List => {
            let reply = api.get(&["dlq"], &[]).await?;
            show(fmt, &reply, render::dead_letters);
        }
        DlqCmd::Redrive { id } => {
            let reply = api.post(&["tasks", &id, "retry"], Body::None).await?;
            show(fmt, &reply, render::task_action);
        }
    }
    Ok(outcome::OK)
}
