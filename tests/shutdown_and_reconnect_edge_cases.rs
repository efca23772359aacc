//! Actor logic at the edges of shutdown and reconnection, with a store that hangs or refuses on
//! cue (no database: these tests are about what the writer does when the store misbehaves, not
//! about persistence).
//!
//! - A write hanging in flight is abandoned at the shutdown deadline, not at `write_timeout`.
//! - A `flush()` that shutdown cuts short is an error, never `Ok`.
//! - Of two `shutdown` calls from clones, only one reports the rows and claims completeness,
//!   and a cancelled first call leaves them for the next.
//! - A permanent error while reconnecting does not stop the writer from trying again.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::scripted_store::{Ping, ScriptedStore};
use common::*;
use runtally::{Aggregator, AggregatorConfig, FlushError, RetryPolicy, RunStart};

fn config(write_timeout: Duration) -> AggregatorConfig {
    AggregatorConfig::builder()
        .with_flush_interval(Duration::from_millis(10))
        .with_write_timeout(write_timeout)
        .with_retry(RetryPolicy::new(
            Duration::from_millis(10),
            Duration::from_millis(50),
        ))
        .build()
        .expect("config")
}

async fn one_result(agg: &Aggregator, name: &str) {
    let run = agg
        .begin_run(RunStart::new(exec_id(name), plan_id("p"), 1))
        .expect("begin");
    let (d, r) = result("t1", false, 1, 2, 3);
    run.task_finished(d, r).await.expect("accepted");
}

#[tokio::test]
async fn a_write_hanging_in_flight_is_abandoned_at_the_deadline() {
    let store = ScriptedStore::default();
    store.hang.store(true, Ordering::SeqCst);
    // A write budget far beyond the test's patience: only the shutdown deadline can end it.
    let agg = Aggregator::start_with_store(config(Duration::from_secs(300)), Arc::new(store))
        .await
        .expect("start");
    one_result(&agg, "hang").await;
    // Let the flush timer start the (hanging) write before the deadline is set.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let report = agg.shutdown(Duration::from_millis(500)).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "shutdown took {took:?}");
    assert!(!report.complete);
    assert_eq!(report.unwritten_rows(), 2, "the run row and the task row");
}

#[tokio::test]
async fn a_flush_cut_short_by_shutdown_is_an_error() {
    let store = ScriptedStore::default();
    store.hang.store(true, Ordering::SeqCst);
    let agg = Aggregator::start_with_store(config(Duration::from_secs(300)), Arc::new(store))
        .await
        .expect("start");
    one_result(&agg, "cut").await;
    let flushing = tokio::spawn({
        let agg = agg.clone();
        async move { agg.flush().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !flushing.is_finished(),
        "the write hangs, so the flush waits"
    );
    let report = agg.shutdown(Duration::from_millis(300)).await;
    assert!(!report.complete);
    let flushed = flushing.await.expect("flush task");
    assert!(
        matches!(flushed, Err(FlushError::ShuttingDown)),
        "the rows were not written: {flushed:?}"
    );
}

#[tokio::test]
async fn of_two_shutdowns_only_one_reports_the_rows() {
    let store = ScriptedStore::default();
    let memory = store.memory.clone();
    let agg = Aggregator::start_with_store(config(Duration::from_secs(5)), Arc::new(store))
        .await
        .expect("start");
    one_result(&agg, "twice").await;
    let (a, b) = tokio::join!(
        agg.clone().shutdown(Duration::from_secs(5)),
        agg.shutdown(Duration::from_secs(5))
    );
    let complete = [a.complete, b.complete];
    assert_eq!(
        complete.iter().filter(|c| **c).count(),
        1,
        "exactly one report drained everything: {complete:?}"
    );
    assert_eq!(a.unwritten_rows() + b.unwritten_rows(), 0);
    let exec = memory.execution("twice").expect("run written");
    assert_eq!(exec.tokens_input, 1);
    assert_eq!(memory.tasks_of("twice").len(), 1);
}

#[tokio::test]
async fn a_permanent_error_while_reconnecting_is_retried() {
    let store = ScriptedStore::default();
    // Unreachable at start (so start succeeds and keeps trying), then refused twice, then fine.
    *store.pings.lock().expect("script lock") =
        vec![Ping::Unreachable, Ping::Refused, Ping::Refused];
    let memory = store.memory.clone();
    let pings = Arc::clone(&store.pinged);
    let agg = Aggregator::start_with_store(config(Duration::from_secs(5)), Arc::new(store))
        .await
        .expect("a retriable first failure does not fail start");
    one_result(&agg, "reconnect").await;
    let flushed = tokio::time::timeout(Duration::from_secs(20), agg.flush()).await;
    assert!(
        matches!(flushed, Ok(Ok(()))),
        "written once the server recovers: {flushed:?}"
    );
    assert!(pings.load(Ordering::SeqCst) >= 4, "kept pinging");
    assert_eq!(memory.execution("reconnect").map(|e| e.tool_calls), Some(3));
    let report = agg.shutdown(Duration::from_secs(5)).await;
    assert!(report.complete);
}

#[tokio::test]
async fn a_cancelled_shutdown_can_be_collected_by_a_later_call() {
    let store = ScriptedStore::default();
    store.hang.store(true, Ordering::SeqCst);
    let agg = Aggregator::start_with_store(config(Duration::from_secs(300)), Arc::new(store))
        .await
        .expect("start");
    one_result(&agg, "cancelled").await;
    // The caller gives up on the first shutdown long before its deadline...
    let first = tokio::time::timeout(
        Duration::from_millis(50),
        agg.clone().shutdown(Duration::from_millis(500)),
    )
    .await;
    assert!(first.is_err(), "the first call was cancelled");
    // ...and asks again: the shutdown went on without it, and its rows are still reported.
    let report = agg.shutdown(Duration::from_secs(5)).await;
    assert!(!report.complete);
    assert_eq!(report.unwritten_rows(), 2, "the run row and the task row");
}
