//! `max_pending_bytes` bounds memory during a database outage whatever the output size: with
//! 2,000 results of 200 KB (400 MB) and a 64 MiB bound, the process's resident memory stays
//! under the bound plus a margin while senders wait, and once the database is back every value
//! is exact and no batch was refused for its size.
//!
//! Alone in its file: the test reads its own process's peak resident memory.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::private_db::PrivateDb;
use common::*;
use runtally::{AggregatorConfig, RetryPolicy, RunStart};
use runtally_cli::workload::WorkloadSpec;

/// What a row costs beyond its weight, and what the test itself holds (the spec, one run's
/// results being built, the driver): documented in the crate docs' delivery guarantees.
const MARGIN_MIB: f64 = 64.0;

fn rss_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .expect("field")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("a number");
    kb / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_under_max_pending_bytes_during_an_outage_and_every_value_is_exact() {
    init_tracing();
    let db = Arc::new(PrivateDb::start("bytes"));
    const BOUND: usize = 64 << 20;
    let config = AggregatorConfig::builder()
        .with_neo4j(db.neo4j())
        .with_max_pending_bytes(BOUND)
        .with_flush_interval(Duration::from_millis(20))
        .with_write_timeout(Duration::from_secs(5))
        .with_retry(RetryPolicy::new(
            Duration::from_millis(20),
            Duration::from_millis(200),
        ))
        .build()
        .expect("config");
    let agg = runtally::Aggregator::start(config).await.expect("start");
    let spec = WorkloadSpec {
        runs: 20,
        tasks: 100,
        fail_rate: 0.05,
        output_bytes: 200_000,
        prefix: unique("bytes"),
        cancel_every: 0,
        ..WorkloadSpec::default()
    };
    // The expected values from a small copy of the stream (same ids and counts, tiny outputs).
    let want = implied(
        &WorkloadSpec {
            output_bytes: 1,
            ..spec.clone()
        }
        .events()
        .expect("events"),
    );
    db.stop();
    let baseline = rss_mib("VmRSS:");

    // Runs are generated as they are sent, as an orchestrator would, 4 at a time.
    let sender = {
        let agg = agg.clone();
        let spec = spec.clone();
        tokio::spawn(async move {
            let mut next = 0;
            while next < spec.runs {
                let mut batch = Vec::new();
                for r in next..(next + 4).min(spec.runs) {
                    let agg = agg.clone();
                    let spec = spec.clone();
                    batch.push(tokio::spawn(async move {
                        // The run's ids and times from a copy with tiny outputs; each result is
                        // built just before it is sent.
                        let run = WorkloadSpec {
                            output_bytes: 1,
                            ..spec.clone()
                        }
                        .run(r)
                        .expect("run");
                        let handle = agg
                            .begin_run(
                                RunStart::new(
                                    run.execution_id.clone(),
                                    run.plan_id.clone(),
                                    run.total_tasks,
                                )
                                .with_start_time(run.start_time),
                            )
                            .expect("begin");
                        for i in 0..run.tasks.len() {
                            let (task, result) = spec.task(r, i).expect("task");
                            handle.task_finished(task, result).await.expect("accepted");
                        }
                        handle.finish(run.end_time).await.expect("finish");
                    }));
                }
                for task in batch {
                    task.await.expect("run sent");
                }
                next += 4;
            }
        })
    };
    // Wait until the bound holds the senders back (deterministic: the gauge, bounded in time).
    let full = eventually(Duration::from_secs(60), || {
        let pending = agg.metrics().pending_bytes;
        async move { pending as f64 >= BOUND as f64 * 0.8 }
    })
    .await;
    assert!(full.is_some(), "pending bytes reached the bound");
    let held_back = agg.metrics();
    assert!(
        held_back.pending_bytes <= BOUND as u64 + (1 << 20),
        "{held_back:?}"
    );
    assert!(!sender.is_finished(), "senders wait at the bound");
    db.restart();
    sender.await.expect("every result sent");
    agg.flush().await.expect("flush");
    let peak = rss_mib("VmHWM:");
    let metrics = agg.metrics();
    assert_eq!(metrics.oversize_splits, 0, "no batch refused for its size");
    assert_eq!(metrics.rows_rejected, 0);
    assert!(agg.shutdown(Duration::from_secs(30)).await.complete);
    let bound_mib = BOUND as f64 / (1 << 20) as f64;
    assert!(
        peak - baseline <= bound_mib + MARGIN_MIB,
        "peak RSS {peak:.0} MiB, {:.0} above the start: more than the bound ({bound_mib:.0}) \
         plus {MARGIN_MIB} MiB",
        peak - baseline
    );
    eprintln!(
        "peak RSS {peak:.1} MiB, start {baseline:.1} MiB, growth {:.1} MiB (bound {bound_mib} MiB)",
        peak - baseline
    );
    // Counters and statuses as the stream implies (outputs are not compared: the expected
    // values come from a copy with tiny outputs).
    let store = db.store();
    for (exec, (implied, status)) in &want {
        let rec = store
            .execution(&exec_id(exec))
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(
            (
                rec.tasks_successful,
                rec.tasks_failed,
                rec.tokens_input,
                rec.tool_calls
            ),
            (implied.ok, implied.failed, implied.tokens_in, implied.calls),
            "{exec}"
        );
        assert_eq!(rec.status, *status, "{exec}");
        let tasks = store.task_executions(&exec_id(exec)).await.expect("tasks");
        assert_eq!(tasks.len() as i64, implied.ok + implied.failed, "{exec}");
        assert!(tasks.iter().all(|t| t.output.len() == 200_000), "{exec}");
    }
}
