//! Urgent run states (a failure, a recovery, an end) are written ahead of the queue, but a run
//! that changes state without pause must not keep every other row from the database: after a
//! flush interval of being passed over, the queue goes first once.
//!
//! Actor logic only, with an in-memory store whose writes take a while (as a real database's
//! do), so that new urgent states are always waiting when a write completes.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::scripted_store::ScriptedStore;
use common::*;
use runtally::{Aggregator, AggregatorConfig, RunStart};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_flipping_state_without_pause_does_not_starve_other_rows() {
    let store = ScriptedStore {
        write_delay: Duration::from_millis(20),
        ..ScriptedStore::default()
    };
    let memory = store.memory.clone();
    let config = AggregatorConfig::builder()
        .with_flush_interval(Duration::from_millis(50))
        .build()
        .expect("config");
    let agg = Aggregator::start_with_store(config, Arc::new(store))
        .await
        .expect("start");

    // A run that fails and recovers (a success re-sent for the failed task) over and over:
    // every result changes its status, so an urgent state is always waiting.
    let flipping = agg
        .begin_run(RunStart::new(exec_id("flipping"), plan_id("p"), 1))
        .expect("begin");
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            let mut failed = false;
            while !stop.load(Ordering::Relaxed) {
                failed = !failed;
                let (d, r) = result("t1", failed, 1, 1, 1);
                flipping.task_finished(d, r).await.expect("accepted");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    // Let the urgent stream get going, then report ordinary results of another run.
    let going = eventually(Duration::from_secs(3), || async {
        agg.metrics().flush_reasons.urgent >= 5
    })
    .await;
    assert!(
        going.is_some(),
        "the flipping run's states are written urgently"
    );
    let quiet = agg
        .begin_run(RunStart::new(exec_id("quiet"), plan_id("p"), 10))
        .expect("begin");
    for t in 0..10 {
        let (d, r) = result(&format!("t{t}"), false, 1, 1, 1);
        quiet.task_finished(d, r).await.expect("accepted");
    }
    let sent = Instant::now();
    let urgent_at_send = agg.metrics().flush_reasons.urgent;
    let mut written = 0;
    while sent.elapsed() < Duration::from_secs(3) {
        written = memory.tasks_of("quiet").len();
        if written == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waited = sent.elapsed();
    let urgent_writes = agg.metrics().flush_reasons.urgent - urgent_at_send;
    stop.store(true, Ordering::Relaxed);
    flipper.await.expect("flipper");
    assert_eq!(
        written, 10,
        "the quiet run's rows waited {waited:?} behind {urgent_writes} urgent writes"
    );
    // The quiet rows really competed with the stream: urgent writes went on while they waited.
    assert!(
        urgent_writes >= 1,
        "urgent writes while the quiet rows waited: {urgent_writes}"
    );
    let _ = agg.shutdown(Duration::from_secs(5)).await;
}
