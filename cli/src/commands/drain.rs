//! `runtally drain --buffer-dir DIR`: writes what a disk buffer holds, then exits.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use runtally::{Aggregator, AggregatorConfig};

use crate::DbArgs;

#[derive(Args)]
pub(crate) struct DrainArgs {
    /// The disk buffer directory (a `--buffer-dir` of replay or loadgen, or a library's
    /// `with_buffer_dir`). Refused while another process has it open.
    #[arg(long)]
    buffer_dir: PathBuf,
    /// Stop waiting for the database after this many seconds; what is not written stays in
    /// the directory (exit code 1).
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    #[command(flatten)]
    db: DbArgs,
}

pub(crate) async fn run(args: DrainArgs) -> anyhow::Result<ExitCode> {
    let config = AggregatorConfig::builder()
        .with_neo4j(args.db.neo4j()?)
        .with_buffer_dir(args.buffer_dir.clone())
        .build()?;
    let started = Instant::now();
    let aggregator = Aggregator::start(config).await?;
    let recovery = aggregator.buffer_recovery().cloned().unwrap_or_default();
    for skipped in &recovery.skipped {
        eprintln!(
            "runtally: skipped a {:?} record: {} bytes at offset {} of {}",
            skipped.reason,
            skipped.bytes,
            skipped.offset,
            skipped.segment.display()
        );
    }
    let timeout = Duration::from_secs(args.timeout_secs);
    let flushed = tokio::time::timeout(timeout, aggregator.flush()).await;
    let seconds = started.elapsed().as_secs_f64();
    let report = aggregator.shutdown(Duration::from_secs(10)).await;
    let metrics = &report.metrics;
    let rows = metrics.task_rows_written + metrics.execution_rows_written;
    let skipped: Vec<_> = recovery
        .skipped
        .iter()
        .map(|s| {
            serde_json::json!({
                "segment": s.segment.display().to_string(),
                "offset": s.offset,
                "bytes": s.bytes,
                "reason": format!("{:?}", s.reason),
            })
        })
        .collect();
    let left = report.buffered_rows + report.unwritten_rows() as u64;
    println!(
        "{}",
        serde_json::json!({
            "buffer_dir": args.buffer_dir.display().to_string(),
            "records": recovery.records,
            "rows": recovery.rows,
            "bytes": recovery.bytes,
            "skipped": skipped,
            "rows_written": rows,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "rows_per_s": (rows as f64 / seconds).round(),
            "mb_per_s": ((recovery.bytes as f64 / seconds / 1e6) * 1000.0).round() / 1000.0,
            "rows_left": left,
            "metrics": metrics,
        })
    );
    match flushed {
        Ok(Ok(())) if report.complete => Ok(ExitCode::SUCCESS),
        Ok(Err(e)) => Err(e.into()),
        _ => {
            eprintln!(
                "runtally: {left} rows are still in {} (the database did not take them within \
                 {} s)",
                args.buffer_dir.display(),
                args.timeout_secs
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
