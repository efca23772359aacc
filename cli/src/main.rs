//! `runtally`: the demo orchestrator, event-stream replay, load generator and readers.
//!
//! Every command reads `NEO4J_URI`, `NEO4J_USER`, `NEO4J_PASSWORD` and `NEO4J_DATABASE` (flags
//! override them) and exits non-zero with a one-line reason on failure.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

// The CLI is allocation-heavy (every task result is a handful of strings) and runs on few
// cores; mimalloc keeps allocation cheap and returns memory to the OS. The library itself
// leaves the allocator to its host.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod commands;

use commands::{demo, drain, loadgen, read, replay, serve};

/// Execution telemetry for AI-agent and workflow orchestrators, in Neo4j.
#[derive(Parser)]
#[command(name = "runtally", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log line format on stderr (filter with RUST_LOG, default `warn`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Threads for the command's own work (the simulated orchestrator, readers); runtally's
    /// actors have their own. Default: the number of CPUs.
    #[arg(long, global = true)]
    client_threads: Option<usize>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Simulates an orchestrator: a few dozen workflows with parallel task groups, QC retries,
    /// failures and cancellations, written through runtally; then prints each run as read back
    /// from the database, and runtally's metrics.
    Demo(demo::DemoArgs),
    /// Feeds an event stream (JSON lines: run_started / task_finished / run_finished, as
    /// gen_events.py writes) through runtally, flushes, and prints one JSON summary line. Bad
    /// lines are reported by number on stderr (exit code 2); every valid line is applied.
    Replay(replay::ReplayArgs),
    /// Generates the gen_events.py workload in process and drives it through runtally (or,
    /// with --raw, straight into the database) and prints one JSON line of figures.
    Loadgen(loadgen::LoadgenArgs),
    /// Writes what a disk buffer directory holds (left by a process that died, or that ran out
    /// of time at shutdown) to the database, prints one JSON line, and exits 0 once the
    /// directory is empty (1 if rows are left: the database stayed down past --timeout-secs).
    Drain(drain::DrainArgs),
    /// Serves the aggregator over HTTP: POST /v1/events (the event stream's objects), POST
    /// /v1/traces (OTLP/HTTP GenAI spans), GET /v1/runs/{id}, /healthz, /readyz, /metrics.
    /// Stops on SIGTERM or SIGINT: stops accepting, answers what is in flight, flushes.
    Serve(serve::ServeArgs),
    /// Shows one run as the seed's status and task queries read it.
    Status(read::StatusArgs),
    /// Lists runs, newest first, as the seed's list query reads them.
    List(read::ListArgs),
    /// Marks runs left `running` by a dead process as `failed` (error `interrupted`).
    Reconcile(read::ReconcileArgs),
}

/// Database connection settings, shared by every command.
#[derive(Args, Clone, Debug)]
pub(crate) struct DbArgs {
    /// Bolt URI: bolt:// (one server) or neo4j:// (routed to a cluster's writer); +s for TLS.
    #[arg(long, env = "NEO4J_URI")]
    uri: Option<String>,
    /// Database user.
    #[arg(long, env = "NEO4J_USER", default_value = runtally::config::DEFAULT_USER)]
    user: String,
    /// Database password.
    #[arg(long, env = "NEO4J_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Database name (default: the server's default database).
    #[arg(long, env = "NEO4J_DATABASE")]
    database: Option<String>,
}

impl DbArgs {
    pub(crate) fn neo4j(&self) -> anyhow::Result<runtally::Neo4jConfigBuilder> {
        let uri = self
            .uri
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no database: set NEO4J_URI or pass --uri"))?;
        let password = self
            .password
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no password: set NEO4J_PASSWORD or pass --password"))?;
        let mut builder = runtally::Neo4jConfig::builder(uri, self.user.clone(), password);
        if let Some(db) = &self.database {
            builder = builder.with_database(db.clone());
        }
        Ok(builder)
    }

    pub(crate) fn store(&self) -> anyhow::Result<runtally::store::Neo4jStore> {
        let config = self.neo4j()?.build()?;
        Ok(runtally::store::Neo4jStore::new(&config)?)
    }
}

/// The disk buffer and what happens when memory is full, shared by replay and loadgen.
#[derive(Args, Clone, Debug)]
pub(crate) struct BufferArgs {
    /// A directory for the disk buffer: every accepted result is appended there (checksummed
    /// records) before it goes to the database, so a killed process loses at most what its
    /// last few milliseconds accepted and nothing once it was idle that long; the next command
    /// with the same directory (or `runtally drain --buffer-dir DIR`) writes what it holds
    /// first. One process at a time.
    #[arg(long)]
    buffer_dir: Option<std::path::PathBuf>,
    /// What happens when results waiting for the database reach --max-pending-bytes (or the
    /// row bound): `block` waits, `reject` refuses the result (a replay reports its line),
    /// `overflow` puts new results in the disk buffer only and reads them back as the database
    /// catches up (needs --buffer-dir).
    #[arg(long, value_enum, default_value_t = WhenFullArg::Block)]
    when_full: WhenFullArg,
    /// How often the disk buffer forces its appends to the disk, in milliseconds: what a power
    /// cut can take (0: after every append, before the rows go to the database).
    #[arg(long, default_value_t = runtally::config::DEFAULT_BUFFER_SYNC_INTERVAL.as_millis() as u64)]
    buffer_sync_ms: u64,
    /// Write the disk buffer through the page cache rather than past it (by default it is
    /// written with O_DIRECT where the filesystem allows it).
    #[arg(long)]
    buffer_page_cache: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum WhenFullArg {
    Block,
    Reject,
    Overflow,
}

impl BufferArgs {
    /// Adds these settings to a configuration.
    pub(crate) fn apply(
        &self,
        mut builder: runtally::AggregatorConfigBuilder,
    ) -> runtally::AggregatorConfigBuilder {
        if let Some(dir) = &self.buffer_dir {
            builder = builder.with_buffer_dir(dir.clone());
        }
        let sync = match self.buffer_sync_ms {
            0 => runtally::SyncPolicy::EveryWrite,
            ms => runtally::SyncPolicy::Interval(std::time::Duration::from_millis(ms)),
        };
        builder
            .with_buffer_sync(sync)
            .with_buffer_direct_writes(!self.buffer_page_cache)
            .with_when_full(match self.when_full {
                WhenFullArg::Block => runtally::WhenFull::Block,
                WhenFullArg::Reject => runtally::WhenFull::Reject,
                WhenFullArg::Overflow => runtally::WhenFull::Overflow,
            })
    }

    /// Whether a buffer directory is set.
    pub(crate) fn has_buffer(&self) -> bool {
        self.buffer_dir.is_some()
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colours only on a terminal: a log file or a collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// One line: the error and its causes.
fn reason(e: &anyhow::Error) -> String {
    e.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.client_threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtally: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Replay(args) => replay::run(args).await,
            Command::Loadgen(args) => loadgen::run(args).await,
            Command::Drain(args) => drain::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Status(args) => read::status(args).await,
            Command::List(args) => read::list(args).await,
            Command::Reconcile(args) => read::reconcile(args).await,
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("runtally: {}", reason(&e));
            ExitCode::FAILURE
        }
    }
}
