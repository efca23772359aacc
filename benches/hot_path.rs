#![allow(missing_docs)] // criterion_group! generates undocumented items
//! The hot path: `task_finished` through the run actors to the writer, with a store that
//! discards batches, so only runtally is measured. Results are small (ids, counts, a short
//! output) and built before the clock starts.
//!
//! ```text
//! cargo bench --bench hot_path
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use runtally::bench_support::Counters;
use runtally::rows::TaskRow;
use runtally::store::NullStore;
use runtally::{
    Aggregator, AggregatorConfig, ExecutionId, PlanId, RunStart, TaskDefinition, TaskId, TaskResult,
};

const RUNS: usize = 256;
const TASKS_PER_RUN: usize = 200;

fn inputs() -> Vec<Vec<(TaskDefinition, TaskResult)>> {
    (0..RUNS)
        .map(|_| {
            (0..TASKS_PER_RUN)
                .map(|t| {
                    let id = TaskId::new(format!("task-{t}")).expect("id");
                    (
                        TaskDefinition::new(id.clone()).with_title("Step"),
                        TaskResult::success(id)
                            .with_tokens(1000, 500)
                            .with_tool_calls(3)
                            .with_output("done"),
                    )
                })
                .collect()
        })
        .collect()
}

/// 256 runs at once, each reporting its 200 tasks in order (51,200 results per iteration).
fn task_finished_many_runs(c: &mut Criterion) {
    let mut group = c.benchmark_group("task_finished");
    group.throughput(Throughput::Elements((RUNS * TASKS_PER_RUN) as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(15));
    // One write lane and more (whose small chunks go out as one transaction, so that more
    // lanes cost the hot path as little as they can).
    for (arbiters, lanes) in [(1, 1), (1, 2), (1, 4), (2, 1), (2, 2)] {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let aggregator = runtime.block_on(async {
            let config = AggregatorConfig::builder()
                .with_arbiters(arbiters)
                .with_write_lanes(lanes)
                .with_max_pending_rows(1_000_000)
                .build()
                .expect("config");
            Aggregator::start_with_store(config, Arc::new(NullStore::new()))
                .await
                .expect("start")
        });
        let mut round = 0u64;
        group.bench_with_input(
            BenchmarkId::new(
                "null_store_256_runs",
                format!("{arbiters}_arbiters_{lanes}_lanes"),
            ),
            &arbiters,
            |b, _| {
                b.iter_custom(|iterations| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        let batches = inputs();
                        round += 1;
                        let aggregator = aggregator.clone();
                        total += runtime.block_on(async move {
                            let started = Instant::now();
                            let runs = batches.into_iter().enumerate().map(|(r, tasks)| {
                                let aggregator = aggregator.clone();
                                tokio::spawn(async move {
                                    let id =
                                        ExecutionId::new(format!("bench-{round}-{r}")).expect("id");
                                    let plan = PlanId::new("p").expect("id");
                                    let run = aggregator
                                        .begin_run(RunStart::new(id, plan, TASKS_PER_RUN as u64))
                                        .expect("begin");
                                    for (task, result) in tasks {
                                        run.task_finished(task, result).await.expect("accepted");
                                    }
                                    run.finish(chrono::Utc::now()).await.expect("finish");
                                })
                            });
                            for run in futures_util::future::join_all(runs).await {
                                run.expect("run");
                            }
                            started.elapsed()
                        });
                    }
                    total
                });
            },
        );
        runtime.block_on(async {
            aggregator.flush().await.expect("flush");
        });
    }
    group.finish();
}

/// The run actor's own work per result: replacing a task's contribution in the counters.
fn counters_record(c: &mut Criterion) {
    let exec = ExecutionId::new("e").expect("id");
    let plan = PlanId::new("p").expect("id");
    let rows: Vec<(TaskId, TaskRow)> = (0..1000)
        .map(|t| {
            let id = TaskId::new(format!("task-{t}")).expect("id");
            let row = TaskRow::new(
                &exec,
                &plan,
                TaskDefinition::new(id.clone()),
                TaskResult::success(id.clone()).with_tokens(10, 5),
                chrono::Utc::now(),
            )
            .expect("row");
            (id, row)
        })
        .collect();
    let mut group = c.benchmark_group("counters");
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("record_1000_tasks", |b| {
        b.iter(|| {
            let mut counters = Counters::default();
            for (id, row) in &rows {
                counters.record(id, row);
            }
            counters.successful()
        });
    });
    group.finish();
}

criterion_group!(benches, task_finished_many_runs, counters_record);
criterion_main!(benches);
