//! The `distorch` binary: configuration, telemetry, and the subcommands that run the
//! services (backends are chosen here and only here), plus the client commands that drive a
//! running server over its REST API (`cli`).

// The services allocate many small, short-lived buffers (JSON, records) across threads;
// mimalloc's per-thread heaps avoid glibc malloc's lock contention measured under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod backends;
mod cli;
mod config;
mod process;
mod services;
mod standalone;
mod supervisor;

use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "distorch",
    version,
    about = "Durable workflow orchestration for microservices"
)]
struct Cli {
    /// TOML configuration file (default: ./distorch.toml when present).
    #[arg(long, global = true, env = "DISTORCH_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every service in one process on embedded, durable storage.
    Standalone {
        /// HTTP listen address, e.g. 127.0.0.1:8000 (port 0 picks a free one).
        #[arg(long)]
        listen: Option<String>,
        /// Directory of the embedded log and read models.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run the HTTP API (REST, GraphQL, streams) against `backends.log` and `backends.store`.
    Api(ServiceArgs),
    /// Run an engine; engines share the command partitions through their consumer group.
    Engine(ServiceArgs),
    /// Run the saga processor, the SLA alerter and the executor of `http` steps.
    Saga(ServiceArgs),
    /// Run the projector that fills `backends.store` (and `backends.analytics`).
    Projector(ProjectorArgs),
    /// Apply the ScyllaDB and ClickHouse schema migrations (idempotent; run on every deploy).
    Migrate,
    /// Client: register, list and show workflow definitions on a running server.
    Definition(cli::DefinitionArgs),
    /// Client: start, list, inspect, wait for and steer runs on a running server.
    Workflow(cli::WorkflowArgs),
    /// Client: show, retry or skip a task on a running server.
    Task(cli::TaskArgs),
    /// Client: list and redrive the tasks parked in the dead-letter queue.
    Dlq(cli::DlqArgs),
    /// Print a shell completion script, e.g. `distorch completion bash > /etc/bash_completion.d/distorch`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args)]
struct ServiceArgs {
    /// HTTP listen address (the API, or health and metrics), e.g. 0.0.0.0:8000.
    #[arg(long)]
    listen: Option<String>,
}

#[derive(clap::Args)]
struct ProjectorArgs {
    #[command(flatten)]
    service: ServiceArgs,
    /// Instead of serving: drop the read models (and analytics), replay the whole log into
    /// them, and exit. Run it while every projector (or `standalone`) is stopped; for a
    /// standalone data dir, `backends.log` may be `journal://<data dir>/log.journal`.
    #[arg(long, conflicts_with = "listen")]
    rebuild: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Definition(args) => return cli::run(cli::Request::Definition(args)),
        Cmd::Workflow(args) => return cli::run(cli::Request::Workflow(args)),
        Cmd::Task(args) => return cli::run(cli::Request::Task(args)),
        Cmd::Dlq(args) => return cli::run(cli::Request::Dlq(args)),
        Cmd::Completion { shell } => {
            let mut out = std::io::stdout().lock();
            clap_complete::generate(shell, &mut Cli::command(), "distorch", &mut out);
            return ExitCode::SUCCESS;
        }
        Cmd::Standalone { listen, data_dir } => config::load(
            cli.config.as_deref(),
            config::standalone_flags(listen, data_dir),
        )
        .and_then(|cfg| serve(&cfg, standalone::run(cfg.clone()))),
        Cmd::Api(args) => service(cli.config, process::Role::Api, args),
        Cmd::Engine(args) => service(cli.config, process::Role::Engine, args),
        Cmd::Saga(args) => service(cli.config, process::Role::Saga, args),
        Cmd::Projector(args) if args.rebuild => {
            config::load(cli.config.as_deref(), figment::Figment::new())
                .and_then(|cfg| serve(&cfg, process::rebuild(cfg.clone())))
        }
        Cmd::Projector(args) => service(cli.config, process::Role::Projector, args.service),
        Cmd::Migrate => config::load(cli.config.as_deref(), figment::Figment::new())
            .and_then(|cfg| serve(&cfg, async { backends::migrate(&cfg.backends).await })),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("distorch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn service(file: Option<PathBuf>, role: process::Role, args: ServiceArgs) -> anyhow::Result<()> {
    let cfg = config::load(file.as_deref(), config::service_flags(args.listen))?;
    serve(&cfg, process::run(role, cfg.clone()))
}

/// Threads for blocking work (SQLite queries, journal reads): tokio's default of 512 let a
/// burst of long-polls start a hundred threads, each with its own allocator pages and SQLite
/// reader connection (and page cache), which the process kept after the burst. Blocking
/// tasks only wait for locks held by running threads, so a bound queues them, and never
/// deadlocks.
const BLOCKING_THREADS: usize = 16;

/// Sets up logging and runs `main` on a multi-threaded runtime.
fn serve(
    cfg: &config::Config,
    main: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    init_tracing(&cfg.telemetry);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()?
        .block_on(main)
}

fn init_tracing(cfg: &config::TelemetryConfig) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
