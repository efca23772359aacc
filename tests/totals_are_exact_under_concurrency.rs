//! Many runs, each with parallel task groups whose results arrive concurrently (some re-sent, as
//! an at-least-once orchestrator would): the totals in the database equal the sums over each
//! task's latest result, computed here from the input.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use runtally::{RunStart, RunStatus};

/// A task's id, whether its final result fails, its tokens in/out and tool calls, and whether
/// it is re-sent.
type Planned = (String, bool, u64, u64, u64, bool);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn totals_are_exact_with_many_runs_and_parallel_groups() {
    let agg = aggregator(|b| b.with_max_batch_rows(64)).await;
    let store = store().await;
    let prefix = unique("totals");
    let mut rng = fastrand::Rng::with_seed(42);
    let mut expected: HashMap<String, (Implied, RunStatus)> = HashMap::new();
    let mut runs = Vec::new();

    for r in 0..40 {
        let exec = format!("{prefix}-run-{r}");
        let groups: Vec<Vec<Planned>> = (0..rng.usize(2..6))
            .map(|g| {
                (0..rng.usize(1..6))
                    .map(|t| {
                        let failed = rng.u8(0..100) < 8;
                        let resend = rng.u8(0..100) < 20;
                        (
                            format!("task-{g}.{t}"),
                            failed,
                            rng.u64(1..5000),
                            rng.u64(1..3000),
                            rng.u64(0..9),
                            resend,
                        )
                    })
                    .collect()
            })
            .collect();
        // Expected: each task's LATEST result. A re-sent task first reports a failure with other
        // numbers, then its final result.
        let mut e = Implied {
            duration: 1000,
            ..Implied::default()
        };
        for (_, failed, i, o, c, _) in groups.iter().flatten() {
            if *failed {
                e.failed += 1
            } else {
                e.ok += 1
            }
            e.tokens_in += *i as i64;
            e.tokens_out += *o as i64;
            e.calls += *c as i64;
        }
        let cancel = r % 10 == 9;
        let status = if cancel {
            RunStatus::Cancelled
        } else if e.failed > 0 {
            RunStatus::Failed
        } else {
            RunStatus::Completed
        };
        let total = groups.iter().map(Vec::len).sum::<usize>() as u64;
        e.total = total as i64;
        expected.insert(exec.clone(), (e, status));
        let handle = agg
            .begin_run(RunStart::new(exec_id(&exec), plan_id("p"), total).with_start_time(t0()))
            .expect("begin");
        runs.push(tokio::spawn(async move {
            for group in groups {
                let sends = group.into_iter().map(|(t, failed, i, o, c, resend)| {
                    let handle = handle.clone();
                    tokio::spawn(async move {
                        if resend {
                            let (d, first) = result(&t, true, i + 7, o + 7, c + 1);
                            handle.task_finished(d, first).await.expect("first attempt");
                        }
                        let (d, last) = result(&t, failed, i, o, c);
                        handle
                            .task_finished(d.clone(), last.clone())
                            .await
                            .expect("result");
                        if resend {
                            // At-least-once delivery: the same final result twice.
                            handle.task_finished(d, last).await.expect("duplicate");
                        }
                    })
                });
                for send in futures_util::future::join_all(sends).await {
                    send.expect("task sender");
                }
            }
            let end = t0() + chrono::Duration::seconds(1);
            if cancel {
                handle.cancel(end).await.expect("cancel");
            } else {
                handle.finish(end).await.expect("finish");
            }
        }));
    }
    for run in runs {
        run.await.expect("run");
    }
    agg.flush().await.expect("flush");

    assert_implied(&store, &raw_graph(), &expected).await;
    let report = agg.shutdown(Duration::from_secs(30)).await;
    assert!(report.complete);
    assert_eq!(report.metrics.rows_rejected, 0);
}
