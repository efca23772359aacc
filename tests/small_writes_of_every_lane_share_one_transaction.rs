//! With several write lanes, small chunks of different lanes go out as one transaction (as
//! with one lane), large ones as a write per lane, in parallel; a row refused in a combined
//! write is reported to the flush that covers it, and every other lane's rows are written.
//! Logic only: an in-memory store that records which runs each write carried.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{exec_id, plan_id, result, runs_in_distinct_lanes};
use runtally::store::MemoryStore;
use runtally::{Aggregator, AggregatorConfig, FlushError, RunStart, StoreError};

const LANES: usize = 4;

/// A memory store that records, for every write carrying task rows, the runs of those rows,
/// and refuses any write holding a task named `poison`.
fn recording_store() -> (MemoryStore, Arc<Mutex<Vec<BTreeSet<String>>>>) {
    let store = MemoryStore::new();
    let writes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&writes);
    store.fail_with(move |batch| {
        if !batch.tasks.is_empty() {
            let runs = batch.tasks.iter().map(|t| t.execution_id.to_string());
            seen.lock().expect("lock").push(runs.collect());
        }
        let poisoned = batch.tasks.iter().any(|t| t.task_id.as_str() == "poison");
        poisoned.then(|| StoreError::orphaned(batch.tasks.len(), 1))
    });
    (store, writes)
}

async fn start(store: &MemoryStore) -> Aggregator {
    let config = AggregatorConfig::builder()
        .with_write_lanes(LANES)
        // Only flush() sends the task rows, so what one flush makes of them is what is seen.
        .with_flush_interval(Duration::from_secs(3600))
        .build()
        .expect("config");
    Aggregator::start_with_store(config, Arc::new(store.clone()))
        .await
        .expect("start")
}

async fn finish_tasks(agg: &Aggregator, run: &str, tasks: &[&str], output_bytes: usize) {
    let handle = agg
        .begin_run(RunStart::new(
            exec_id(run),
            plan_id("p"),
            tasks.len() as u64,
        ))
        .expect("begin");
    for task in tasks {
        let (d, r) = result(task, false, 1, 1, 0);
        let r = r.with_output("o".repeat(output_bytes));
        handle.task_finished(d, r).await.expect("accepted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_chunks_of_four_lanes_are_written_in_one_transaction() {
    let (store, writes) = recording_store();
    let agg = start(&store).await;
    let runs = runs_in_distinct_lanes("share-small", LANES, LANES);
    for run in &runs {
        finish_tasks(&agg, run, &["a", "b"], 100).await;
    }
    agg.flush().await.expect("flushed");

    let writes = writes.lock().expect("lock").clone();
    let all: BTreeSet<String> = runs.iter().cloned().collect();
    assert_eq!(
        writes,
        vec![all],
        "one write carried the task rows of all four lanes"
    );
    for run in &runs {
        assert_eq!(store.tasks_of(run).len(), 2, "{run}'s rows are stored");
    }
    assert!(agg.shutdown(Duration::from_secs(5)).await.complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_chunks_go_one_write_per_lane() {
    let (store, writes) = recording_store();
    let agg = start(&store).await;
    let runs = runs_in_distinct_lanes("share-large", 2, LANES);
    let large = runtally::config::DEFAULT_MIN_OVERLAP_BYTES + 1;
    for run in &runs {
        finish_tasks(&agg, run, &["a"], large).await;
    }
    agg.flush().await.expect("flushed");

    let mut writes = writes.lock().expect("lock").clone();
    writes.sort();
    let mut each: Vec<BTreeSet<String>> =
        runs.iter().map(|r| BTreeSet::from([r.clone()])).collect();
    each.sort();
    assert_eq!(writes, each, "a write per lane, each with its own run");
    assert!(agg.shutdown(Duration::from_secs(5)).await.complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_refused_in_a_combined_write_is_the_flushs_and_the_other_lanes_rows_are_written() {
    let (store, writes) = recording_store();
    let agg = start(&store).await;
    let runs = runs_in_distinct_lanes("share-poison", 3, LANES);
    finish_tasks(&agg, &runs[0], &["a", "poison"], 100).await;
    finish_tasks(&agg, &runs[1], &["a", "b"], 100).await;
    finish_tasks(&agg, &runs[2], &["a"], 100).await;

    let flushed = agg.flush().await;
    assert!(
        matches!(flushed, Err(FlushError::Rejected { rows: 1 })),
        "the flush reports the one refused row: {flushed:?}"
    );
    let first = writes.lock().expect("lock").first().cloned();
    assert_eq!(
        first,
        Some(runs.iter().cloned().collect()),
        "the first attempt carried all three lanes' rows in one write"
    );
    assert_eq!(
        store.tasks_of(&runs[0]).len(),
        1,
        "only the poison row is missing"
    );
    assert_eq!(store.tasks_of(&runs[1]).len(), 2);
    assert_eq!(store.tasks_of(&runs[2]).len(), 1);
    assert_eq!(agg.metrics().rows_rejected, 1);
    assert!(agg.shutdown(Duration::from_secs(5)).await.complete);
}
