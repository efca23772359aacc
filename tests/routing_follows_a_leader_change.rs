//! With a `neo4j://` URI runtally routes through the driver: writes go to the server the
//! routing table names as the writer, and when that server answers `NotALeader` (the leader
//! moved), runtally asks the router again at once instead of sending every write to the old
//! leader until the table expires (300 s). The router here is a fake cluster member
//! (`common::fake_router`) that refuses writes as a follower does and, once it has refused one,
//! names the real server as the leader; every value must then be exact on the real server,
//! nothing refused or doubled. And while the URI's server is down, the pool keeps its last
//! table and the other routers it names.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::fake_router::{FakeRouter, Tables, OWN};
use common::*;
use runtally::{AggregatorConfig, Neo4jConfig, RunStart, RunStatus};

/// `host:port` of the real server the tests run against.
fn real_server() -> String {
    let uri = neo4j_config().uri().to_owned();
    let rest = uri.split_once("://").map_or(uri.as_str(), |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// An aggregator on `neo4j://{seed}` with the test server's credentials and database.
async fn routed_aggregator(seed: &str) -> runtally::Aggregator {
    let base = neo4j_config();
    let neo4j = Neo4jConfig::builder(
        format!("neo4j://{seed}"),
        base.user(),
        base.password().expose(),
    )
    .with_database(database())
    .with_connection_timeout(Duration::from_secs(5));
    let config = AggregatorConfig::builder()
        .with_neo4j(neo4j)
        .build()
        .expect("config");
    runtally::Aggregator::start(config)
        .await
        .expect("start (the database is checked directly, then routed)")
}

fn database() -> String {
    neo4j_config().database().unwrap_or("neo4j").to_owned()
}

/// Five runs of four results each (one failure), ended; what they imply.
async fn five_runs(
    agg: &runtally::Aggregator,
    prefix: &str,
) -> HashMap<String, (Implied, RunStatus)> {
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
    want
}

/// Flushes within a minute (far below the table's 300 s: each retry reaches the new leader),
/// shuts down, and returns how long since `started` and the rows refused for good.
async fn written(agg: runtally::Aggregator, started: Instant) -> (Duration, u64) {
    tokio::time::timeout(Duration::from_secs(60), agg.flush())
        .await
        .expect("written within a minute, not after the table expires")
        .expect("flush");
    let took = started.elapsed();
    let rejected = agg.metrics().rows_rejected;
    assert!(agg.shutdown(Duration::from_secs(10)).await.complete);
    (took, rejected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_change_is_followed_without_waiting_for_the_table_to_expire() {
    init_tracing();
    let fake = FakeRouter::start(&real_server(), &database(), 1).await;
    let started = Instant::now();
    let agg = routed_aggregator(&fake.address).await;
    let want = five_runs(&agg, &unique("leader-moved")).await;
    let (failover, rejected) = written(agg, started).await;

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
    assert_eq!(rejected, 0, "nothing refused for good");
    eprintln!(
        "leader change followed: {} refusals, {} routing tables, written {:?} after start",
        fake.refusals(),
        fake.routes(),
        failover
    );
    assert_implied(&store().await, &raw_graph(), &want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_uris_server_is_down_the_last_tables_routers_are_asked() {
    init_tracing();
    let database = database();
    // Two other routers of the cluster: their tables name the real server as the writer. (Two,
    // not one: neo4rs picks routers in turn, twice per failed acquisition, so with two
    // routers in the table it would ask the same one every time.)
    let new_table = || Tables {
        writer_before: real_server(),
        writer_after: real_server(),
        routers: vec![OWN.to_owned()],
        switch_after: usize::MAX,
    };
    let other_router = FakeRouter::start_with(new_table(), &database).await;
    let third_router = FakeRouter::start_with(new_table(), &database).await;
    // The old leader: refuses every write.
    let old_leader = FakeRouter::start(&real_server(), &database, usize::MAX).await;
    // The URI's server: names the old leader as the writer, itself and the other as routers.
    let seed = FakeRouter::start_with(
        Tables {
            writer_before: old_leader.address.clone(),
            writer_after: old_leader.address.clone(),
            routers: vec![
                OWN.to_owned(),
                other_router.address.clone(),
                third_router.address.clone(),
            ],
            switch_after: usize::MAX,
        },
        &database,
    )
    .await;
    let started = Instant::now();
    let agg = routed_aggregator(&seed.address).await;
    // The old leader refused the first write; then it and the URI's server go down.
    eventually(Duration::from_secs(30), || async {
        old_leader.refusals() >= 1
    })
    .await
    .expect("the old leader refused a write");
    seed.stop();
    old_leader.stop();
    let want = five_runs(&agg, &unique("router-down")).await;
    let (took, rejected) = written(agg, started).await;

    let routes = other_router.routes() + third_router.routes();
    assert!(routes >= 1, "another router gave a table ({routes})");
    assert_eq!(rejected, 0, "nothing refused for good");
    eprintln!("written through the other router {took:?} after start");
    assert_implied(&store().await, &raw_graph(), &want).await;
}
