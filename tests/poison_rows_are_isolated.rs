//! A row the database refuses permanently does not block the queue or take its batch down: the
//! writer splits the batch until that row is isolated, writes every other row, and reports the
//! refused one (metrics, the host's handler, `flush` result). With one lane and with four,
//! where the two runs' small chunks share one combined transaction.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::private_db::PrivateDb;
use common::*;
use runtally::{Aggregator, AggregatorConfig, FlushError, RejectedWrite, RunStart, TaskDefinition};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_row_is_isolated_reported_and_everything_else_written() {
    init_tracing();
    let db = PrivateDb::start("poison");
    let graph = db.graph();
    // A rule this database enforces and runtally does not know about: task titles are unique.
    graph
        .run(neo4rs::query(
            "CREATE CONSTRAINT title_unique IF NOT EXISTS FOR (n:Node) REQUIRE n.taskTitle IS UNIQUE",
        ))
        .await
        .expect("constraint");
    for lanes in [1, 4] {
        isolate_with(&db, lanes).await;
    }
}

/// Two runs of ten tasks whose titles repeat once across the runs, in two different lanes.
async fn isolate_with(db: &PrivateDb, lanes: usize) {
    let rejected: Arc<Mutex<Vec<RejectedWrite>>> = Arc::default();
    let sink = Arc::clone(&rejected);
    let config = AggregatorConfig::builder()
        .with_neo4j(db.neo4j())
        .with_write_lanes(lanes)
        .with_flush_interval(Duration::from_secs(3600))
        .with_max_batch_rows(1000)
        .with_rejected_handler(move |r| sink.lock().expect("lock").push(r))
        .build()
        .expect("config");
    let agg = Aggregator::start(config).await.expect("start");
    let prefix = unique(&format!("poison{lanes}"));
    let ids = runs_in_distinct_lanes(&prefix, 2, 4);
    let mut runs = Vec::new();
    for (r, id) in ids.iter().enumerate() {
        let run = agg
            .begin_run(RunStart::new(exec_id(id), plan_id("p"), 10))
            .expect("begin");
        for t in 0..10 {
            // Run 1's task 7 repeats run 0's task 3 title: the database refuses one of them.
            let title = if (r, t) == (1, 7) {
                format!("{prefix} title 0/3")
            } else {
                format!("{prefix} title {r}/{t}")
            };
            let (_, res) = result(&format!("t{t}"), false, 10, 5, 1);
            let def = TaskDefinition::new(task_id(&format!("t{t}"))).with_title(title);
            run.task_finished(def, res).await.expect("accepted");
        }
        // Both runs' rows must be pending at once, so that the duplicate meets its twin in the
        // same flush (in one batch, or in two lanes' concurrent transactions).
        run.snapshot().await.expect("snapshot");
        runs.push(run);
    }
    let flushed = agg.flush().await;
    assert!(
        matches!(flushed, Err(FlushError::Rejected { rows: 1 })),
        "{lanes} lanes: {flushed:?}"
    );

    // Which twin is refused depends on which one the database writes first: write order across
    // runs is not promised (runs in different lanes may go out concurrently).
    let twins = [(0, "t3"), (1, "t7")].map(|(r, t)| (r, t, format!("{}-{t}", ids[r])));
    let refused_twin = {
        let refused = rejected.lock().expect("lock");
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].tasks.len(), 1);
        assert!(
            refused[0].executions.is_empty(),
            "the run itself is written"
        );
        assert_eq!(
            refused[0].error.kind(),
            runtally::StoreErrorKind::Query,
            "{:?}",
            refused[0].error
        );
        assert!(refused[0].error.statement().is_some());
        assert!(!refused[0].error.is_retriable());
        assert_eq!(
            refused[0].error.code(),
            Some("Neo.ClientError.Schema.ConstraintValidationFailed")
        );
        let id = &refused[0].tasks[0].id;
        twins
            .iter()
            .find(|(_, _, twin)| twin == id)
            .cloned()
            .unwrap_or_else(|| panic!("{lanes} lanes: refused {id}, not one of the twins"))
    };
    assert_eq!(agg.metrics().rows_rejected, 1);

    let store = db.store();
    for (r, id) in ids.iter().enumerate() {
        let stored = store.task_executions(&exec_id(id)).await.expect("read");
        if r == refused_twin.0 {
            assert_eq!(
                stored.len(),
                9,
                "{lanes} lanes, {id}: all but the refused row"
            );
            assert!(stored.iter().all(|t| t.task_id != refused_twin.1));
        } else {
            assert_eq!(stored.len(), 10, "{lanes} lanes, {id}: every row");
        }
        assert!(store.execution(&exec_id(id)).await.expect("read").is_some());
    }

    // The queue is not blocked: later writes go through.
    for run in &runs {
        run.finish(chrono::Utc::now()).await.expect("finish");
    }
    agg.flush().await.expect("later writes succeed");
    let rec = store
        .execution(&exec_id(&ids[1]))
        .await
        .expect("read")
        .expect("run");
    assert_eq!(rec.status.as_str(), "completed");
    let _ = agg.shutdown(Duration::from_secs(10)).await;
}
