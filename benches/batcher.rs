#![allow(missing_docs)] // criterion_group! generates undocumented items
//! The writer's pending rows: coalescing a run's progress (1,000 results of one run cost one
//! execution row) and sealing into chunks.
//!
//! ```text
//! cargo bench --bench batcher
//! ```

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use runtally::bench_support::Pending;
use runtally::rows::{ExecutionRow, TaskRow};
use runtally::{ExecutionId, PlanId, TaskDefinition, TaskId, TaskResult};

fn rows(runs: usize, tasks: usize) -> Vec<(ExecutionRow, TaskRow)> {
    let now = chrono::Utc::now();
    let plan = PlanId::new("p").expect("id");
    let mut out = Vec::with_capacity(runs * tasks);
    for t in 0..tasks {
        for r in 0..runs {
            let exec = ExecutionId::new(format!("run-{r}")).expect("id");
            let id = TaskId::new(format!("task-{t}")).expect("id");
            let row = TaskRow::new(
                &exec,
                &plan,
                TaskDefinition::new(id.clone()),
                TaskResult::success(id).with_output("x".repeat(100)),
                now,
            )
            .expect("row");
            let execution =
                ExecutionRow::started(exec, plan.clone(), tasks as u64, now, now).expect("row");
            out.push((execution, row));
        }
    }
    out
}

fn coalescing(c: &mut Criterion) {
    let mut group = c.benchmark_group("batcher");
    for (name, runs, tasks) in [
        ("one_run_1000_tasks", 1, 1000),
        ("100_runs_10_tasks", 100, 10),
    ] {
        group.throughput(Throughput::Elements((runs * tasks) as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                || rows(runs, tasks),
                |rows| {
                    let mut pending = Pending::default();
                    for (execution, task) in rows {
                        pending.push(execution, task);
                    }
                    let chunks = pending.seal_and_take(500, 8 << 20);
                    // Coalescing: one execution state per run, whatever the task count (a run
                    // spanning chunks also has a placeholder in its first one).
                    let executions: usize = chunks
                        .iter()
                        .map(|c| c.executions.iter().filter(|e| e.write.is_state()).count())
                        .sum();
                    assert_eq!(executions, runs);
                    chunks
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, coalescing);
criterion_main!(benches);
