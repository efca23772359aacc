//! Finishing and cancelling: final states in the database, messages after the end refused and
//! counted, finished runs leaving the registry once written, duplicate ids refused.

mod common;

use std::time::Duration;

use common::*;
use runtally::{BeginError, RecordError, RunStart, RunStatus};

#[tokio::test]
async fn finish_and_cancel_write_their_final_states() {
    let agg = aggregator(|b| b).await;
    let store = store().await;
    let start = t0();
    let end = start + chrono::Duration::days(2) + chrono::Duration::milliseconds(17);
    let mut ids = Vec::new();
    for (kind, failing) in [("completed", false), ("failed", true), ("cancelled", true)] {
        let exec = unique(kind);
        let run = agg
            .begin_run(RunStart::new(exec_id(&exec), plan_id("p"), 2).with_start_time(start))
            .expect("begin");
        let (d, r) = result("a", false, 3, 4, 1);
        run.task_finished(d, r).await.expect("a");
        let (d, r) = result("b", failing, 3, 4, 1);
        run.task_finished(d, r).await.expect("b");
        let snapshot = if kind == "cancelled" {
            run.cancel(end).await.expect("cancel")
        } else {
            run.finish(end).await.expect("finish")
        };
        assert!(snapshot.finished);
        assert_eq!(snapshot.status.as_str(), kind);
        ids.push((exec, kind));
    }
    agg.flush().await.expect("flush");
    for (exec, kind) in ids {
        let rec = store
            .execution(&exec_id(&exec))
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(rec.status.as_str(), kind);
        assert_eq!(rec.end_time, Some(end));
        assert_eq!(
            rec.duration,
            2 * 86_400_000 + 17,
            "{kind}: duration across days"
        );
        assert_eq!(rec.tasks_total, 2);
    }
    let _ = agg.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn messages_after_finish_are_refused_and_counted() {
    let agg = aggregator(|b| b).await;
    let exec = unique("after-finish");
    let run = agg
        .begin_run(RunStart::new(exec_id(&exec), plan_id("p"), 1))
        .expect("begin");
    run.finish(chrono::Utc::now()).await.expect("finish");
    let (d, r) = result("late", false, 1, 1, 1);
    let err = run
        .task_finished(d.clone(), r.clone())
        .await
        .expect_err("late result");
    assert!(
        matches!(err, RecordError::RunFinished(ref id) if id.as_str() == exec),
        "{err:?}"
    );
    assert!(matches!(
        run.try_task_finished(d, r),
        Err(RecordError::RunFinished(_))
    ));
    assert!(matches!(
        run.finish(chrono::Utc::now()).await,
        Err(RecordError::RunFinished(_))
    ));
    assert!(matches!(
        run.cancel(chrono::Utc::now()).await,
        Err(RecordError::RunFinished(_))
    ));
    assert_eq!(agg.metrics().rejected_messages, 4);
    // The final snapshot is still readable.
    assert_eq!(
        run.snapshot().await.expect("snapshot").status,
        RunStatus::Completed
    );
    let _ = agg.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn finished_runs_leave_the_registry_once_written() {
    let agg = aggregator(|b| b.with_flush_interval(Duration::from_secs(60))).await;
    let exec = exec_id(&unique("registry"));
    let run = agg
        .begin_run(RunStart::new(exec.clone(), plan_id("p"), 1))
        .expect("begin");
    assert!(agg.run(&exec).is_some());
    assert!(matches!(
        agg.begin_run(RunStart::new(exec.clone(), plan_id("p"), 1)),
        Err(BeginError::Duplicate(_))
    ));
    let (d, r) = result("a", false, 1, 1, 1);
    run.task_finished(d, r).await.expect("a");
    run.finish(chrono::Utc::now()).await.expect("finish");
    agg.flush().await.expect("flush");
    assert!(
        agg.run(&exec).is_none(),
        "durable finished run left the registry"
    );
    assert_eq!(agg.live_runs(), 0);
    assert!(
        store()
            .await
            .execution(&exec)
            .await
            .expect("read")
            .is_some(),
        "and it is in the database"
    );
    let _ = agg.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn an_end_before_the_start_is_a_typed_error() {
    let agg = aggregator(|b| b).await;
    let run = agg
        .begin_run(
            RunStart::new(exec_id(&unique("backwards")), plan_id("p"), 1).with_start_time(t0()),
        )
        .expect("begin");
    let err = run
        .finish(t0() - chrono::Duration::seconds(1))
        .await
        .expect_err("end before start");
    assert!(matches!(
        err,
        RecordError::Invalid(runtally::ModelError::EndBeforeStart { .. })
    ));
    // The run is still live and can finish properly.
    run.finish(t0() + chrono::Duration::seconds(1))
        .await
        .expect("finish");
    let _ = agg.shutdown(Duration::from_secs(10)).await;
}
