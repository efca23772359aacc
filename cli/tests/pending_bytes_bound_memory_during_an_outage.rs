//! `max_pending_bytes` bounds memory during a database outage whatever the output size: with
//! 2,000 results of 200 KB (400 MB) and a 64 MiB bound, the heap stays under the bound (the
//! rows waiting, and the copies the writes in flight hold, which the bound reserves room for)
//! while senders wait and while the backlog drains, the resident set stays under the bound plus
//! 64 MiB (issue 12's target), and once the database is back every value is exact and no batch
//! was refused for its size.
//!
//! The heap is counted by dhat, as the global allocator of this test binary: its peak is the
//! same from run to run, where the resident set adds what the allocator keeps and the code
//! pages the writes touch, which varies by tens of MiB between machines.
//!
//! Alone in its file: the test owns the process's allocator and reads its resident memory.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::private_db::PrivateDb;
use common::*;
use runtally::{AggregatorConfig, RetryPolicy, RunStart};
use runtally_cli::workload::WorkloadSpec;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const MIB: f64 = (1 << 20) as f64;

/// What the test itself holds at the peak: the results its four senders are building or
/// waiting to hand over (4 × 200 KB), the driver's and the actors' small buffers.
const TEST_OWN_MIB: f64 = 4.0;

/// Resident memory beyond the bound that the issue allows: what the allocator keeps and the
/// code and stacks the run touches.
const RESIDENT_SLACK_MIB: f64 = 64.0;

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
    let heap_bound = BOUND as f64 / MIB + TEST_OWN_MIB;
    // The senders' share of the bound: the rest is kept for the writes in flight.
    let config_budget = config.row_budget();
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
    // Counts what is allocated from here on: the heap's growth.
    let profiler = dhat::Profiler::builder().testing().build();

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
        async move { pending as f64 >= config_budget as f64 * 0.8 }
    })
    .await;
    assert!(full.is_some(), "pending bytes reached the bound");
    let held_back = agg.metrics();
    assert!(
        held_back.pending_bytes <= config_budget as u64 + (1 << 20),
        "{held_back:?}"
    );
    assert!(!sender.is_finished(), "senders wait at the bound");
    db.restart();
    sender.await.expect("every result sent");
    agg.flush().await.expect("flush");
    let peak = rss_mib("VmHWM:");
    let heap_peak = dhat::HeapStats::get().max_bytes as f64 / MIB;
    drop(profiler);
    let metrics = agg.metrics();
    assert_eq!(metrics.oversize_splits, 0, "no batch refused for its size");
    assert_eq!(metrics.rows_rejected, 0);
    assert!(agg.shutdown(Duration::from_secs(30)).await.complete);
    eprintln!(
        "heap peak {heap_peak:.1} MiB (bound {heap_bound:.0}); peak RSS {peak:.1} MiB, start \
         {baseline:.1} MiB, growth {:.1} MiB",
        peak - baseline
    );
    assert!(
        heap_peak <= heap_bound,
        "the heap grew by {heap_peak:.1} MiB: more than max_pending_bytes and the test's \
         own ({heap_bound:.0} MiB)"
    );
    assert!(
        peak - baseline <= BOUND as f64 / MIB + RESIDENT_SLACK_MIB,
        "peak RSS {peak:.0} MiB, {:.0} above the start: more than max_pending_bytes plus \
         {RESIDENT_SLACK_MIB} MiB",
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
