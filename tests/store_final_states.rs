//! Final states: a cancelled run, and a run longer than a day whose duration is the exact
//! difference in milliseconds (the seed's `duration.between(...).milliseconds` drops days).

mod common;

use chrono::Duration;
use common::*;
use runtally::model::RunStatus;

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
    let store = store().await;
    let graph = raw_graph();
    let exec = unique("long-run");
    let mut row = started(&exec, "p", 1);
    let end = t0() + Duration::days(3) + Duration::hours(5) + Duration::milliseconds(250);
    row.status = RunStatus::Completed;
    row.end_time = Some(end);
    row.duration_ms = (end - t0()).num_milliseconds();
    row.updated = end;
    write(&store, vec![row], vec![]).await;

    let expected = ((3 * 24 + 5) * 3600 * 1000 + 250) as i64;
    assert_eq!(props(&graph, &exec).await["duration"], int(expected));
    let rec = store
        .execution(&exec_id(&exec))
        .await
        .expect("read")
        .expect("found");
    assert_eq!(rec.duration, expected);
    assert_eq!(rec.start_time, Some(t0()));
    assert_eq!(rec.end_time, Some(end));
}
