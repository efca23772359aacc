//! Serving runtally's metrics to Prometheus: install a recorder, and the aggregator publishes
//! its figures under `runtally_*` names every second (feature `metrics`).
//!
//! ```text
//! eval "$(scripts/db start)"
//! cargo run --example prometheus --features metrics
//! curl -s http://127.0.0.1:9464/metrics | grep runtally_
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use runtally::{
    Aggregator, AggregatorConfig, ExecutionId, PlanId, RunStart, TaskDefinition, TaskId, TaskResult,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::var("METRICS_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:9464".to_owned())
        .parse()?;
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()?;

    let aggregator = Aggregator::start(AggregatorConfig::from_env()?.build()?).await?;
    let run = aggregator.begin_run(RunStart::new(
        ExecutionId::new(format!("prometheus-example-{}", std::process::id()))?,
        PlanId::new("example-plan")?,
        10,
    ))?;
    for n in 0..10 {
        let id = TaskId::new(format!("task-{n}"))?;
        let result = TaskResult::success(id.clone()).with_tokens(100, 10);
        run.task_finished(TaskDefinition::new(id), result).await?;
    }
    run.finish(chrono::Utc::now()).await?;
    aggregator.flush().await?;
    // Give the once-a-second publisher a moment, then show what a scrape sees.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    println!("metrics at http://{addr}/metrics; e.g.:");
    let m = aggregator.metrics();
    println!(
        "  runtally_tasks_total{{status=\"success\"}} {}",
        m.tasks_succeeded
    );
    println!("  runtally_batches_written_total {}", m.batches_written);
    aggregator.shutdown(Duration::from_secs(10)).await;
    Ok(())
}
