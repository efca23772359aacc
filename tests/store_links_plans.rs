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

#[tokio::test]
async fn a_row_asking_for_the_link_links_even_when_a_newer_state_is_stored() {
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("plan-overtaken");
    let plan = unique("plan");
    create_plan(&graph, &plan).await;
    // An urgent copy of a later state commits first, without the link ...
    let mut newer = started(&exec, &plan, 3);
    newer.version = 9;
    newer.tasks_failed = 1;
    newer.link_plan = false;
    write(&store, vec![newer], vec![]).await;
    // ... then the run's first row, which asks for it, arrives with an older version.
    let mut first = started(&exec, &plan, 3);
    first.version = 1;
    first.link_plan = true;
    write(&store, vec![first], vec![]).await;

    assert_eq!(
        edges(&graph, &exec).await,
        vec![(exec.clone(), "EXECUTES_PLAN".into(), plan.clone())]
    );
    let stored = props(&graph, &exec).await;
    assert_eq!(
        stored["tasksFailed"],
        int(1),
        "the older row did not overwrite the newer state"
    );
    assert_eq!(stored["runtallyVersion"], int(9));
}
