//! `shutdown(timeout)` with the database down returns by its deadline and reports what it could
//! not write; with a spill file, those rows are appended to it and `runtally replay` of the file
//! later restores them exactly.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::private_db::PrivateDb;
use common::*;
use runtally::{Aggregator, AggregatorConfig, RetryPolicy, RunStart};
use runtally_cli::workload::WorkloadSpec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_the_database_down_returns_in_time_and_spills_what_it_could_not_write() {
    init_tracing();
    let db = PrivateDb::start("spill");
    let spill = std::env::temp_dir().join(format!("{}.jsonl", unique("spill")));
    let config = AggregatorConfig::builder()
        .with_neo4j(db.neo4j())
        .with_flush_interval(Duration::from_millis(20))
        .with_write_timeout(Duration::from_secs(2))
        .with_retry(RetryPolicy::new(
            Duration::from_millis(20),
            Duration::from_millis(200),
        ))
        .with_spill_path(&spill)
        .build()
        .expect("config");
    let agg = Aggregator::start(config).await.expect("start");
    let spec = WorkloadSpec {
        runs: 12,
        tasks: 10,
        fail_rate: 0.2,
        output_bytes: 32,
        prefix: unique("spill"),
        cancel_every: 5,
        ..WorkloadSpec::default()
    };
    let events = spec.events().expect("events");
    let want = implied(&events);

    // The first half of every run is written while the database is up...
    let mut runs = Vec::new();
    for r in 0..spec.runs {
        let run = spec.run(r).expect("run");
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
        runs.push((handle, run));
    }
    for (handle, run) in &runs {
        for (task, result) in run.tasks.iter().take(4) {
            handle
                .task_finished(task.clone(), result.clone())
                .await
                .expect("task");
        }
    }
    agg.flush().await.expect("flush while up");
    let written_before = agg.metrics().task_rows_written;

    // ...the rest, and every run's end, arrive while it is down.
    db.stop();
    for (handle, run) in &runs {
        for (task, result) in run.tasks.iter().skip(4) {
            handle
                .task_finished(task.clone(), result.clone())
                .await
                .expect("accepted while down");
        }
        if run.cancelled {
            handle.cancel(run.end_time).await.expect("cancel");
        } else {
            handle.finish(run.end_time).await.expect("finish");
        }
    }
    let started = Instant::now();
    let report = agg.shutdown(Duration::from_secs(3)).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "returned by the deadline: {took:?}"
    );
    assert!(!report.complete);
    let total_tasks: usize = runs.iter().map(|(_, r)| r.tasks.len()).sum();
    let unwritten_tasks: usize = report.unwritten.iter().map(|b| b.tasks.len()).sum();
    assert_eq!(unwritten_tasks as u64, total_tasks as u64 - written_before);
    assert_eq!(
        report
            .unwritten
            .iter()
            .map(|b| b.executions.len())
            .sum::<usize>(),
        12
    );
    assert_eq!(report.spilled_rows, report.unwritten_rows());
    assert_eq!(report.metrics.rows_spilled as usize, report.spilled_rows);
    assert_eq!(report.metrics.rows_dropped, 0);
    let lines = std::fs::read_to_string(&spill).expect("spill file");
    assert_eq!(lines.lines().count(), report.spilled_rows);

    // Later, with the database back: replaying the spill restores everything exactly.
    db.restart();
    let output = Command::new(env!("CARGO_BIN_EXE_runtally"))
        .args(["replay", spill.to_str().expect("path")])
        .envs(db.env())
        .output()
        .expect("runtally replay");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_implied(&db.store(), &db.graph(), &want).await;
    let _ = std::fs::remove_file(&spill);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_spill_file_the_report_lists_the_unwritten_rows() {
    let db = PrivateDb::start("nospill");
    let config = AggregatorConfig::builder()
        .with_neo4j(db.neo4j())
        .with_flush_interval(Duration::from_secs(3600))
        .with_write_timeout(Duration::from_secs(1))
        .build()
        .expect("config");
    let agg = Aggregator::start(config).await.expect("start");
    let run = agg
        .begin_run(RunStart::new(exec_id(&unique("down")), plan_id("p"), 3))
        .expect("begin");
    db.stop();
    for t in 0..3 {
        let (d, r) = result(&format!("t{t}"), false, 1, 1, 1);
        run.task_finished(d, r).await.expect("accepted while down");
    }
    let started = Instant::now();
    let report = agg.shutdown(Duration::from_secs(2)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!report.complete);
    assert_eq!(
        report
            .unwritten
            .iter()
            .map(|b| b.tasks.len())
            .sum::<usize>(),
        3
    );
    assert_eq!(report.unfinished_runs, vec![run.execution_id().clone()]);
    assert_eq!(report.spilled_rows, 0);
    assert_eq!(
        report.metrics.rows_dropped as usize,
        report.unwritten_rows()
    );
}
