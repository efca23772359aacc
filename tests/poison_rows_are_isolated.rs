//! A row the database refuses permanently does not block the queue or take its batch down: the
//! writer splits the batch until that row is isolated, writes every other row, and reports the
//! refused one (metrics, the host's handler, `flush` result).

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

    let rejected: Arc<Mutex<Vec<RejectedWrite>>> = Arc::default();
    let sink = Arc::clone(&rejected);
    let config = AggregatorConfig::builder()
        .with_neo4j(db.neo4j())
        .with_flush_interval(Duration::from_secs(3600))
        .with_max_batch_rows(1000)
        .with_rejected_handler(move |r| sink.lock().expect("lock").push(r))
        .build()
        .expect("config");
    let agg = Aggregator::start(config).await.expect("start");
    let prefix = unique("poison");
    let mut runs = Vec::new();
    for r in 0..2 {
        let run = agg
            .begin_run(RunStart::new(
                exec_id(&format!("{prefix}-{r}")),
                plan_id("p"),
                10,
            ))
            .expect("begin");
        for t in 0..10 {
            // Run 1's task 7 repeats run 0's task 3 title: the database refuses it.
            let title = if (r, t) == (1, 7) {
                format!("{prefix} title 0/3")
            } else {
                format!("{prefix} title {r}/{t}")
            };
            let (_, res) = result(&format!("t{t}"), false, 10, 5, 1);
            let def = TaskDefinition::new(task_id(&format!("t{t}"))).with_title(title);
            run.task_finished(def, res).await.expect("accepted");
        }
        // Run actors work concurrently: wait until this run's rows are at the writer, so that
        // run 0's title is the one written first and run 1's duplicate the one refused.
        run.snapshot().await.expect("snapshot");
        runs.push(run);
    }
    let flushed = agg.flush().await;
    assert!(
        matches!(flushed, Err(FlushError::Rejected { rows: 1 })),
        "{flushed:?}"
    );

    {
        let refused = rejected.lock().expect("lock");
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].tasks.len(), 1);
        assert!(
            refused[0].executions.is_empty(),
            "the run itself is written"
        );
        assert_eq!(refused[0].tasks[0].id, format!("{prefix}-1-t7"));
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
    }
    assert_eq!(agg.metrics().rows_rejected, 1);

    let store = db.store();
    assert_eq!(
        store
            .task_executions(&exec_id(&format!("{prefix}-0")))
            .await
            .expect("read")
            .len(),
        10
    );
    let run1 = store
        .task_executions(&exec_id(&format!("{prefix}-1")))
        .await
        .expect("read");
    assert_eq!(run1.len(), 9);
    assert!(run1.iter().all(|t| t.task_id != "t7"));
    assert!(store
        .execution(&exec_id(&format!("{prefix}-1")))
        .await
        .expect("read")
        .is_some());

    // The queue is not blocked: later writes go through.
    for run in &runs {
        run.finish(chrono::Utc::now()).await.expect("finish");
    }
    agg.flush().await.expect("later writes succeed");
    let rec = store
        .execution(&exec_id(&format!("{prefix}-1")))
        .await
        .expect("read")
        .expect("run");
    assert_eq!(rec.status.as_str(), "completed");
    let _ = agg.shutdown(Duration::from_secs(10)).await;
}
