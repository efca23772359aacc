//! Writing the same batch twice (a retry after a lost commit) duplicates nothing and changes no
//! value; so does re-sending a run's start.

mod common;

use common::*;
use runtally::model::{RunStatus, TaskDefinition, TaskResult};
use runtally::rows::{TaskRow, WriteBatch};
use runtally::store::GraphStore;

#[tokio::test]
async fn the_same_batch_written_twice_leaves_the_graph_as_once() {
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("twice");
    let mut row = started(&exec, "p", 3);
    row.tasks_successful = 2;
    row.tasks_failed = 1;
    row.tokens_input = 30;
    row.tokens_output = 12;
    row.tokens_total = 42;
    row.tool_calls = 6;
    row.status = RunStatus::Failed;
    let tasks = ["a", "b", "c"]
        .iter()
        .map(|t| {
            let def = TaskDefinition::new(task_id(t));
            let result = if *t == "c" {
                TaskResult::failure(task_id(t), "x")
            } else {
                TaskResult::success(task_id(t))
            };
            task_row(
                &exec,
                "p",
                &def,
                result.with_tokens(10, 4).with_tool_calls(2),
                t0(),
            )
        })
        .collect();
    let batch = WriteBatch::new(vec![row], tasks);

    store.write(&batch).await.expect("first");
    let exec_before = props(&graph, &exec).await;
    let task_before = props(&graph, &format!("{exec}-c")).await;
    let edges_before = edges(&graph, &exec).await;

    store.write(&batch).await.expect("second");
    assert_eq!(props(&graph, &exec).await, exec_before);
    assert_eq!(props(&graph, &format!("{exec}-c")).await, task_before);
    assert_eq!(edges(&graph, &exec).await, edges_before);
    assert_eq!(
        edges_before.len(),
        4,
        "3 HAS_TASK_EXECUTION + 1 FAILED_TASK"
    );
    for t in ["a", "b", "c"] {
        assert_eq!(count_nodes(&graph, &format!("{exec}-{t}")).await, 1);
    }
    assert_eq!(exec_before["tokensTotal"], int(42));
}

#[tokio::test]
async fn a_re_sent_start_leaves_the_progress_written_after_it_as_it_was() {
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("restart");
    // The run's first state, as its actor builds it: `running`, zero counters. Its actor
    // numbers every later state above it (`runtallyVersion`).
    let mut start = started(&exec, "p", 3);
    start.version = 1;
    write(&store, vec![start.clone()], vec![]).await;

    // Progress: two tasks done (one failed) and the state that counts them.
    let tasks: Vec<_> = [("a", false), ("b", true)]
        .into_iter()
        .map(|(t, failed)| {
            let (def, result) = result(t, failed, 10, 4, 2);
            task_row(&exec, "p", &def, result, t0())
        })
        .collect();
    let sum = |f: fn(&TaskRow) -> i64| tasks.iter().map(f).sum::<i64>();
    let mut progress = start.clone();
    progress.version = start.version + 1;
    progress.status = RunStatus::Failed;
    progress.tasks_failed = tasks.iter().filter(|t| t.failed()).count() as i64;
    progress.tasks_successful = tasks.len() as i64 - progress.tasks_failed;
    progress.tokens_input = sum(|t| t.tokens_input);
    progress.tokens_output = sum(|t| t.tokens_output);
    progress.tokens_total = sum(|t| t.tokens_total);
    progress.tool_calls = sum(|t| t.tool_calls);
    progress.link_plan = false;
    progress.updated = t0() + chrono::Duration::seconds(5);
    write(&store, vec![progress.clone()], tasks).await;
    let exec_before = props(&graph, &exec).await;
    let tasks_before = task_nodes(&store, &exec).await;
    let edges_before = edges(&graph, &exec).await;
    assert_eq!(
        exec_before["tasksFailed"],
        int(progress.tasks_failed),
        "the progress is stored"
    );
    assert_eq!(tasks_before.len(), 2, "the progress is stored");

    // The start again, exactly as first sent (a retry after a lost commit acknowledgement).
    write(&store, vec![start], vec![]).await;

    assert_eq!(count_nodes(&graph, &exec).await, 1);
    let rec = store
        .execution(&exec_id(&exec))
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(rec.status, progress.status);
    assert_eq!(rec.tasks_successful, progress.tasks_successful);
    assert_eq!(rec.tasks_failed, progress.tasks_failed);
    assert_eq!(rec.tokens_input, progress.tokens_input);
    assert_eq!(rec.tokens_output, progress.tokens_output);
    assert_eq!(rec.tokens_total, progress.tokens_total);
    assert_eq!(rec.tool_calls, progress.tool_calls);
    assert_eq!(
        props(&graph, &exec).await,
        exec_before,
        "the execution node is as the progress left it"
    );
    assert_eq!(task_nodes(&store, &exec).await, tasks_before);
    assert_eq!(edges(&graph, &exec).await, edges_before);
}

/// The run's task nodes as read back, by id.
async fn task_nodes(
    store: &runtally::store::Neo4jStore,
    exec: &str,
) -> Vec<runtally::store::TaskExecutionRecord> {
    let mut tasks = store.task_executions(&exec_id(exec)).await.expect("tasks");
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    tasks
}
