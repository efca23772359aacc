//! Embedding runtally in a `#[tokio::main]` orchestrator: begin a run, report its parallel tasks
//! as they finish, finish the run, shut down cleanly.
//!
//! ```text
//! eval "$(scripts/db start)"
//! cargo run --example tokio_orchestrator
//! ```

use std::time::Duration;

use runtally::{
    Aggregator, AggregatorConfig, ExecutionId, PlanId, RunStart, TaskDefinition, TaskId, TaskResult,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // NEO4J_URI, NEO4J_USER, NEO4J_PASSWORD and NEO4J_DATABASE; other settings at defaults.
    let aggregator = Aggregator::start(AggregatorConfig::from_env()?.build()?).await?;

    let execution_id = ExecutionId::new(format!("example-exec-{}", std::process::id()))?;
    let run = aggregator.begin_run(RunStart::new(
        execution_id.clone(),
        PlanId::new("example-plan")?,
        3,
    ))?;

    // Three tasks of one parallel group, reported concurrently as each finishes.
    let tasks = (1..=3).map(|n| {
        let run = run.clone();
        async move {
            let id = TaskId::new(format!("task-1.{n}"))?;
            tokio::time::sleep(Duration::from_millis(20 * n)).await; // the agent's work
            let result = TaskResult::success(id.clone())
                .with_output(format!("step {n} done"))
                .with_tokens(1000 * n, 200 * n)
                .with_tool_calls(n);
            let task = TaskDefinition::new(id).with_title(format!("Step {n}"));
            run.task_finished(task, result).await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        }
    });
    for outcome in futures_util::future::join_all(tasks).await {
        outcome?;
    }
    let summary = run.finish(chrono::Utc::now()).await?;
    println!(
        "{execution_id}: {} ({} tasks ok, {} tokens)",
        summary.status,
        summary.totals.tasks_successful,
        summary.totals.tokens_total()
    );

    let report = aggregator.shutdown(Duration::from_secs(10)).await;
    assert!(report.complete, "every row written");
    Ok(())
}
