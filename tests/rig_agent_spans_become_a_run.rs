//! rig's own spans, through the `tracing` layer, into the database: a real rig agent
//! (`rig-agent`) driven by rig's scripted completion model (no network) calls a tool and then
//! answers; the run, its task, its tokens and its tool calls in the graph equal what the model
//! reported to rig (`PromptResponse::usage`) and the turns it scripted.

#![cfg(feature = "tracing-layer")]

mod common;

use std::time::Duration;

use common::*;
use rig_agent::completion::Usage;
use rig_agent::test_utils::{MockCompletionModel, MockTurn};
use rig_agent::tool::{Tool, ToolContext};
use rig_agent::AgentBuilder;
use runtally::{RunStatus, TaskStatus};
use tracing_subscriber::layer::SubscriberExt;

/// A tool of the test's own: rig runs it when the model asks for it.
struct Add;

#[derive(serde::Deserialize)]
struct AddArgs {
    x: i64,
    y: i64,
}

impl Tool for Add {
    const NAME: &'static str = "add";
    type Args = AddArgs;
    type Output = i64;
    type Error = std::convert::Infallible;

    fn description(&self) -> String {
        "Adds x and y".into()
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
            "required": ["x", "y"]
        })
    }

    async fn call(&self, _cx: &mut ToolContext, args: AddArgs) -> Result<i64, Self::Error> {
        Ok(args.x + args.y)
    }
}

fn usage(input: u64, output: u64) -> Usage {
    Usage::new().input_tokens(input).output_tokens(output)
}

#[tokio::test]
async fn a_rig_agent_with_a_tool_call_is_a_run_with_its_tokens_and_calls() {
    let agg = aggregator(|b| b).await;
    let store = store().await;
    let subscriber = tracing_subscriber::registry().with(runtally::layer(&agg));
    let _guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();

    let model = MockCompletionModel::from_turns([
        MockTurn::tool_call("call_1", "add", serde_json::json!({"x": 2, "y": 3}))
            .with_usage(usage(7, 11)),
        MockTurn::tool_call("call_2", "add", serde_json::json!({"x": 5, "y": 4}))
            .with_usage(usage(19, 5)),
        MockTurn::text("the answer is 9").with_usage(usage(13, 17)),
    ]);
    let agent = AgentBuilder::new(model)
        .name("calculator")
        .tool(Add)
        .build();
    // Not inside any span of ours: rig opens its own `invoke_agent` span, the run.
    let response = agent
        .prompt("add 2 and 3, then add 4")
        .max_turns(4)
        .await
        .expect("the scripted run succeeds");
    assert_eq!(response.output(), "the answer is 9");
    let reported = (
        response.usage.input_tokens.expect("input reported"),
        response.usage.output_tokens.expect("output reported"),
    );
    assert_eq!(
        reported,
        (39, 33),
        "what rig summed from the scripted turns"
    );

    let exec = format!("{}-1", agg.instance_id());
    let id = exec_id(&exec);
    let ended = eventually(Duration::from_secs(10), || async {
        agg.run(&id).is_none_or(|run| run.is_ended())
    })
    .await;
    assert!(ended.is_some(), "the run ends when rig's span closes");
    agg.flush().await.expect("flush");

    let run = store.execution(&id).await.expect("read").expect("stored");
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.plan_id.as_deref(), Some("calculator"));
    assert_eq!(
        (run.tokens_input, run.tokens_output),
        (reported.0 as i64, reported.1 as i64)
    );
    assert_eq!(run.tool_calls, 2);
    let tasks = store.task_executions(&id).await.expect("tasks");
    assert_eq!(tasks.len(), 1, "the agent's own work is one task");
    assert_eq!(tasks[0].task_id, "calculator-0");
    assert_eq!(tasks[0].status, TaskStatus::Success);
    let m = agg.metrics().tracing;
    assert_eq!((m.runs, m.tasks, m.dropped), (1, 1, 0));
}
