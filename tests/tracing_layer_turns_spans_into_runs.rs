//! The `tracing` layer on hand-built span trees, per the mapping table in `runtally::layer`:
//! a workflow span becomes a run, its agent spans tasks, model calls below them tokens, tool
//! calls counts; values recorded late count; errors and evaluations reach their task; runs on
//! many threads at once are exact; a span left open is reported at shutdown; malformed values
//! are counted and never panic. Everything is read back from the database.

#![cfg(feature = "tracing-layer")]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use runtally::{Aggregator, RunStatus, TaskStatus};
use tracing::field::Empty;
use tracing_subscriber::layer::SubscriberExt;

/// Runs `spans` on a thread of its own with the layer as that thread's subscriber.
fn with_layer(agg: &Aggregator, spans: impl FnOnce() + Send + 'static) {
    let subscriber = tracing_subscriber::registry().with(runtally::layer(agg));
    std::thread::spawn(move || tracing::subscriber::with_default(subscriber, spans))
        .join()
        .expect("the spans' thread does not panic");
}

/// Waits until the run the layer began for `exec` has ended, then writes everything.
async fn ended(agg: &Aggregator, exec: &str) {
    let id = exec_id(exec);
    let done = eventually(Duration::from_secs(10), || async {
        agg.run(&id).is_none_or(|run| run.is_ended())
    })
    .await;
    assert!(done.is_some(), "{exec}: the run ends when its span closes");
    agg.flush().await.expect("flush");
}

/// One model call with its usage recorded after the span opened, as rig does.
fn chat(input: u64, output: u64) {
    let span = tracing::info_span!(
        "chat",
        gen_ai.operation.name = "chat",
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
    );
    let _entered = span.enter();
    span.record("gen_ai.usage.input_tokens", input);
    span.record("gen_ai.usage.output_tokens", output);
}

/// A workflow span with the run's id: a run.
fn workflow(id: &str) -> tracing::Span {
    tracing::info_span!(
        "invoke_workflow",
        gen_ai.operation.name = "invoke_workflow",
        runtally.execution_id = id,
    )
}

/// An agent span: a task right below a run.
fn agent(name: &'static str) -> tracing::Span {
    tracing::info_span!(
        "invoke_agent",
        gen_ai.operation.name = "invoke_agent",
        gen_ai.agent.name = name,
    )
}

fn tool(name: &'static str) {
    let _span = tracing::info_span!(
        "execute_tool",
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = name
    )
    .entered();
}

#[tokio::test]
async fn a_workflow_span_tree_becomes_a_run_with_exact_task_totals() {
    let agg = aggregator(|b| b).await;
    let store = store().await;
    let exec = unique("spans");
    let id = exec.clone();
    with_layer(&agg, move || {
        let workflow = tracing::info_span!(
            "invoke_workflow",
            gen_ai.operation.name = "invoke_workflow",
            gen_ai.workflow.name = "report",
            runtally.execution_id = id.as_str(),
            runtally.total_tasks = 2u64,
            // A total over every model call, as rig records on `invoke_agent`: not counted again.
            gen_ai.usage.input_tokens = Empty,
        );
        let _w = workflow.enter();
        // Another library's spans in between are passed over.
        let _noise = tracing::info_span!("http.request", method = "GET").entered();
        {
            let agent = tracing::info_span!(
                "invoke_agent",
                gen_ai.operation.name = "invoke_agent",
                gen_ai.agent.name = "researcher",
                gen_ai.agent.description = "finds sources",
                // rig records the run's total here as well: it must not be counted twice.
                gen_ai.usage.input_tokens = Empty,
            );
            let _a = agent.enter();
            chat(100, 20);
            tool("search");
            tool("search");
            {
                // A plain span between the agent and its model call.
                let _step = tracing::info_span!("retry loop").entered();
                chat(50, 5);
            }
            agent.record("gen_ai.usage.input_tokens", 150u64);
        }
        {
            let agent = tracing::info_span!(
                "invoke_agent",
                gen_ai.operation.name = "invoke_agent",
                gen_ai.agent.name = "writer",
                error.type = Empty,
            );
            let _a = agent.enter();
            chat(7, 3);
            tool("render");
            agent.record("error.type", "timeout");
        }
        workflow.record("gen_ai.usage.input_tokens", 157u64);
    });
    ended(&agg, &exec).await;

    let run = store
        .execution(&exec_id(&exec))
        .await
        .expect("read")
        .expect("the run is stored");
    assert_eq!(
        run.status,
        RunStatus::Failed,
        "the writer's failure fails the run"
    );
    assert_eq!(run.plan_id.as_deref(), Some("report"));
    assert_eq!(run.tasks_total, 2);
    assert_eq!((run.tasks_successful, run.tasks_failed), (1, 1));
    assert_eq!((run.tokens_input, run.tokens_output), (157, 28));
    assert_eq!(run.tool_calls, 3);
    assert!(run.end_time.is_some());

    let tasks: HashMap<String, _> = store
        .task_executions(&exec_id(&exec))
        .await
        .expect("tasks")
        .into_iter()
        .map(|t| (t.task_id.clone(), t))
        .collect();
    let researcher = &tasks["researcher-1"];
    assert_eq!(researcher.status, TaskStatus::Success);
    assert_eq!(researcher.task_title, "researcher");
    assert_eq!(researcher.agent_role_description, "finds sources");
    assert_eq!(
        (
            researcher.tokens_input,
            researcher.tokens_output,
            researcher.tool_calls
        ),
        (150, 25, 2)
    );
    let writer = &tasks["writer-2"];
    assert_eq!(writer.status, TaskStatus::Failure);
    assert_eq!(writer.error.as_deref(), Some("timeout"));
    assert_eq!((writer.tokens_input, writer.tool_calls), (7, 1));
    assert_eq!(
        tasks.len(),
        2,
        "no task for the workflow's own (empty) work"
    );
    let m = agg.metrics().tracing;
    assert_eq!(
        (m.runs, m.tasks, m.dropped, m.malformed_fields),
        (1, 2, 0, 0)
    );
    assert_eq!((m.open_runs, m.open_tasks), (0, 0));
}

#[tokio::test]
async fn an_agent_alone_is_a_run_with_one_task_for_its_own_calls() {
    let agg = aggregator(|b| b).await;
    let store = store().await;
    with_layer(&agg, || {
        // rig's shape: invoke_agent at the root, chat and execute_tool right below it.
        let agent = tracing::info_span!(
            "invoke_agent",
            gen_ai.operation.name = "invoke_agent",
            gen_ai.agent.name = "calc",
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
        );
        let _a = agent.enter();
        chat(7, 11);
        tool("add");
        chat(13, 17);
        agent.record("gen_ai.usage.input_tokens", 20u64);
        agent.record("gen_ai.usage.output_tokens", 28u64);
    });
    // The id is derived from the aggregator's instance id and a count.
    let exec = format!("{}-1", agg.instance_id());
    ended(&agg, &exec).await;
    let run = store
        .execution(&exec_id(&exec))
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.plan_id.as_deref(), Some("calc"));
    assert_eq!(
        (run.tokens_input, run.tokens_output, run.tool_calls),
        (20, 28, 1)
    );
    let tasks = store.task_executions(&exec_id(&exec)).await.expect("tasks");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].task_id, "calc-0", "the run's own work: task 0");
}

#[tokio::test]
async fn error_events_and_evaluations_reach_their_task_but_not_runtallys_own() {
    let agg = aggregator(|b| b).await;
    let store = store().await;
    let exec = unique("events");
    let id = exec.clone();
    with_layer(&agg, move || {
        let run = tracing::info_span!("orchestrate", runtally.execution_id = id.as_str());
        let _r = run.enter();
        {
            let _t = tracing::info_span!("step", runtally.task_id = "judged").entered();
            tracing::info!(
                gen_ai.evaluation.name = "relevance",
                gen_ai.evaluation.score.value = 0.87,
                gen_ai.evaluation.score.label = "pass",
                gen_ai.evaluation.explanation = "on topic",
                "gen_ai.evaluation.result"
            );
            // Looks like runtally's own error: not the task's.
            tracing::error!(target: "runtally::writer", "database unreachable");
        }
        {
            let _t = tracing::info_span!("step", runtally.task_id = "broken").entered();
            let _inner = tracing::info_span!("parse").entered();
            tracing::error!("could not parse the plan");
        }
        {
            let _t = tracing::info_span!("step", runtally.task_id = "model retried").entered();
            let _chat = tracing::info_span!("chat", gen_ai.operation.name = "chat").entered();
            // A failed model call, inside it: the task may retry; not a failed task.
            tracing::error!("rate limited");
        }
        {
            let _t = tracing::info_span!("step", runtally.task_id = "tool fails").entered();
            let tool = tracing::info_span!(
                "execute_tool",
                gen_ai.operation.name = "execute_tool",
                error.type = "not_found"
            );
            // A failed tool call is an answer for the model, not a failed task.
            let _tool = tool.entered();
        }
    });
    ended(&agg, &exec).await;
    let tasks: HashMap<String, _> = store
        .task_executions(&exec_id(&exec))
        .await
        .expect("tasks")
        .into_iter()
        .map(|t| (t.task_id.clone(), t))
        .collect();
    assert_eq!(tasks.len(), 4, "{:?}", tasks.keys());
    assert_eq!(tasks["model retried"].status, TaskStatus::Success);
    let judged = &tasks["judged"];
    assert_eq!(judged.status, TaskStatus::Success);
    assert!(judged.qc_passed);
    assert_eq!(judged.qc_score, 87);
    assert_eq!(judged.qc_feedback.as_deref(), Some("on topic"));
    let broken = &tasks["broken"];
    assert_eq!(broken.status, TaskStatus::Failure);
    assert_eq!(broken.error.as_deref(), Some("could not parse the plan"));
    let tool = &tasks["tool fails"];
    assert_eq!((tool.status, tool.tool_calls), (TaskStatus::Success, 1));
    let run = store
        .execution(&exec_id(&exec))
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(run.status, RunStatus::Failed);
}

#[tokio::test]
async fn runs_on_many_threads_at_once_are_exact() {
    const THREADS: usize = 8;
    const RUNS: usize = 25;
    let agg = aggregator(|b| b).await;
    let store = store().await;
    let prefix = unique("threads");
    let mut threads = Vec::new();
    for t in 0..THREADS {
        let subscriber = tracing_subscriber::registry().with(runtally::layer(&agg));
        let prefix = prefix.clone();
        threads.push(std::thread::spawn(move || {
            tracing::subscriber::with_default(subscriber, || {
                for r in 0..RUNS {
                    let id = format!("{prefix}-{t}-{r}");
                    let _run = workflow(&id).entered();
                    for a in 0..4u64 {
                        let _agent = agent("worker").entered();
                        chat(10 + a, r as u64);
                        tool("t");
                        if a == 3 && r % 5 == 0 {
                            tracing::error!("gave up");
                        }
                    }
                }
            })
        }));
    }
    for t in threads {
        t.join().expect("thread");
    }
    let mut want = HashMap::new();
    for t in 0..THREADS {
        for r in 0..RUNS {
            let exec = format!("{prefix}-{t}-{r}");
            ended(&agg, &exec).await;
            let failed = i64::from(r % 5 == 0);
            let status = if failed == 1 {
                RunStatus::Failed
            } else {
                RunStatus::Completed
            };
            let implied = Implied {
                ok: 4 - failed,
                failed,
                tokens_in: 10 + 11 + 12 + 13,
                tokens_out: 4 * r as i64,
                calls: 4,
                duration: ANY_DURATION,
                total: 0,
            };
            want.insert(exec, (implied, status));
        }
    }
    // Counters, status, one task node per task and one FAILED_TASK edge per failure, per run.
    assert_implied(&store, &raw_graph(), &want).await;
    let m = agg.metrics().tracing;
    assert_eq!(m.runs, (THREADS * RUNS) as u64);
    assert_eq!(m.tasks, (THREADS * RUNS * 4) as u64);
    assert_eq!(m.dropped, 0);
}

#[tokio::test]
async fn a_span_left_open_at_shutdown_is_reported() {
    let agg = aggregator(|b| b).await;
    let exec = unique("open");
    let subscriber = tracing_subscriber::registry().with(runtally::layer(&agg));
    let dispatch = tracing::Dispatch::new(subscriber);
    let (run, task) = tracing::dispatcher::with_default(&dispatch, || {
        let run = tracing::info_span!("orchestrate", runtally.execution_id = exec.as_str());
        let task = run.in_scope(|| tracing::info_span!("step", runtally.task_id = "never ends"));
        (run, task)
    });
    let m = agg.metrics().tracing;
    assert_eq!((m.open_runs, m.open_tasks), (1, 1));
    let report = agg.clone().shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.unfinished_runs, vec![exec_id(&exec)]);
    assert_eq!(report.metrics.tracing.open_tasks, 1);
    // Closing them after the shutdown is counted, not a panic. (Inside the dispatcher's scope:
    // the registry closes a parent through the thread's current dispatcher.)
    tracing::dispatcher::with_default(&dispatch, || {
        drop(task);
        drop(run);
    });
    let m = agg.metrics().tracing;
    assert_eq!((m.open_runs, m.open_tasks), (0, 0));
    assert_eq!(m.dropped, 2, "the task's result and the run's end");
}

#[tokio::test]
async fn malformed_values_are_counted_and_never_panic() {
    let agg = aggregator(|b| b).await;
    let store = store().await;
    let exec = unique("malformed");
    let id = exec.clone();
    with_layer(&agg, move || {
        let run = tracing::info_span!(
            "invoke_workflow",
            gen_ai.operation.name = "invoke_workflow",
            runtally.execution_id = id.as_str(),
            runtally.total_tasks = -4i64,
        );
        let _r = run.enter();
        let _agent = agent("odd").entered();
        let span = tracing::info_span!(
            "chat",
            gen_ai.operation.name = "chat",
            gen_ai.usage.input_tokens = -5i64,
            gen_ai.usage.output_tokens = "lots",
        );
        let _c = span.enter();
        span.record("gen_ai.usage.input_tokens", 9u64);
        span.record("gen_ai.usage.output_tokens", f64::NAN);
        // An id the model refuses (empty): the task is dropped and counted, the run goes on.
        let _bad = tracing::info_span!("step", runtally.task_id = "").entered();
    });
    ended(&agg, &exec).await;
    let run = store
        .execution(&exec_id(&exec))
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(run.tasks_total, 0, "a negative total is ignored");
    assert_eq!((run.tokens_input, run.tokens_output), (9, 0));
    let m = agg.metrics().tracing;
    assert_eq!(
        m.malformed_fields, 4,
        "total, input, output at creation; output later"
    );
    assert_eq!(m.dropped, 1, "the empty task id");
}

#[tokio::test]
async fn a_refused_run_records_nothing_below_it() {
    let agg = aggregator(|b| b).await;
    let exec = unique("refused");
    // The id is live already: the span's run is refused, once.
    let live = agg
        .begin_run(runtally::RunStart::new(exec_id(&exec), plan_id("p"), 1))
        .expect("begin");
    let id = exec.clone();
    with_layer(&agg, move || {
        let _run = workflow(&id).entered();
        // Without the refusal marked, each of these would begin a run of its own.
        for _ in 0..3 {
            let _agent = agent("a").entered();
            chat(1, 1);
        }
    });
    let m = agg.metrics().tracing;
    assert_eq!((m.runs, m.tasks, m.dropped), (0, 0, 1));
    assert_eq!(agg.live_runs(), 1, "only the live run");
    live.finish(chrono::Utc::now()).await.expect("finish");
}

#[tokio::test]
async fn results_runtally_cannot_take_are_dropped_and_counted() {
    // No database writes anything here (`DownStore`): memory fills at ten rows, and the layer
    // cannot wait for room.
    let config = runtally::AggregatorConfig::builder()
        .with_max_batch_rows(10)
        .with_max_pending_rows(10)
        .build()
        .expect("config");
    let agg = Aggregator::start_with_store(config, std::sync::Arc::new(runtally::store::DownStore))
        .await
        .expect("start");
    let exec = unique("full");
    let id = exec.clone();
    with_layer(&agg, move || {
        let _run =
            tracing::info_span!("orchestrate", runtally.execution_id = id.as_str()).entered();
        for t in 0..30 {
            let _task = tracing::info_span!("step", runtally.task_id = t).entered();
        }
    });
    let m = agg.metrics().tracing;
    assert!(m.dropped > 0, "memory was full: {m:?}");
    assert_eq!(m.tasks + m.dropped, 30, "every result recorded or counted");
    let run = agg.run(&exec_id(&exec)).expect("live");
    let ended = eventually(Duration::from_secs(10), || async { run.is_ended() }).await;
    assert!(
        ended.is_some(),
        "the run's end is not a result: it goes past the bound"
    );
    let snapshot = run.snapshot().await.expect("snapshot");
    assert_eq!(
        snapshot.totals.tasks_successful as u64, m.tasks,
        "what was taken is counted"
    );
}
