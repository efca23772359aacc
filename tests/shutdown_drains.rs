//! `shutdown` stops accepting and writes everything accepted before it returns, even with a batch
//! timer that would never have fired.

mod common;

use std::time::Duration;

use common::*;
use runtally::{BeginError, RunStart};

#[tokio::test]
async fn shutdown_writes_everything_accepted() {
    let agg = aggregator(|b| {
        b.with_flush_interval(Duration::from_secs(3600))
            .with_max_batch_rows(100_000)
            .with_max_pending_rows(100_000)
    })
    .await;
    let prefix = unique("drain");
    let mut handles = Vec::new();
    for r in 0..20 {
        let run = agg
            .begin_run(RunStart::new(
                exec_id(&format!("{prefix}-{r}")),
                plan_id("p"),
                30,
            ))
            .expect("begin");
        for t in 0..30 {
            let (d, res) = result(&format!("t{t}"), false, 2, 3, 1);
            run.task_finished(d, res).await.expect("task");
        }
        if r % 2 == 0 {
            run.finish(chrono::Utc::now()).await.expect("finish");
        }
        handles.push(run);
    }
    let probe = agg.clone();
    let report = agg.shutdown(Duration::from_secs(60)).await;
    assert!(report.complete, "{:?}", report.unwritten_rows());
    assert_eq!(report.unfinished_runs.len(), 10);
    assert_eq!(report.metrics.task_rows_written, 600);
    assert_eq!(report.metrics.pending_rows, 0);
    assert!(matches!(
        probe.begin_run(RunStart::new(exec_id(&unique("late")), plan_id("p"), 1)),
        Err(BeginError::ShuttingDown)
    ));

    let store = store().await;
    for r in 0..20 {
        let id = exec_id(&format!("{prefix}-{r}"));
        let rec = store.execution(&id).await.expect("read").expect("stored");
        assert_eq!(rec.tasks_successful, 30);
        assert_eq!(rec.tokens_input, 60);
        assert_eq!(store.task_executions(&id).await.expect("tasks").len(), 30);
        let expected = if r % 2 == 0 { "completed" } else { "running" };
        assert_eq!(rec.status.as_str(), expected);
    }
}
