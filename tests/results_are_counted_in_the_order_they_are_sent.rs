//! `task_finished` returns as soon as the result is in its run's queue. That must never
//! be visible to the caller: a snapshot, finish or flush sent afterwards includes every result
//! sent before it, and a run near the Bolt integer limit still gets typed answers.
//!
//! Actor logic only (an in-memory store): persistence is proven by the database tests.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use runtally::error::ModelError;
use runtally::store::MemoryStore;
use runtally::{Aggregator, AggregatorConfig, RecordError, RunStart};

async fn aggregator(store: &MemoryStore) -> Aggregator {
    let config = AggregatorConfig::builder()
        .with_run_mailbox(8)
        .build()
        .expect("config");
    Aggregator::start_with_store(config, Arc::new(store.clone()))
        .await
        .expect("start")
}

#[tokio::test]
async fn a_snapshot_after_task_finished_includes_every_result_sent_before_it() {
    let store = MemoryStore::new();
    let agg = aggregator(&store).await;
    let run = agg
        .begin_run(RunStart::new(exec_id("ordered"), plan_id("p"), 3000))
        .expect("begin");
    for t in 0..3000u64 {
        let (d, r) = result(&format!("t{t}"), t % 100 == 7, 2, 1, 1);
        run.task_finished(d, r).await.expect("accepted");
        if t % 500 == 499 {
            // Right after the call returns, without any flush in between.
            let snap = run.snapshot().await.expect("snapshot");
            let sent = (t + 1) as i64;
            assert_eq!(
                snap.totals.tasks_successful + snap.totals.tasks_failed,
                sent
            );
            assert_eq!(snap.totals.tokens_input, 2 * sent);
        }
    }
    let last = run.finish(chrono::Utc::now()).await.expect("finish");
    assert_eq!(last.totals.tasks_failed, 30);
    assert_eq!(last.totals.tasks_successful, 2970);
    agg.flush().await.expect("flush");
    assert_eq!(store.tasks_of("ordered").len(), 3000);
    assert_eq!(store.execution("ordered").map(|e| e.tool_calls), Some(3000));
    let _ = agg.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_run_total_passing_the_bolt_limit_is_still_a_typed_error() {
    let store = MemoryStore::new();
    let agg = aggregator(&store).await;
    let run = agg
        .begin_run(RunStart::new(exec_id("near-limit"), plan_id("p"), 3))
        .expect("begin");
    let (d, r) = result("a", false, 0, 0, 0);
    run.task_finished(d, r.with_tool_calls(i64::MAX as u64 - 1))
        .await
        .expect("fits");
    let (d, r) = result("b", false, 0, 0, 0);
    let err = run
        .task_finished(d, r.with_tool_calls(2))
        .await
        .expect_err("the run's tool calls would pass i64::MAX");
    assert!(
        matches!(
            err,
            RecordError::Invalid(ModelError::CountOutOfRange { .. })
        ),
        "{err:?}"
    );
    // Replacing task a with a small value brings the run back into range: answered exactly.
    let (d, r) = result("a", false, 0, 0, 1);
    run.task_finished(d, r).await.expect("replaces a");
    let (d, r) = result("b", false, 0, 0, 2);
    run.task_finished(d, r).await.expect("now fits");
    let snap = run.snapshot().await.expect("snapshot");
    assert_eq!(snap.totals.tool_calls, 3);
    assert_eq!(agg.metrics().rejected_messages, 1);
    let _ = agg.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_racing_finish_are_either_counted_or_refused_to_their_sender() {
    let store = MemoryStore::new();
    let config = AggregatorConfig::builder()
        .with_run_mailbox(4096)
        .build()
        .expect("config");
    let agg = Aggregator::start_with_store(config, Arc::new(store.clone()))
        .await
        .expect("start");
    let mut sent = 0i64;
    let mut refused_here = 0u64;
    let mut counted = 0i64;
    for round in 0..20 {
        let run = agg
            .begin_run(RunStart::new(
                exec_id(&format!("race-{round}")),
                plan_id("p"),
                2000,
            ))
            .expect("begin");
        // `finish` goes out first; the results follow without waiting, so some are queued
        // while it is on its way and some arrive after the run closed.
        let finishing = tokio::spawn({
            let run = run.clone();
            async move { run.finish(chrono::Utc::now()).await }
        });
        tokio::task::yield_now().await;
        for t in 0..1000 {
            let (d, r) = result(&format!("t{t}"), false, 1, 1, 1);
            match run.try_task_finished(d, r) {
                Ok(()) => sent += 1,
                Err(RecordError::RunFinished(_)) => {
                    sent += 1;
                    refused_here += 1;
                }
                // Not taken at all (counted as a full rejection): the caller keeps the result.
                Err(RecordError::Full) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        let last = finishing.await.expect("task").expect("finish");
        counted += last.totals.tasks_successful;
    }
    agg.flush().await.expect("flush");
    // A result refused behind its sender's back is counted when its run actor takes it, or
    // stops with it still queued: possibly after the finish answered. Until then it is neither
    // counted by its run nor refused, so waiting until every result sent is one or the other
    // makes sure every late refusal is in `rejected_messages` before they are compared (and
    // a result lost silently fails here).
    let accounted = eventually(Duration::from_secs(10), || async {
        counted + agg.metrics().rejected_messages as i64 >= sent
    })
    .await;
    let rejected = agg.metrics().rejected_messages;
    assert!(
        accounted.is_some(),
        "every result is counted by its run or refused: {counted} counted, {rejected} refused, \
         {sent} sent"
    );
    // Nothing is refused behind the caller's back: the run closes its queue as it finishes,
    // so each result was either counted or refused to its sender.
    assert_eq!(
        refused_here, rejected,
        "every refusal was the sender's own answer"
    );
    assert!(
        refused_here > 0,
        "the race happened: some results came after the finish"
    );
    assert_eq!(
        counted + rejected as i64,
        sent,
        "every result is counted by its run or refused"
    );
    let _ = agg.shutdown(Duration::from_secs(5)).await;
}
