//! A hand-instrumented orchestrator: `#[tracing::instrument]` on its own functions, with the
//! `runtally.*` and `gen_ai.*` fields of the layer's mapping, and no runtally call in its code.
//! A workflow of three agent steps runs on tokio; one step fails, so the run ends `failed`.
//! The last line is JSON with the run's `executionId` and what the database holds.
//!
//! ```text
//! eval "$(scripts/db start)"
//! cargo run -p runtally --example instrumented_orchestrator --features tracing-layer
//! ```

use std::time::Duration;

use runtally::store::Neo4jStore;
use runtally::{Aggregator, AggregatorConfig, ExecutionId, Neo4jConfig};
use tracing::field::Empty;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// One model call; the usage is known only once the (simulated) model answers.
async fn call_model(prompt_tokens: u64) -> u64 {
    let span = tracing::info_span!(
        "chat",
        gen_ai.operation.name = "chat",
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
    );
    async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let answer = prompt_tokens / 4;
        let span = tracing::Span::current();
        span.record("gen_ai.usage.input_tokens", prompt_tokens);
        span.record("gen_ai.usage.output_tokens", answer);
        answer
    }
    .instrument(span)
    .await
}

#[tracing::instrument(fields(gen_ai.operation.name = "execute_tool", gen_ai.tool.name = tool))]
async fn run_tool(tool: &str) {
    tokio::time::sleep(Duration::from_millis(2)).await;
}

#[tracing::instrument(fields(
    gen_ai.operation.name = "invoke_agent",
    gen_ai.agent.name = name,
    error.type = Empty,
))]
async fn agent_step(name: &str, tools: usize, fail: bool) {
    call_model(1_000).await;
    for _ in 0..tools {
        run_tool("search").await;
    }
    call_model(1_500).await;
    if fail {
        tracing::Span::current().record("error.type", "validation_failed");
    }
}

#[tracing::instrument(fields(
    gen_ai.operation.name = "invoke_workflow",
    gen_ai.workflow.name = "due-diligence",
    runtally.execution_id = execution_id,
    runtally.total_tasks = 3u64,
))]
async fn workflow(execution_id: &str) {
    agent_step("collector", 2, false).await;
    agent_step("analyst", 1, false).await;
    agent_step("reviewer", 0, true).await;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let aggregator = Aggregator::start(AggregatorConfig::from_env()?.build()?).await?;
    let subscriber = tracing_subscriber::registry().with(runtally::layer(&aggregator));
    tracing::subscriber::set_global_default(subscriber)?;

    let execution_id = format!("instrumented-{}", std::process::id());
    workflow(&execution_id).await;

    let report = aggregator.shutdown(Duration::from_secs(10)).await;
    if !report.complete {
        return Err(format!("not everything was written: {report:?}").into());
    }
    let store = Neo4jStore::new(&Neo4jConfig::from_env()?.build()?)?;
    let id = ExecutionId::new(execution_id)?;
    let run = store.execution(&id).await?.ok_or("the run is not stored")?;
    for task in store.task_executions(&id).await? {
        println!(
            "  {:<12} {:<8} {:>5} tokens {} tool calls",
            task.task_id, task.status, task.tokens_total, task.tool_calls
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "executionId": run.id,
            "status": run.status.as_str(),
            "tasksSuccessful": run.tasks_successful,
            "tasksFailed": run.tasks_failed,
            "tokensTotal": run.tokens_total,
            "toolCalls": run.tool_calls,
        })
    );
    Ok(())
}
