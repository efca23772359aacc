//! One run with 100,000 tasks goes through: every task node written once, the counters exact.

mod common;

use std::time::{Duration, Instant};

use common::*;
use runtally::{RunStart, TaskDefinition, TaskResult};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_a_hundred_thousand_tasks_is_written_whole() {
    let agg = aggregator(|b| b.with_max_batch_rows(1000)).await;
    let exec = exec_id(&unique("huge-run"));
    let run = agg
        .begin_run(RunStart::new(exec.clone(), plan_id("p"), 100_000))
        .expect("begin");
    let started = Instant::now();
    for i in 0..100_000u64 {
        let id = task_id(&format!("t{i}"));
        let result = if i % 1000 == 999 {
            TaskResult::failure(id.clone(), "x")
        } else {
            TaskResult::success(id.clone())
        };
        run.task_finished(
            TaskDefinition::new(id),
            result.with_tokens(i % 7, 1).with_tool_calls(1),
        )
        .await
        .expect("accepted");
    }
    run.finish(chrono::Utc::now()).await.expect("finish");
    agg.flush().await.expect("flush");
    let seconds = started.elapsed().as_secs_f64();
    let report = agg.shutdown(Duration::from_secs(60)).await;
    eprintln!(
        "100,000 tasks in {seconds:.1} s; {} batches, flush p50 {} ms, p99 {} ms, max {} ms",
        report.metrics.batches_written,
        report.metrics.flush_latency.p50_ms,
        report.metrics.flush_latency.p99_ms,
        report.metrics.flush_latency.max_ms
    );
    let store = store().await;
    let rec = store.execution(&exec).await.expect("read").expect("stored");
    assert_eq!((rec.tasks_successful, rec.tasks_failed), (99_900, 100));
    assert_eq!(rec.tool_calls, 100_000);
    assert_eq!(
        rec.tokens_input,
        (0..100_000i64).map(|i| i % 7).sum::<i64>()
    );
    assert_eq!(rec.status.as_str(), "failed");
    let graph = raw_graph();
    let mut rows = graph
        .execute(
            neo4rs::query(
                "MATCH (te:Node) WHERE te.type = 'task_execution' AND te.executionId = $id \
                 RETURN count(te) AS n",
            )
            .param("id", exec.as_str()),
        )
        .await
        .expect("count");
    let n: i64 = rows
        .next()
        .await
        .expect("row")
        .expect("one")
        .get("n")
        .expect("n");
    assert_eq!(n, 100_000);
}
