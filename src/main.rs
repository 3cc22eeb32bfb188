//! The `flowdaq` command: serve, demo, sql, plot, replay and bench.
//!
//! This is the edge of the system, so errors are `anyhow` with context and every subcommand
//! is a thin layer over the library crates. mimalloc is the global allocator: the ingest path
//! allocates many short-lived buffers per message, which glibc's allocator handles poorly
//! across threads.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod cli;
mod plot;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// flowdaq: real-time data acquisition and analytics for self-driving flow-chemistry labs.
#[derive(Debug, Parser)]
#[command(name = "flowdaq", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (embedded defaults if no config file).
    Serve {
        /// Configuration file (TOML); see docs/configuration.md.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides `data_dir` of the configuration.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Simulated instruments stream into a server over ZeroMQ; then SQL answers questions.
    Demo(cli::demo::DemoArgs),
    /// Run one read-only SQL query against a data directory or a running server.
    Sql(cli::sql::SqlArgs),
    /// Draw a spectrum, a decay with its fit, the phasor plot or a trend, as SVG.
    Plot(cli::plot::PlotArgs),
    /// Replay an instrument file through the wire protocol.
    Replay(cli::replay::ReplayArgs),
    /// Check an instrument's sender against the wire protocol (see docs/connectors.md).
    CheckSender(cli::check_sender::CheckSenderArgs),
    /// Load generators that measure the server (see docs/performance.md).
    Bench {
        #[command(subcommand)]
        bench: cli::bench::BenchCommand,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Sql(_) | Command::Plot(_)) {
        without_huge_pages();
    }
    let quiet_default = matches!(
        cli.command,
        Command::Sql(_)
            | Command::Plot(_)
            | Command::Demo(_)
            | Command::Bench { .. }
            | Command::CheckSender(_)
    );
    init_tracing(quiet_default);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { config, data_dir } => cli::serve::run(config, data_dir).await,
            Command::Demo(args) => cli::demo::run(args).await,
            Command::Sql(args) => cli::sql::run(args).await,
            Command::Plot(args) => cli::plot::run(args).await,
            Command::Replay(args) => cli::replay::run(args).await,
            Command::Bench { bench } => cli::bench::run(bench).await,
            Command::CheckSender(args) => cli::check_sender::run(args).await,
        }
    })
}

/// A one-shot query process gains nothing from transparent huge pages, and zeroing the 2 MiB
/// pages mimalloc asks for took a third of `flowdaq sql`'s start-up; the server keeps them.
fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours; a failure
    // (an old kernel) only leaves huge pages on.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn init_tracing(quiet: bool) {
    // The Delta kernel reports every log read at info: flowdaq's own lines stay at info.
    let default = if quiet {
        "warn"
    } else {
        "info,buoyant_kernel=warn,buoyant_kernel_engine=warn,deltalake_core=warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
