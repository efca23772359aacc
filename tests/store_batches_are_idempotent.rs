//! Writing the same batch twice (a retry after a lost commit) duplicates nothing and changes no
//! value; so does re-sending a run's start.

mod common;

use common::*;
use runtally::model::{TaskDefinition, TaskResult};
use runtally::rows::WriteBatch;
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
    row.status = runtally::model::RunStatus::Failed;
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
async fn a_re_sent_start_does_not_reset_progress_to_a_second_node() {
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("restart");
    write(&store, vec![started(&exec, "p", 2)], vec![]).await;
    write(&store, vec![started(&exec, "p", 2)], vec![]).await;
    assert_eq!(count_nodes(&graph, &exec).await, 1);
}
