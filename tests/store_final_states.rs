//! Final states: a cancelled run, and a run longer than a day whose duration, computed by
//! runtally when the run finishes, is the exact difference in milliseconds (the seed's
//! `duration.between(...).milliseconds` drops days).

mod common;

use chrono::{Duration, DurationRound};
use common::*;
use runtally::model::RunStatus;
use runtally::RunStart;

#[tokio::test]
async fn a_cancelled_run_is_stored_cancelled_with_end_and_duration() {
    let store = store().await;
    let exec = unique("cancelled");
    let mut row = started(&exec, "p", 4);
    let end = t0() + Duration::seconds(90);
    row.status = RunStatus::Cancelled;
    row.tasks_successful = 2;
    row.end_time = Some(end);
    row.duration_ms = 90_000;
    row.updated = end;
    write(&store, vec![row], vec![]).await;

    let rec = store
        .execution(&exec_id(&exec))
        .await
        .expect("read")
        .expect("found");
    assert_eq!(rec.status, RunStatus::Cancelled);
    assert_eq!(rec.end_time, Some(end));
    assert_eq!(rec.duration, 90_000);
    assert_eq!(rec.tasks_successful, 2);
    assert_eq!(rec.tasks_total, 4);
}

#[tokio::test]
async fn a_run_longer_than_a_day_has_its_full_duration() {
    let agg = aggregator(|b| b).await;
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("long-run");
    // Three days, five hours and 250 ms, ending now (whole milliseconds, as stored).
    let span = Duration::days(3) + Duration::hours(5) + Duration::milliseconds(250);
    let end = chrono::Utc::now()
        .duration_trunc(Duration::milliseconds(1))
        .expect("truncate to milliseconds");
    let start = end - span;
    let run = agg
        .begin_run(RunStart::new(exec_id(&exec), plan_id("p"), 1).with_start_time(start))
        .expect("begin");
    let (d, r) = result("a", false, 1, 1, 1);
    run.task_finished(d, r).await.expect("accepted");
    // runtally computes the duration from the run's start and this end.
    let last = run.finish(end).await.expect("finish");
    assert_eq!(last.status, RunStatus::Completed);
    agg.flush().await.expect("flush");

    let expected: i64 = ((3 * 24 + 5) * 3600 * 1000) + 250;
    assert_eq!(props(&graph, &exec).await["duration"], int(expected));
    let rec = store
        .execution(&exec_id(&exec))
        .await
        .expect("read")
        .expect("found");
    assert_eq!(rec.duration, expected);
    assert_eq!(rec.status, RunStatus::Completed);
    assert_eq!(rec.start_time, Some(start));
    assert_eq!(rec.end_time, Some(end));
    let report = agg.shutdown(std::time::Duration::from_secs(10)).await;
    assert!(report.complete);
}
