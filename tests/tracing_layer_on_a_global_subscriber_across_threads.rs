//! The `tracing` layer as the docs say to install it, the global subscriber, with async agent
//! code on a multi-threaded runtime: each run's agent tasks are spawned and their spans open,
//! record and close on whichever worker thread polls them, so a run's spans close on threads
//! other than the one that opened them. Every run ends and every value in the database is
//! exact. (Its own test binary: a process has one global subscriber.)

#![cfg(feature = "tracing-layer")]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use runtally::RunStatus;
use tracing::field::Empty;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

const RUNS: usize = 24;
const AGENTS: u64 = 4;

async fn model_call(input: u64, output: u64) {
    let span = tracing::info_span!(
        "chat",
        gen_ai.operation.name = "chat",
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
    );
    async {
        // Hops worker threads between the span's opening and its values.
        tokio::task::yield_now().await;
        let span = tracing::Span::current();
        span.record("gen_ai.usage.input_tokens", input);
        span.record("gen_ai.usage.output_tokens", output);
        tokio::task::yield_now().await;
    }
    .instrument(span)
    .await;
}

async fn agent(run: usize, n: u64) {
    model_call(100 + n, run as u64).await;
    async { tokio::task::yield_now().await }
        .instrument(tracing::info_span!(
            "execute_tool",
            gen_ai.operation.name = "execute_tool"
        ))
        .await;
    model_call(10, 1).await;
    if n == 0 && run.is_multiple_of(3) {
        tracing::error!("the agent gave up");
    }
}

async fn workflow(run: usize) {
    let agents: Vec<_> = (0..AGENTS)
        .map(|n| {
            let span = tracing::info_span!(
                "invoke_agent",
                gen_ai.operation.name = "invoke_agent",
                gen_ai.agent.name = "worker",
            );
            tokio::spawn(agent(run, n).instrument(span))
        })
        .collect();
    for agent in agents {
        agent.await.expect("agent task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_whose_spans_close_on_other_threads_end_exactly() {
    let agg = aggregator(|b| b).await;
    let store = store().await;
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(runtally::layer(&agg)),
    )
    .expect("the only global subscriber of this binary");
    let prefix = unique("global");
    let runs: Vec<_> = (0..RUNS)
        .map(|r| {
            let id = format!("{prefix}-{r}");
            let span = tracing::info_span!(
                "invoke_workflow",
                gen_ai.operation.name = "invoke_workflow",
                runtally.execution_id = id.as_str(),
            );
            tokio::spawn(workflow(r).instrument(span))
        })
        .collect();
    for run in runs {
        run.await.expect("run task");
    }
    for r in 0..RUNS {
        let id = exec_id(&format!("{prefix}-{r}"));
        let ended = eventually(Duration::from_secs(10), || async {
            agg.run(&id).is_none_or(|run| run.is_ended())
        })
        .await;
        assert!(ended.is_some(), "run {r} ends when its span closes");
    }
    agg.flush().await.expect("flush");
    let mut want = HashMap::new();
    for r in 0..RUNS {
        let failed = i64::from(r.is_multiple_of(3));
        let status = if failed == 1 {
            RunStatus::Failed
        } else {
            RunStatus::Completed
        };
        let implied = Implied {
            ok: AGENTS as i64 - failed,
            failed,
            tokens_in: (100 + 101 + 102 + 103) + 10 * AGENTS as i64,
            tokens_out: (r as i64 + 1) * AGENTS as i64,
            calls: AGENTS as i64,
            duration: ANY_DURATION,
            total: 0,
        };
        want.insert(format!("{prefix}-{r}"), (implied, status));
    }
    // Counters, status, one task node per task and one FAILED_TASK edge per failure, per run.
    assert_implied(&store, &raw_graph(), &want).await;
    for exec in want.keys() {
        let tasks = store.task_executions(&exec_id(exec)).await.expect("tasks");
        assert!(tasks.iter().all(|t| t.task_title == "worker"), "{exec}");
    }
    let m = agg.metrics().tracing;
    assert_eq!(
        (m.runs, m.tasks, m.dropped),
        (RUNS as u64, RUNS as u64 * AGENTS, 0)
    );
    assert_eq!((m.open_runs, m.open_tasks), (0, 0));
}
