//! `NEO4J_DATABASE` (`with_database`) selects the database runtally writes to, and a name the
//! server does not have is a clear, permanent error at start, not a silent retry loop.

mod common;

use std::time::Duration;

use common::*;
use runtally::{AggregatorConfig, Neo4jConfig, RunStart, StartError};

fn config_for(database: &str) -> AggregatorConfig {
    let base = neo4j_config();
    let builder = Neo4jConfig::builder(base.uri(), base.user(), base.password().expose())
        .with_database(database)
        .with_connection_timeout(Duration::from_secs(5));
    AggregatorConfig::builder()
        .with_neo4j(builder)
        .with_write_timeout(Duration::from_secs(5))
        .build()
        .expect("config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_the_server_does_not_have_is_a_clear_error_at_start() {
    let missing = "no_such_database_here";
    let started = tokio::time::timeout(
        Duration::from_secs(30),
        runtally::Aggregator::start(config_for(missing)),
    )
    .await
    .expect("start answers instead of retrying");
    let Err(error) = started else {
        panic!("start with a missing database must fail");
    };
    let StartError::Store(store) = &error else {
        panic!("a store error, got {error:?}");
    };
    assert!(!store.is_retriable(), "permanent: {store:?}");
    let message = runtally::error::chain(&error);
    assert!(
        message.contains(missing) || message.contains("DatabaseNotFound"),
        "names the problem: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_database_is_the_one_written() {
    let base = neo4j_config();
    let database = base
        .database()
        .expect("the test settings name the database (NEO4J_DATABASE)")
        .to_owned();
    let agg = runtally::Aggregator::start(config_for(&database))
        .await
        .expect("start");
    let exec = unique("dbname");
    let run = agg
        .begin_run(RunStart::new(exec_id(&exec), plan_id("p"), 0))
        .expect("begin");
    run.finish(chrono::Utc::now()).await.expect("finish");
    agg.flush().await.expect("flush");
    assert!(agg.shutdown(Duration::from_secs(10)).await.complete);
    // Read through a connection that names the same database explicitly.
    let mut rows = raw_graph()
        .execute(
            neo4rs::query("MATCH (e:Node {id: $id}) RETURN count(e) AS n")
                .param("id", exec.as_str()),
        )
        .await
        .expect("read");
    let n: i64 = rows
        .next()
        .await
        .expect("row")
        .expect("one")
        .get("n")
        .expect("n");
    assert_eq!(n, 1, "written to {database}");
}
