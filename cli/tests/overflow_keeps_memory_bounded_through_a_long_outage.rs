//! With `WhenFull::Overflow` and a disk buffer, an outage far longer than memory can hold loses
//! nothing and never holds the senders back: 2,000 results of 200 KB (400 MB, six times the
//! 64 MiB bound) are all accepted while the database is down, the rows that do not fit go to
//! the disk buffer, the heap stays under the bound, and once the database is back every value
//! is exact.
//!
//! The heap is counted by dhat, as the global allocator of this test binary (alone in its file
//! for that reason), and the resident set is checked against the bound plus 64 MiB.

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

/// What the heap may hold beyond the bound: the test's own senders (4 × 200 KB) and small
/// buffers. (The rows in the lanes stay under half the senders' budget during an overflow, so
/// the buffer thread's copies of what it appends and reads back fit in the bound: measured
/// 31.3 MiB of heap here, see BENCHMARKS.md.)
const HEAP_SLACK_MIB: f64 = 4.0;

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
async fn an_outage_longer_than_memory_overflows_to_disk_without_waiting_and_loses_nothing() {
    init_tracing();
    let db = Arc::new(PrivateDb::start("overflow"));
    let buffer = std::env::temp_dir().join(unique("overflow-buffer"));
    let _cleanup = Cleanup(buffer.clone());
    const BOUND: usize = 64 << 20;
    let config = AggregatorConfig::builder()
        .with_neo4j(db.neo4j())
        .with_max_pending_bytes(BOUND)
        .with_buffer_dir(&buffer)
        .with_when_full(runtally::WhenFull::Overflow)
        .with_flush_interval(Duration::from_millis(20))
        .with_write_timeout(Duration::from_secs(5))
        .with_retry(RetryPolicy::new(
            Duration::from_millis(20),
            Duration::from_millis(200),
        ))
        .build()
        .expect("config");
    let heap_bound = BOUND as f64 / MIB + HEAP_SLACK_MIB;
    // The senders' share of the bound: the rest is kept for the writes in flight.
    let config_budget = config.row_budget();
    let agg = runtally::Aggregator::start(config).await.expect("start");
    let spec = WorkloadSpec {
        runs: 20,
        tasks: 100,
        fail_rate: 0.05,
        output_bytes: 200_000,
        prefix: unique("overflow"),
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
    // Every result is accepted while the database is still down: nothing waited for it.
    sender.await.expect("every result sent");
    let accepted = agg.metrics();
    assert!(
        accepted.buffer.overflow_events >= 1,
        "{:?}",
        accepted.buffer
    );
    assert!(
        accepted.buffer.backlog_rows > 1000,
        "most rows wait on disk: {:?}",
        accepted.buffer
    );
    assert!(
        accepted.pending_bytes <= config_budget as u64,
        "{accepted:?}"
    );
    db.restart();
    agg.flush().await.expect("flush");
    let peak = rss_mib("VmHWM:");
    let heap_peak = dhat::HeapStats::get().max_bytes as f64 / MIB;
    drop(profiler);
    let metrics = agg.metrics();
    assert_eq!(metrics.oversize_splits, 0, "no batch refused for its size");
    assert_eq!(metrics.rows_rejected, 0);
    let report = agg.shutdown(Duration::from_secs(30)).await;
    assert!(report.complete, "{report:?}");
    assert_eq!(report.metrics.buffer.backlog_rows, 0);
    eprintln!(
        "heap peak {heap_peak:.1} MiB (bound {heap_bound:.0}); peak RSS {peak:.1} MiB, start \
         {baseline:.1} MiB, growth {:.1} MiB",
        peak - baseline
    );
    assert!(
        heap_peak <= heap_bound,
        "the heap grew by {heap_peak:.1} MiB: more than max_pending_bytes and the test's own \
         ({heap_bound:.0} MiB)"
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

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes the buffer directory when the test ends.
struct Cleanup(std::path::PathBuf);
