//! `runtally replay EVENTS.jsonl`: an event stream through the public API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use runtally::{Aggregator, AggregatorConfig};

use crate::{BufferArgs, DbArgs};

#[derive(Args)]
pub(crate) struct ReplayArgs {
    /// The event file (JSON lines), or `-` for standard input.
    events: PathBuf,
    /// Runs replayed at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Task rows per write transaction.
    #[arg(long, default_value_t = runtally::config::DEFAULT_MAX_BATCH_ROWS)]
    max_batch_rows: usize,
    /// Bytes of rows per write transaction (a batch closes at this or at --max-batch-rows,
    /// whichever comes first; a larger row goes alone).
    #[arg(long, default_value_t = runtally::config::DEFAULT_MAX_BATCH_BYTES)]
    max_batch_bytes: usize,
    /// Bytes of task rows held in memory waiting for the database; at the bound the replay
    /// waits (backpressure).
    #[arg(long, default_value_t = runtally::config::DEFAULT_MAX_PENDING_BYTES)]
    max_pending_bytes: usize,
    /// Write lanes: at most this many write transactions in flight at once.
    #[arg(long, default_value_t = runtally::config::DEFAULT_WRITE_LANES)]
    write_lanes: usize,
    /// Lanes overlap only while every write in flight is a chunk of at least this many bytes
    /// (0: always).
    #[arg(long, default_value_t = runtally::config::DEFAULT_MIN_OVERLAP_BYTES)]
    min_overlap_bytes: usize,
    /// Longest wait before a flush, in milliseconds.
    #[arg(long, default_value_t = runtally::config::DEFAULT_FLUSH_INTERVAL.as_millis() as u64)]
    flush_interval_ms: u64,
    /// Seconds to wait for the last writes at the end.
    #[arg(long, default_value_t = 120)]
    shutdown_timeout_secs: u64,
    #[command(flatten)]
    buffer: BufferArgs,
    #[command(flatten)]
    db: DbArgs,
}

pub(crate) async fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let input = if args.events.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
        buf
    } else {
        std::fs::read(&args.events)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.events.display()))?
    };
    let config = args
        .buffer
        .apply(AggregatorConfig::builder())
        .with_neo4j(args.db.neo4j()?)
        .with_max_batch_rows(args.max_batch_rows)
        .with_write_lanes(args.write_lanes)
        .with_min_overlap_bytes(args.min_overlap_bytes)
        .with_max_pending_rows(runtally::config::DEFAULT_MAX_PENDING_ROWS.max(args.max_batch_rows))
        .with_max_batch_bytes(args.max_batch_bytes)
        .with_max_pending_bytes(args.max_pending_bytes)
        .with_flush_interval(Duration::from_millis(args.flush_interval_ms.max(1)))
        .build()?;
    let aggregator = Aggregator::start(config).await?;
    let started = Instant::now();
    let summary = runtally_cli::replay::replay(&aggregator, &input, args.concurrency).await;
    if args.buffer.has_buffer() {
        // Before waiting for the database: from this line on, a crash loses nothing.
        match aggregator.sync_buffer().await {
            Ok(()) => eprintln!(
                "runtally: {} task results of {} runs accepted, all on disk in the buffer",
                summary.tasks, summary.runs
            ),
            // A full disk: the rows are written from memory; the replay goes on.
            Err(e) => eprintln!(
                "runtally: {} task results of {} runs accepted, not all on disk: {e}",
                summary.tasks, summary.runs
            ),
        }
    }
    let flushed = aggregator.flush().await;
    let seconds = started.elapsed().as_secs_f64();
    let report = aggregator
        .shutdown(Duration::from_secs(args.shutdown_timeout_secs))
        .await;
    for error in &summary.errors {
        eprintln!("runtally: {error}");
    }
    let line = serde_json::json!({
        "impl": "runtally",
        "runs": summary.runs,
        "tasks": summary.tasks,
        "events": summary.events,
        "line_errors": summary.errors.len(),
        "concurrency": args.concurrency,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "tasks_per_s": (summary.tasks as f64 / seconds).round(),
        "input_mb_per_s": ((input.len() as f64 / seconds / 1e6) * 1000.0).round() / 1000.0,
        "peak_rss_mib": super::loadgen::peak_rss_mib(),
        "write_errors": report.metrics.rows_rejected + report.metrics.rows_dropped,
        "metrics": report.metrics,
    });
    println!("{line}");
    flushed?;
    if !report.complete {
        anyhow::bail!("{} rows were not written", report.unwritten_rows());
    }
    Ok(if summary.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
