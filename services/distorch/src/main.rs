//! The `distorch` binary: configuration, telemetry, and the subcommands that run the
//! services. Backends are chosen here and only here.

// The services allocate many small, short-lived buffers (JSON, records) across threads;
// mimalloc's per-thread heaps avoid glibc malloc's lock contention measured under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod config;
mod standalone;

use clap::{Parser, Subcommand};
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Standalone { listen, data_dir } => config::load(
            cli.config.as_deref(),
            config::standalone_flags(listen, data_dir),
        )
        .and_then(|cfg| {
            init_tracing(&cfg.telemetry);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(standalone::run(cfg))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("distorch: {e:#}");
            ExitCode::FAILURE
        }
    }
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
