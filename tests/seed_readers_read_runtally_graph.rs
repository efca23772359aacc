//! The seed system's three reader queries, run verbatim, return what runtally wrote; and
//! runtally's typed reads answer the same questions.

mod common;

use chrono::Duration;
use common::*;
use neo4rs::{query, BoltType};
use runtally::model::{RunStatus, TaskDefinition, TaskResult, TaskStatus};

const STATUS: &str =
    "MATCH (exec:Node {id:$executionId, type:'orchestration_execution'}) RETURN exec";
const TASKS: &str = "MATCH (te:Node) WHERE te.type='task_execution' AND te.executionId=$executionId
   RETURN te ORDER BY te.timestamp";
const LIST: &str = "MATCH (exec:Node {type:'orchestration_execution'}) RETURN exec
   ORDER BY exec.startTime DESC SKIP $offset LIMIT $limit";

fn node_id(v: &BoltType) -> String {
    match v {
        BoltType::Node(n) => match n.properties.value.get("id") {
            Some(BoltType::String(s)) => s.value.clone(),
            other => panic!("id: {other:?}"),
        },
        other => panic!("not a node: {other:?}"),
    }
}

#[tokio::test]
async fn the_three_seed_queries_return_what_runtally_wrote() {
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("readers");
    let mut row = started(&exec, "p", 3);
    // Far in the future, and later than any earlier run of this test, so it sorts first in the
    // newest-first list.
    row.start_time = chrono::Utc::now() + Duration::days(365 * 100);
    row.status = RunStatus::Failed;
    let tasks = [("c", 0), ("a", 1), ("b", 2)]
        .iter()
        .map(|(t, secs)| {
            let result = if *t == "a" {
                TaskResult::failure(task_id(t), "x")
            } else {
                TaskResult::success(task_id(t))
            };
            task_row(
                &exec,
                "p",
                &TaskDefinition::new(task_id(t)),
                result,
                t0() + Duration::seconds(*secs),
            )
        })
        .collect();
    write(&store, vec![row], tasks).await;

    // 1. Execution status.
    let mut rows = graph
        .execute(query(STATUS).param("executionId", exec.as_str()))
        .await
        .expect("status query");
    let first = rows.next().await.expect("row").expect("a row");
    assert_eq!(node_id(&first.get::<BoltType>("exec").expect("exec")), exec);
    assert!(rows.next().await.expect("row").is_none());
    // A stream holds its pooled connection until dropped (shadowing does not drop it).
    drop(rows);

    // 2. Its tasks, by timestamp.
    let mut rows = graph
        .execute(query(TASKS).param("executionId", exec.as_str()))
        .await
        .expect("tasks query");
    let mut ids = Vec::new();
    while let Some(r) = rows.next().await.expect("row") {
        ids.push(node_id(&r.get::<BoltType>("te").expect("te")));
    }
    assert_eq!(
        ids,
        vec![
            format!("{exec}-c"),
            format!("{exec}-a"),
            format!("{exec}-b")
        ]
    );
    drop(rows);

    // 3. Execution list, newest first.
    let mut rows = graph
        .execute(query(LIST).param("offset", 0_i64).param("limit", 1_i64))
        .await
        .expect("list query");
    let newest = rows.next().await.expect("row").expect("a row");
    assert_eq!(
        node_id(&newest.get::<BoltType>("exec").expect("exec")),
        exec
    );

    // The typed reads agree.
    let rec = store
        .execution(&exec_id(&exec))
        .await
        .expect("read")
        .expect("found");
    assert_eq!(rec.status, RunStatus::Failed);
    let typed: Vec<_> = store.task_executions(&exec_id(&exec)).await.expect("tasks");
    assert_eq!(
        typed.iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(),
        vec!["c", "a", "b"]
    );
    assert_eq!(typed[1].status, TaskStatus::Failure);
    let listed = store.list_executions(1, 0).await.expect("list");
    assert_eq!(listed[0].id, exec);
    assert!(store
        .execution(&exec_id(&unique("nobody")))
        .await
        .expect("read")
        .is_none());
}

/// The seed's own create statement (persistence.ts, `createExecutionNodeInNeo4j`), verbatim.
const SEED_CREATE: &str = "
CREATE (exec:Node {id: $executionId})
SET exec.type = 'orchestration_execution',
exec.planId = $planId,
exec.status = 'running',
exec.startTime = datetime($startTime),
exec.endTime = null,
exec.duration = 0,
exec.tasksTotal = $tasksTotal,
exec.tasksSuccessful = 0,
exec.tasksFailed = 0,
exec.tokensInput = 0,
exec.tokensOutput = 0,
exec.tokensTotal = 0,
exec.toolCalls = 0,
exec.created = datetime(),
exec.updated = datetime()
WITH exec
OPTIONAL MATCH (plan:Node {id: $planId, type: 'orchestration_plan'})
FOREACH (p IN CASE WHEN plan IS NOT NULL THEN [plan] ELSE [] END |
MERGE (exec)-[:EXECUTES_PLAN]->(p)
)
RETURN exec.id as nodeId
";

#[tokio::test]
async fn runtally_reads_runs_the_seed_wrote() {
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("seed-written");
    graph
        .run(
            query(SEED_CREATE)
                .param("executionId", exec.as_str())
                .param("planId", "plan-x")
                .param("startTime", "2026-11-27T10:00:00.123Z")
                .param("tasksTotal", 4_i64),
        )
        .await
        .expect("the seed's statement");
    // On some servers a bare datetime() is a zone-id value; runtally reads it either way.
    let rec = store
        .execution(&exec_id(&exec))
        .await
        .expect("typed read of a seed-written node")
        .expect("found");
    assert_eq!(rec.status, RunStatus::Running);
    assert_eq!(rec.tasks_total, 4);
    assert_eq!(rec.start_time, Some(t0()));
    assert!(rec.created.is_some() && rec.updated.is_some());
    assert_eq!(rec.end_time, None);
}
