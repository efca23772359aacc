//! Two flushes in flight at once each report only the refused rows they cover: a flush of one
//! run, waiting for its lane, is not blamed for a row of another run refused in another lane
//! meanwhile. Logic only: the scripted in-memory store holds one run's writes until released and
//! refuses one task row for good.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::scripted_store::ScriptedStore;
use common::{exec_id, plan_id, result};
use runtally::{Aggregator, AggregatorConfig, FlushError, RunStart, StoreError};

const LANES: usize = 2;

/// The writer's lane for a run: FNV-1a of its id, as `writer::lane_of` documents. Used only to
/// pick two runs in different lanes; the test also checks that it got them.
fn lane(id: &str) -> usize {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % LANES as u64) as usize
}

/// Waits for `done` (checked after every yield), failing the test after 10 s.
async fn until(what: &str, done: impl Fn() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_is_not_blamed_for_another_flushs_refused_row() {
    let slow = "flushes-slow";
    let bad = (0..)
        .map(|n| format!("flushes-bad-{n}"))
        .find(|id| lane(id) != lane(slow))
        .expect("an id in the other lane");
    let store = ScriptedStore::default();
    *store.held_run.lock().expect("lock") = Some(slow.to_owned());
    store.memory.fail_with(|batch| {
        batch
            .tasks
            .iter()
            .any(|t| t.task_id.as_str() == "poison")
            .then_some(StoreError::orphaned(batch.tasks.len(), 1))
    });
    let config = AggregatorConfig::builder()
        .with_write_lanes(LANES)
        // Small writes of different lanes in flight together (by default they take turns).
        .with_min_overlap_bytes(0)
        .with_flush_interval(Duration::from_secs(3600))
        .build()
        .expect("config");
    let agg = Aggregator::start_with_store(config, Arc::new(store.clone()))
        .await
        .expect("start");

    // Flush A covers the slow run only; its write is held in its lane.
    let slow_run = agg
        .begin_run(RunStart::new(exec_id(slow), plan_id("p"), 1))
        .expect("begin");
    let (d, r) = result("fine", false, 1, 1, 0);
    slow_run.task_finished(d, r).await.expect("accepted");
    let flush_a = tokio::spawn({
        let agg = agg.clone();
        async move { agg.flush().await }
    });
    until("the slow run's write to be held", || {
        store.holding.load(Ordering::SeqCst)
    })
    .await;

    // Flush B covers a run in the other lane with a row the store refuses; it is refused while
    // A still waits.
    let bad_run = agg
        .begin_run(RunStart::new(exec_id(&bad), plan_id("p"), 2))
        .expect("begin");
    for task in ["ok", "poison"] {
        let (d, r) = result(task, false, 1, 1, 0);
        bad_run.task_finished(d, r).await.expect("accepted");
    }
    let flush_b = tokio::spawn({
        let agg = agg.clone();
        async move { agg.flush().await }
    });
    until("the poison row to be refused", || {
        agg.metrics().rows_rejected >= 1
    })
    .await;
    assert!(!flush_a.is_finished(), "A still waits for its held write");

    store.release();
    let a = flush_a.await.expect("joins");
    let b = flush_b.await.expect("joins");
    let refused = agg.metrics().rows_rejected;
    assert!(a.is_ok(), "flush A refused nothing of its own: {a:?}");
    assert!(
        matches!(b, Err(FlushError::Rejected { rows }) if rows == refused),
        "flush B covers the {refused} refused rows: {b:?}"
    );
    assert_eq!(
        store.memory.tasks_of(slow).len() + store.memory.tasks_of(&bad).len(),
        2,
        "every other row is written"
    );
    agg.shutdown(Duration::from_secs(5)).await;
}
