//! `Aggregator::start` on a database that already has a schema, or that cannot take
//! runtally's: an existing uniqueness constraint on `:Node(id)` under another name is used as
//! it is; a plain index on `:Node(id)` (which blocks the constraint) is a warning, not a failed
//! start; duplicate ids (which the seed's concurrent writes can leave) with no index at all
//! are a typed error that names the fix.

mod common;

use std::time::Duration;

use common::private_db::PrivateDb;
use common::*;
use runtally::{AggregatorConfig, RunStart, StartError, StoreErrorKind};

async fn run(graph: &neo4rs::Graph, statement: &str) {
    graph
        .run(neo4rs::query(statement))
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

async fn count(graph: &neo4rs::Graph, statement: &str) -> i64 {
    let mut rows = graph
        .execute(neo4rs::query(statement))
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
    rows.next()
        .await
        .expect("row")
        .expect("one")
        .get::<i64>("n")
        .expect("n")
}

const ID_CONSTRAINTS: &str = "SHOW CONSTRAINTS YIELD labelsOrTypes, properties \
    WHERE labelsOrTypes = ['Node'] AND properties = ['id'] RETURN count(*) AS n";

async fn start(db: &PrivateDb) -> Result<runtally::Aggregator, StartError> {
    let config = AggregatorConfig::builder()
        .with_neo4j(db.neo4j())
        .with_write_timeout(Duration::from_secs(10))
        .build()
        .expect("config");
    runtally::Aggregator::start(config).await
}

/// A run written end to end, to show the started aggregator works.
async fn write_one(agg: &runtally::Aggregator, db: &PrivateDb) {
    let exec = unique("schema");
    let run = agg
        .begin_run(RunStart::new(exec_id(&exec), plan_id("p"), 1))
        .expect("begin");
    let (task, result) = result("t", false, 1, 1, 1);
    run.task_finished(task, result).await.expect("task");
    run.finish(chrono::Utc::now()).await.expect("finish");
    agg.flush().await.expect("flush");
    let tasks = db
        .store()
        .task_executions(&exec_id(&exec))
        .await
        .expect("read");
    assert_eq!(tasks.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_takes_the_schema_it_finds_and_names_the_fix_when_it_cannot_make_one() {
    init_tracing();
    let db = PrivateDb::start("schema");
    let graph = db.graph();

    // Duplicate ids and no index on :Node(id): the constraint cannot be created.
    run(
        &graph,
        "CREATE (:Node {id: 'dup', type: 'task_execution'}), (:Node {id: 'dup', type: 'task_execution'})",
    )
    .await;
    match start(&db).await {
        Err(StartError::Store(e)) if e.kind() == StoreErrorKind::Schema => {
            let fix = e.fix().expect("a schema error names the fix");
            assert!(fix.contains("same id"), "names the duplicates: {fix}");
        }
        Err(other) => panic!("a schema error naming the fix, got {other:?}"),
        Ok(_) => panic!("start must refuse a database whose ids are not unique"),
    }
    run(&graph, "MATCH (n:Node {id: 'dup'}) DETACH DELETE n").await;

    // A plain index on :Node(id) stands in for the constraint: a warning, and runtally works.
    run(
        &graph,
        "CREATE INDEX plain_node_id IF NOT EXISTS FOR (n:Node) ON (n.id)",
    )
    .await;
    let agg = start(&db).await.expect("starts beside a plain index");
    write_one(&agg, &db).await;
    assert!(agg.shutdown(Duration::from_secs(10)).await.complete);

    // A uniqueness constraint under another name is used; no second one is made. (A server of
    // its own: servers differ in what they let one drop of the index above.)
    let db = PrivateDb::start("schema-named");
    let graph = db.graph();
    run(
        &graph,
        "CREATE CONSTRAINT their_unique_id IF NOT EXISTS FOR (n:Node) REQUIRE n.id IS UNIQUE",
    )
    .await;
    let agg = start(&db).await.expect("starts with their constraint");
    write_one(&agg, &db).await;
    assert!(agg.shutdown(Duration::from_secs(10)).await.complete);
    assert_eq!(
        count(&graph, ID_CONSTRAINTS).await,
        1,
        "their constraint only"
    );
}
