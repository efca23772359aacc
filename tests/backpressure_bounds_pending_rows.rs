//! With pending writes at `max_pending_rows`, `task_finished` waits and `try_task_finished`
//! returns `Full`; nothing is dropped, and everything is written once the writes drain.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use runtally::store::MemoryStore;
use runtally::{Aggregator, AggregatorConfig, RecordError, RunStart, StoreError};

/// An aggregator bounded at 4 pending task rows (2 per batch) over an in-memory store whose
/// writes fail, retriably, until the returned gate is opened.
async fn gated_aggregator() -> (Aggregator, MemoryStore, Arc<AtomicBool>) {
    let store = MemoryStore::new();
    let open = Arc::new(AtomicBool::new(false));
    let gate = Arc::clone(&open);
    store.fail_with(move |_| {
        (!gate.load(Ordering::SeqCst)).then(|| StoreError::timeout(Duration::from_millis(1)))
    });
    let config = AggregatorConfig::builder()
        .with_max_batch_rows(2)
        .with_max_pending_rows(4)
        .with_flush_interval(Duration::from_millis(5))
        .with_retry(runtally::RetryPolicy::new(
            Duration::from_millis(5),
            Duration::from_millis(10),
        ))
        .build()
        .expect("config");
    let agg = Aggregator::start_with_store(config, Arc::new(store.clone()))
        .await
        .expect("start");
    (agg, store, open)
}

/// Actor logic with an in-memory store whose writes fail (retriably) until the test opens the
/// gate: the bound holds exactly.
#[tokio::test]
async fn at_the_bound_senders_wait_and_try_gets_full() {
    let (agg, store, open) = gated_aggregator().await;
    let run = agg
        .begin_run(RunStart::new(exec_id("bp"), plan_id("p"), 10))
        .expect("begin");
    for t in 0..4 {
        let (d, r) = result(&format!("t{t}"), false, 1, 1, 1);
        run.task_finished(d, r).await.expect("within the bound");
    }
    let (d, r) = result("t4", false, 1, 1, 1);
    assert!(matches!(
        run.try_task_finished(d.clone(), r.clone()),
        Err(RecordError::Full)
    ));
    assert_eq!(agg.metrics().full_rejections, 1);
    let waiting = tokio::spawn({
        let run = run.clone();
        async move { run.task_finished(d, r).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "task_finished waits at the bound");
    let pending = agg.metrics().pending_rows;
    // Four task rows (the bound), and execution rows beside them: one with each sealed chunk
    // of two (the run's state, or a placeholder where the run spans chunks) and one open.
    assert!(
        pending <= 4 + 4 / 2 + 1,
        "{pending}: four task rows, a run row with each chunk of two, and one open"
    );

    open.store(true, Ordering::SeqCst);
    waiting
        .await
        .expect("join")
        .expect("accepted once rows drained");
    run.finish(chrono::Utc::now()).await.expect("finish");
    agg.flush().await.expect("flush");
    assert_eq!(store.task_count(), 5);
    let row = store.execution("bp").expect("run written");
    assert_eq!(row.tasks_successful, 5);
    assert!(agg.metrics().retries > 0);
    let _ = agg.shutdown(Duration::from_secs(5)).await;
}

/// Against the live database: a bound of 2 with 300 results sent at once from 30 runs. Every
/// result is written exactly once and the pending gauge never passes the bound by more than the
/// runs' own execution rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tiny_bound_slows_senders_but_loses_nothing() {
    let agg = aggregator(|b| b.with_max_batch_rows(2).with_max_pending_rows(2)).await;
    let prefix = unique("tiny");
    let watcher = {
        let agg = agg.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            for _ in 0..2000 {
                peak = peak.max(agg.metrics().pending_rows);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            peak
        })
    };
    let mut sends = Vec::new();
    for r in 0..30 {
        let run = agg
            .begin_run(RunStart::new(
                exec_id(&format!("{prefix}-{r}")),
                plan_id("p"),
                10,
            ))
            .expect("begin");
        for t in 0..10 {
            let run = run.clone();
            sends.push(tokio::spawn(async move {
                let (d, res) = result(&format!("t{t}"), false, 1, 2, 3);
                run.task_finished(d, res).await
            }));
        }
    }
    for send in sends {
        send.await.expect("join").expect("accepted");
    }
    agg.flush().await.expect("flush");
    let store = store().await;
    for r in 0..30 {
        let id = exec_id(&format!("{prefix}-{r}"));
        let rec = store.execution(&id).await.expect("read").expect("stored");
        assert_eq!(
            (rec.tasks_successful, rec.tokens_output, rec.tool_calls),
            (10, 20, 30)
        );
        assert_eq!(store.task_executions(&id).await.expect("tasks").len(), 10);
    }
    watcher.abort();
    let report = agg.shutdown(Duration::from_secs(30)).await;
    assert!(report.complete);
    assert_eq!(report.metrics.task_rows_written, 300);
}

/// A sender waiting at the bound when shutdown begins is refused once it gets its slot, rather
/// than told `Ok` for a result the closed writer would never take.
#[tokio::test]
async fn a_sender_waiting_at_the_bound_when_shutdown_begins_is_refused() {
    let (agg, store, open) = gated_aggregator().await;
    let run = agg
        .begin_run(RunStart::new(exec_id("bp-shutdown"), plan_id("p"), 10))
        .expect("begin");
    for t in 0..4 {
        let (d, r) = result(&format!("t{t}"), false, 1, 1, 1);
        run.task_finished(d, r).await.expect("within the bound");
    }
    let waiting = tokio::spawn({
        let run = run.clone();
        async move {
            let (d, r) = result("t4", false, 1, 1, 1);
            run.task_finished(d, r).await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "task_finished waits at the bound");
    let shutting_down = tokio::spawn(agg.clone().shutdown(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The database comes back: the writer drains and frees the waiting sender's slot.
    open.store(true, Ordering::SeqCst);
    let late = waiting.await.expect("join");
    assert!(
        matches!(late, Err(RecordError::ShuttingDown)),
        "refused, not lost: {late:?}"
    );
    let report = shutting_down.await.expect("join");
    assert!(report.complete);
    assert_eq!(store.task_count(), 4, "everything accepted is written");
    assert_eq!(
        report.metrics.rejected_messages, 0,
        "nothing refused after Ok"
    );
}
