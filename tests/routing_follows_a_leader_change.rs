//! With a `neo4j://` URI runtally routes through the driver: writes go to the server the
//! routing table names as the writer, and when that server answers `NotALeader` (the leader
//! moved), runtally asks the router again at once instead of sending every write to the old
//! leader until the table expires (300 s). The router here is a fake cluster member
//! (`common::fake_router`) that refuses writes as a follower does and, once it has refused one,
//! names the real server as the leader; every value must then be exact on the real server,
//! nothing refused or doubled.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::fake_router::FakeRouter;
use common::*;
use runtally::{AggregatorConfig, Neo4jConfig, RunStart, RunStatus};

/// `host:port` of the real server the tests run against.
fn real_server() -> String {
    let uri = neo4j_config().uri().to_owned();
    let rest = uri.split_once("://").map_or(uri.as_str(), |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_change_is_followed_without_waiting_for_the_table_to_expire() {
    init_tracing();
    let base = neo4j_config();
    let database = base.database().unwrap_or("neo4j").to_owned();
    let fake = FakeRouter::start(&real_server(), &database, 1).await;
    let neo4j = Neo4jConfig::builder(
        format!("neo4j://{}", fake.address),
        base.user(),
        base.password().expose(),
    )
    .with_database(database)
    .with_connection_timeout(Duration::from_secs(5));
    let config = AggregatorConfig::builder()
        .with_neo4j(neo4j)
        .build()
        .expect("config");
    let started = Instant::now();
    let agg = runtally::Aggregator::start(config)
        .await
        .expect("start (the database is checked directly, then routed)");

    let prefix = unique("leader-moved");
    let mut want = HashMap::new();
    for r in 0..5 {
        let exec = format!("{prefix}-{r}");
        let run = agg
            .begin_run(RunStart::new(exec_id(&exec), plan_id("p"), 4))
            .expect("begin");
        for t in 0..4 {
            let (d, res) = result(&format!("t{t}"), r == 2 && t == 1, 10, 5, 1);
            run.task_finished(d, res).await.expect("accepted");
        }
        run.finish(chrono::Utc::now()).await.expect("finish");
        let failed = i64::from(r == 2);
        let implied = Implied {
            ok: 4 - failed,
            failed,
            tokens_in: 40,
            tokens_out: 20,
            calls: 4,
            duration: ANY_DURATION,
            total: 4,
        };
        let status = if failed > 0 {
            RunStatus::Failed
        } else {
            RunStatus::Completed
        };
        want.insert(exec, (implied, status));
    }
    // Far below the table's 300 s: the writer retries, and each retry reaches the new leader.
    tokio::time::timeout(Duration::from_secs(60), agg.flush())
        .await
        .expect("written within a minute, not after the table expires")
        .expect("flush");
    let failover = started.elapsed();
    let metrics = agg.metrics();
    assert!(agg.shutdown(Duration::from_secs(10)).await.complete);

    assert!(
        fake.refusals() >= 1,
        "the old leader refused writes ({} refusals)",
        fake.refusals()
    );
    assert!(
        fake.routes() >= 2,
        "asked the router again after the refusal ({} tables)",
        fake.routes()
    );
    assert_eq!(metrics.rows_rejected, 0, "nothing refused for good");
    eprintln!(
        "leader change followed: {} refusals, {} routing tables, written {:?} after start",
        fake.refusals(),
        fake.routes(),
        failover
    );
    assert_implied(&store().await, &raw_graph(), &want).await;
}
