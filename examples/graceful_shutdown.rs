//! Graceful shutdown with a spill file: on SIGINT/SIGTERM (or at the end), stop accepting,
//! write what can be written within a deadline, and append the rest to a JSON-lines file that
//! `runtally replay FILE` restores later.
//!
//! ```text
//! eval "$(scripts/db start)"
//! cargo run --example graceful_shutdown
//! ```

use std::time::Duration;

use runtally::{
    Aggregator, AggregatorConfig, ExecutionId, PlanId, RunStart, TaskDefinition, TaskId, TaskResult,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spill = std::env::temp_dir().join("runtally-spill.jsonl");
    let config = AggregatorConfig::from_env()?
        .with_spill_path(&spill)
        .build()?;
    let aggregator = Aggregator::start(config).await?;

    let work = {
        let aggregator = aggregator.clone();
        async move {
            let run = aggregator.begin_run(RunStart::new(
                ExecutionId::new(format!("shutdown-example-{}", std::process::id()))?,
                PlanId::new("example-plan")?,
                100,
            ))?;
            for n in 0..100 {
                let id = TaskId::new(format!("task-{n}"))?;
                run.task_finished(TaskDefinition::new(id.clone()), TaskResult::success(id))
                    .await?;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            run.finish(chrono::Utc::now()).await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        }
    };
    // Whichever comes first: the work ends, or the process is asked to stop.
    tokio::select! {
        outcome = work => outcome?,
        _ = tokio::signal::ctrl_c() => eprintln!("interrupted; shutting down"),
    }

    let report = aggregator.shutdown(Duration::from_secs(5)).await;
    if report.complete {
        println!(
            "all written: {} task rows in {} batches",
            report.metrics.task_rows_written, report.metrics.batches_written
        );
    } else {
        println!(
            "{} rows not written; {} appended to {} (restore with `runtally replay`)",
            report.unwritten_rows(),
            report.spilled_rows,
            spill.display()
        );
    }
    Ok(())
}
