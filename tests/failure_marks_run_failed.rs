//! A failing task makes `status = 'failed'` readable in the database at once: long before the
//! batch timer (set to a minute here) would have flushed. A later success of another task does
//! not clear it.

mod common;

use std::time::Duration;

use common::*;
use runtally::{RunStart, RunStatus};

#[tokio::test]
async fn a_failing_task_is_visible_long_before_the_batch_timer() {
    let agg = aggregator(|b| {
        b.with_flush_interval(Duration::from_secs(60))
            .with_max_batch_rows(10_000)
            .with_max_pending_rows(10_000)
    })
    .await;
    let store = store().await;
    let exec = unique("urgent");
    let run = agg
        .begin_run(RunStart::new(exec_id(&exec), plan_id("p"), 3))
        .expect("begin");
    let (d, ok) = result("a", false, 1, 1, 1);
    run.task_finished(d, ok).await.expect("ok");
    let (d, bad) = result("b", true, 1, 1, 1);
    run.task_finished(d, bad).await.expect("failure");

    let took = eventually(Duration::from_secs(5), || async {
        matches!(store.execution(&exec_id(&exec)).await, Ok(Some(r)) if r.status == RunStatus::Failed)
    })
    .await
    .expect("status='failed' readable within 5 s, with a 60 s batch timer");
    assert!(took < Duration::from_secs(5));

    // The failed task itself is written with its FAILED_TASK edge soon after (a later flush).
    agg.flush().await.expect("flush");
    let (d, later) = result("c", false, 1, 1, 1);
    run.task_finished(d, later).await.expect("later success");
    agg.flush().await.expect("flush");
    let rec = store
        .execution(&exec_id(&exec))
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(
        rec.status,
        RunStatus::Failed,
        "a success of another task does not un-fail"
    );
    assert_eq!(
        run.snapshot().await.expect("snapshot").status,
        RunStatus::Failed
    );
    let graph = raw_graph();
    let te = format!("{exec}-b");
    assert!(edges(&graph, &te)
        .await
        .iter()
        .any(|(_, t, _)| t == "FAILED_TASK"));
    let _ = agg.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_re_sent_success_clears_that_tasks_failure() {
    let agg = aggregator(|b| b).await;
    let store = store().await;
    let exec = unique("cleared");
    let run = agg
        .begin_run(RunStart::new(exec_id(&exec), plan_id("p"), 1))
        .expect("begin");
    let (d, bad) = result("a", true, 5, 5, 1);
    run.task_finished(d.clone(), bad).await.expect("failure");
    assert_eq!(
        run.snapshot().await.expect("snap").status,
        RunStatus::Failed
    );
    let (_, good) = result("a", false, 7, 3, 2);
    run.task_finished(d, good).await.expect("retry succeeded");
    let done = run.finish(chrono::Utc::now()).await.expect("finish");
    assert_eq!(done.status, RunStatus::Completed);
    agg.flush().await.expect("flush");
    let rec = store
        .execution(&exec_id(&exec))
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(rec.status, RunStatus::Completed);
    assert_eq!((rec.tasks_successful, rec.tasks_failed), (1, 0));
    assert_eq!(
        (rec.tokens_input, rec.tokens_output, rec.tool_calls),
        (7, 3, 2)
    );
    let graph = raw_graph();
    assert!(!edges(&graph, &format!("{exec}-a"))
        .await
        .iter()
        .any(|(_, t, _)| t == "FAILED_TASK"));
    let _ = agg.shutdown(Duration::from_secs(10)).await;
}
