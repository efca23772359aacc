//! Plan relationships form when an `orchestration_plan` node with the run's REAL plan id exists
//! (the seed passed the execution id and never linked), and are simply absent otherwise.

mod common;

use common::*;
use runtally::model::{TaskDefinition, TaskResult};

#[tokio::test]
async fn a_run_with_a_plan_node_gets_executes_plan_and_has_execution() {
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("plan-linked");
    let plan = unique("plan");
    create_plan(&graph, &plan).await;
    let def = TaskDefinition::new(task_id("t1"));
    write(
        &store,
        vec![started(&exec, &plan, 1)],
        vec![task_row(
            &exec,
            &plan,
            &def,
            TaskResult::success(task_id("t1")),
            t0(),
        )],
    )
    .await;

    let te = format!("{exec}-t1");
    assert_eq!(
        edges(&graph, &plan).await,
        vec![
            (plan.clone(), "HAS_EXECUTION".into(), te.clone()),
            (exec.clone(), "EXECUTES_PLAN".into(), plan.clone()),
        ]
    );
    // Written again: still one of each.
    write(
        &store,
        vec![started(&exec, &plan, 1)],
        vec![task_row(
            &exec,
            &plan,
            &def,
            TaskResult::success(task_id("t1")),
            t0(),
        )],
    )
    .await;
    assert_eq!(edges(&graph, &plan).await.len(), 2);
}

#[tokio::test]
async fn a_run_without_a_plan_node_has_no_plan_edges() {
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("plan-missing");
    let plan = unique("absent-plan");
    let def = TaskDefinition::new(task_id("t1"));
    write(
        &store,
        vec![started(&exec, &plan, 1)],
        vec![task_row(
            &exec,
            &plan,
            &def,
            TaskResult::success(task_id("t1")),
            t0(),
        )],
    )
    .await;
    let te = format!("{exec}-t1");
    assert_eq!(
        edges(&graph, &exec).await,
        vec![(exec.clone(), "HAS_TASK_EXECUTION".into(), te)]
    );
    assert_eq!(count_nodes(&graph, &plan).await, 0, "no plan node invented");
}

#[tokio::test]
async fn a_node_with_the_plan_id_but_another_type_is_not_linked() {
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("plan-wrong-type");
    let other = unique("not-a-plan");
    graph
        .run(
            neo4rs::query("CREATE (:Node {id: $id, type: 'something_else'})")
                .param("id", other.as_str()),
        )
        .await
        .expect("create");
    write(&store, vec![started(&exec, &other, 0)], vec![]).await;
    assert!(edges(&graph, &exec).await.is_empty());
}
