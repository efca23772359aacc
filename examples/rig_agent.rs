//! A rig agent recorded by runtally with no runtally call in the agent's code: the `tracing`
//! layer turns rig's own spans into a run. The model is rig's scripted completion model
//! (`rig_agent::test_utils`, no network): it asks for a tool call, rig runs the tool, then the
//! model answers. The run is read back from the database and printed; the last line is JSON
//! with its `executionId`.
//!
//! ```text
//! eval "$(scripts/db start)"
//! cargo run -p runtally --example rig_agent --features tracing-layer
//! ```

use std::time::Duration;

use rig_agent::completion::Usage;
use rig_agent::test_utils::{MockCompletionModel, MockTurn};
use rig_agent::tool::{Tool, ToolContext};
use rig_agent::AgentBuilder;
use runtally::store::Neo4jStore;
use runtally::{Aggregator, AggregatorConfig, ExecutionId, Neo4jConfig};
use tracing_subscriber::layer::SubscriberExt;

/// The agent's one tool: today's forecast for a city (canned).
struct Forecast;

#[derive(serde::Deserialize)]
struct ForecastArgs {
    city: String,
}

impl Tool for Forecast {
    const NAME: &'static str = "forecast";
    type Args = ForecastArgs;
    type Output = String;
    type Error = std::convert::Infallible;

    fn description(&self) -> String {
        "Today's weather forecast for a city".into()
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"]
        })
    }

    async fn call(&self, _cx: &mut ToolContext, args: ForecastArgs) -> Result<String, Self::Error> {
        Ok(format!("{}: 14 °C, light rain", args.city))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let aggregator = Aggregator::start(AggregatorConfig::from_env()?.build()?).await?;
    // All the host adds: the layer, in its subscriber.
    let subscriber = tracing_subscriber::registry().with(runtally::layer(&aggregator));
    tracing::subscriber::set_global_default(subscriber)?;

    let model = MockCompletionModel::from_turns([
        MockTurn::tool_call("call_1", "forecast", serde_json::json!({"city": "Lyon"}))
            .with_usage(Usage::new().input_tokens(412).output_tokens(38)),
        MockTurn::text("Take an umbrella: 14 °C and light rain in Lyon.")
            .with_usage(Usage::new().input_tokens(467).output_tokens(21)),
    ]);
    let agent = AgentBuilder::new(model)
        .name("weather-assistant")
        .tool(Forecast)
        .build();
    let answer = agent
        .prompt("Do I need an umbrella in Lyon today?")
        .max_turns(3)
        .await?;
    println!("agent: {}", answer.output());

    // The run ended with rig's span; shutdown writes everything before it returns.
    let execution_id = ExecutionId::new(format!("{}-1", aggregator.instance_id()))?;
    let report = aggregator.shutdown(Duration::from_secs(10)).await;
    if !report.complete {
        return Err(format!("not everything was written: {report:?}").into());
    }

    let store = Neo4jStore::new(&Neo4jConfig::from_env()?.build()?)?;
    let run = store
        .execution(&execution_id)
        .await?
        .ok_or("the run is not in the database")?;
    println!(
        "run {} ({}): {} tokens in, {} out, {} tool calls",
        run.id, run.status, run.tokens_input, run.tokens_output, run.tool_calls
    );
    for task in store.task_executions(&execution_id).await? {
        println!(
            "  task {:<18} {:<8} {} ms, {} tokens",
            task.task_id, task.status, task.duration, task.tokens_total
        );
    }
    println!(
        "{}",
        serde_json::json!({"executionId": run.id, "status": run.status.as_str()})
    );
    Ok(())
}
