//! `reconcile_stale` with an age that no timestamp can reach back to is refused, instead of being
//! taken as zero (which would mark every other process's live runs interrupted), and after
//! shutdown it says so instead of a retriable timeout. Logic only: an in-memory store shared by
//! two aggregators stands for the database.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{exec_id, plan_id};
use runtally::store::MemoryStore;
use runtally::{Aggregator, AggregatorConfig, ReconcileError, RunStart, RunStatus};

async fn aggregator(store: &Arc<MemoryStore>, instance: &str) -> Aggregator {
    let config = AggregatorConfig::builder()
        .with_instance_id(instance)
        .build()
        .expect("config");
    Aggregator::start_with_store(config, Arc::clone(store) as _)
        .await
        .expect("start")
}

#[tokio::test]
async fn an_age_out_of_range_marks_nothing() {
    let store = Arc::new(MemoryStore::new());
    let other = aggregator(&store, "other-process").await;
    let id = exec_id("reconcile-range-live");
    let _run = other
        .begin_run(RunStart::new(id.clone(), plan_id("p"), 3))
        .expect("begin");
    other.flush().await.expect("flush");
    let me = aggregator(&store, "this-process").await;

    for age in [Duration::MAX, Duration::from_secs(u64::MAX / 1000)] {
        let err = me.reconcile_stale(age).await.expect_err("out of range");
        assert!(
            matches!(err, ReconcileError::OutOfRange(a) if a == age),
            "{err:?}"
        );
    }
    assert_eq!(
        store.execution(id.as_str()).expect("stored").status,
        RunStatus::Running,
        "the other process's live run is left alone"
    );
    assert!(!store.interrupted(id.as_str()));
    // A real age still works, and finds nothing stale.
    assert!(me
        .reconcile_stale(Duration::from_secs(3600))
        .await
        .expect("reconcile")
        .is_empty());

    let after = me.clone();
    assert!(me.shutdown(Duration::from_secs(5)).await.complete);
    assert!(matches!(
        after.reconcile_stale(Duration::from_secs(1)).await,
        Err(ReconcileError::ShuttingDown)
    ));
    other.shutdown(Duration::from_secs(5)).await;
}
