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
    /// Post the events to a `runtally serve` at this URL (`http://host:port`) instead of an
    /// aggregator in this process; ends with `POST /v1/flush`, so the time includes the writes.
    #[arg(long)]
    http: Option<String>,
    /// Bearer token for --http.
    #[arg(long, env = "RUNTALLY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// With --http: events per request at most (0: no bound but --request-bytes).
    #[arg(long, default_value_t = 0)]
    events_per_request: usize,
    /// With --http: bytes per request at most (a larger event goes alone). Smaller requests
    /// let the service write a run's first results while its next ones are on their way.
    #[arg(long, default_value_t = 1 << 20)]
    request_bytes: usize,
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
    if let Some(url) = args.http.clone() {
        return over_http(&args, &url, &input).await;
    }
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

async fn over_http(args: &ReplayArgs, url: &str, input: &[u8]) -> anyhow::Result<ExitCode> {
    let client = runtally_cli::http::ServeClient::new(url, args.token.clone(), 20);
    let started = Instant::now();
    let summary = runtally_cli::replay::replay_over_http(
        &client,
        input,
        args.concurrency,
        args.events_per_request,
        args.request_bytes,
    )
    .await;
    let sent = started.elapsed().as_secs_f64();
    let flushed = client
        .post("/v1/flush", "application/json", "{}".into())
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    for error in &summary.replay.errors {
        eprintln!("runtally: {error}");
    }
    let mut latencies = summary.latencies_us.clone();
    latencies.sort_unstable();
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    let flush: serde_json::Value = serde_json::from_slice(&flushed.body).unwrap_or_default();
    let line = serde_json::json!({
        "impl": "runtally-http",
        "runs": summary.replay.runs,
        "tasks": summary.replay.tasks,
        "events": summary.replay.events,
        "line_errors": summary.replay.errors.len(),
        "concurrency": args.concurrency,
        "events_per_request": args.events_per_request,
        "request_bytes": args.request_bytes,
        "requests": summary.requests,
        "retried_requests": summary.retried,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "send_seconds": (sent * 1000.0).round() / 1000.0,
        "tasks_per_s": (summary.replay.tasks as f64 / seconds).round(),
        "events_per_s_sent": (summary.replay.events as f64 / sent).round(),
        "input_mb_per_s": ((input.len() as f64 / seconds / 1e6) * 1000.0).round() / 1000.0,
        "request_p50_ms": quantile(0.50) as f64 / 1000.0,
        "request_p99_ms": quantile(0.99) as f64 / 1000.0,
        "flush_status": flushed.status,
        "write_errors": flush["rejected_rows"],
    });
    println!("{line}");
    if flushed.status != 200 {
        anyhow::bail!("the service did not flush: {}", flushed.status);
    }
    Ok(if summary.replay.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
