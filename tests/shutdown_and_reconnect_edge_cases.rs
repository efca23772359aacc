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
use std::time::Duration;

use common::scripted_store::{Ping, ScriptedStore};
use common::*;
use runtally::{Aggregator, AggregatorConfig, FlushError, RetryPolicy, RunStart};

fn config(write_timeout: Duration) -> AggregatorConfig {
    config_flushing_every(write_timeout, Duration::from_millis(10))
}

fn config_flushing_every(write_timeout: Duration, flush_interval: Duration) -> AggregatorConfig {
    AggregatorConfig::builder()
        .with_flush_interval(flush_interval)
        .with_write_timeout(write_timeout)
        .with_retry(RetryPolicy::new(
            Duration::from_millis(10),
            Duration::from_millis(50),
        ))
        .build()
        .expect("config")
}

/// How long a test waits for a write to reach the store before it fails.
const WRITE_BEGINS_WITHIN: Duration = Duration::from_secs(10);

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
    let agg =
        Aggregator::start_with_store(config(Duration::from_secs(300)), Arc::new(store.clone()))
            .await
            .expect("start");
    one_result(&agg, "hang").await;
    // The flush timer has started the (hanging) write: it is in flight before the deadline is
    // set, so only the deadline, not a budget fixed when it began, can end it.
    store.wait_for_writes(1, WRITE_BEGINS_WITHIN).await;
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        agg.shutdown(Duration::from_millis(500)),
    )
    .await
    .expect("shutdown ends at its deadline, not at the 300 s write timeout");
    assert!(!report.complete);
    assert_eq!(report.unwritten_rows(), 2, "the run row and the task row");
}

#[tokio::test]
async fn a_flush_cut_short_by_shutdown_is_an_error() {
    let store = ScriptedStore::default();
    store.hang.store(true, Ordering::SeqCst);
    // No flush timer within the test's life: only the flush below starts a write.
    let agg = Aggregator::start_with_store(
        config_flushing_every(Duration::from_secs(300), Duration::from_secs(3600)),
        Arc::new(store.clone()),
    )
    .await
    .expect("start");
    one_result(&agg, "cut").await;
    let flushing = tokio::spawn({
        let agg = agg.clone();
        async move { agg.flush().await }
    });
    // The flush's own write has reached the store (and hangs): the flush is waiting on it
    // when shutdown begins.
    store.wait_for_writes(1, WRITE_BEGINS_WITHIN).await;
    assert!(
        !flushing.is_finished(),
        "the write hangs, so the flush waits"
    );
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        agg.shutdown(Duration::from_millis(300)),
    )
    .await
    .expect("shutdown ends at its deadline");
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
