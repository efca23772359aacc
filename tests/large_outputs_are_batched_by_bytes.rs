//! LLM outputs of many megabytes: batches close by bytes, an output larger than a batch goes
//! alone and is stored whole, and a row larger than the server accepts in one message is
//! refused for good through the rejected-row path (typed, counted, handed to the handler) while
//! the rows around it are written.
//!
//! "Larger than the server accepts": ArcadeDB refuses a Bolt message over 16 MiB; Neo4j has no
//! such limit, so that test runs a server of its own with a 24 MiB transaction memory limit
//! (`db.memory.transaction.max`; it counts a string at two bytes a character), which it
//! enforces with `Neo.TransientError.General.MemoryPoolOutOfMemoryError`: transient by its
//! code, but sent again as it is it fails again, so runtally splits it like a message that is
//! too large.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::private_db::PrivateDb;
use common::*;
use runtally::{AggregatorConfig, RejectedWrite, RunStart};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_larger_than_a_batch_is_stored_whole_alone_in_its_batch() {
    init_tracing();
    let agg = aggregator(|b| {
        b.with_max_batch_bytes(4 << 20)
            .with_flush_interval(Duration::from_millis(20))
    })
    .await;
    let exec = unique("large");
    let run = agg
        .begin_run(RunStart::new(exec_id(&exec), plan_id("p"), 5))
        .expect("begin");
    let big = "o".repeat(12 << 20);
    for t in 0..5 {
        let (task, mut result) = result(&format!("t{t}"), false, 10, 5, 1);
        result.output = if t == 2 {
            big.clone()
        } else {
            "x".repeat(1 << 20)
        };
        run.task_finished(task, result).await.expect("accepted");
    }
    run.finish(chrono::Utc::now()).await.expect("finish");
    agg.flush().await.expect("flush");
    let metrics = agg.metrics();
    assert!(
        metrics.batch_bytes.max >= 12 << 20 && metrics.batch_bytes.max < 13 << 20,
        "the big row alone: {:?}",
        metrics.batch_bytes
    );
    assert!(
        metrics.batch_bytes.count >= 3,
        "the 1 MiB rows in batches of at most 4 MiB"
    );
    assert_eq!(metrics.rows_rejected, 0);
    assert_eq!(metrics.oversize_splits, 0, "no batch refused for its size");
    let tasks = store()
        .await
        .task_executions(&exec_id(&exec))
        .await
        .expect("read");
    assert_eq!(tasks.len(), 5);
    let stored = tasks
        .iter()
        .find(|t| t.task_id == "t2")
        .expect("the big task");
    assert_eq!(stored.output.len(), big.len(), "stored whole");
    assert!(stored.output == big);
    assert!(agg.shutdown(Duration::from_secs(10)).await.complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_larger_than_the_server_accepts_is_rejected_and_its_neighbours_are_written() {
    init_tracing();
    let rejected: Arc<Mutex<Vec<RejectedWrite>>> = Arc::default();
    let sink = Arc::clone(&rejected);
    let db = PrivateDb::start_with("toolarge", "db.memory.transaction.max=24m");
    let config = AggregatorConfig::builder()
        .with_neo4j(db.neo4j())
        .with_max_batch_bytes(64 << 20)
        // Room for the writes in flight of two lanes of 64 MiB batches (3 × 64 MiB each).
        .with_max_pending_bytes(512 << 20)
        .with_flush_interval(Duration::from_millis(20))
        .with_rejected_handler(move |r| sink.lock().expect("lock").push(r))
        .build()
        .expect("config");
    let agg = runtally::Aggregator::start(config).await.expect("start");
    let exec = unique("toolarge");
    let run = agg
        .begin_run(RunStart::new(exec_id(&exec), plan_id("p"), 3))
        .expect("begin");
    // Three rows in one batch of ~24 MB: over what either server takes in one write.
    // The batch is split by bytes; the 20 MB row alone is still too large and is refused.
    for (t, size) in [(0, 2 << 20), (1, 20 << 20), (2, 2 << 20)] {
        let (task, mut result) = result(&format!("t{t}"), false, 10, 5, 1);
        result.output = "z".repeat(size);
        run.task_finished(task, result).await.expect("accepted");
    }
    run.finish(chrono::Utc::now()).await.expect("finish");
    let flushed = agg.flush().await;
    let metrics = agg.metrics();
    assert!(
        matches!(flushed, Err(runtally::FlushError::Rejected { rows: 1 })),
        "{flushed:?}"
    );
    assert!(metrics.oversize_splits >= 1, "{metrics:?}");
    assert_eq!(metrics.rows_rejected, 1);
    let rejected = std::mem::take(&mut *rejected.lock().expect("lock"));
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].tasks.len(), 1);
    assert_eq!(rejected[0].tasks[0].task_id.as_str(), "t1");
    assert!(
        rejected[0].error.is_too_large(),
        "a clear reason: {}",
        runtally::error::chain(&rejected[0].error)
    );
    assert_eq!(rejected[0].error.kind(), runtally::StoreErrorKind::TooLarge);
    assert!(!rejected[0].error.is_retriable());
    assert!(rejected[0].error.statement().is_some());
    let tasks = db
        .store()
        .task_executions(&exec_id(&exec))
        .await
        .expect("read");
    let mut ids: Vec<&str> = tasks.iter().map(|t| t.task_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["t0", "t2"], "the rows around it are written");
    agg.shutdown(Duration::from_secs(10)).await;
}
