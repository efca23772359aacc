//! A run's node never reads as ended before its tasks are in the graph, and its counters never
//! count task nodes that are not there yet: a reader polls the database during a replay of
//! many runs with cancellations, failures and re-sent results (one lane and two), across a
//! database restart, and while the spill of a shutdown with the database down is replayed.
//!
//! The seed's clients poll an execution node until `status` is `completed` or `failed`, then
//! read its tasks; they break if the tasks are not all there.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::private_db::PrivateDb;
use common::*;
use runtally::{AggregatorConfig, RetryPolicy, TaskStatus};
use runtally_cli::events::Event;
use runtally_cli::workload::WorkloadSpec;

/// The workload's events, with a re-sent result (status flipped, then flipped back) for the
/// first task of every third run, as QC retries send them.
fn events(spec: &WorkloadSpec) -> Vec<Event> {
    let mut events = spec.events().expect("events");
    let mut resent = Vec::new();
    for event in &events {
        if let Event::TaskFinished {
            execution_id,
            task,
            result,
        } = event
        {
            let r: usize = execution_id
                .as_str()
                .rsplit('-')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            if r.is_multiple_of(3) && task.id.as_str().ends_with("task-0") {
                let mut flipped = result.clone();
                flipped.status = match result.status {
                    TaskStatus::Success => TaskStatus::Failure,
                    _ => TaskStatus::Success,
                };
                for r in [flipped, result.clone()] {
                    resent.push(Event::TaskFinished {
                        execution_id: execution_id.clone(),
                        task: task.clone(),
                        result: r,
                    });
                }
            }
        }
    }
    // Before the finishes (which close the runs).
    let first_finish = events
        .iter()
        .position(|e| matches!(e, Event::RunFinished { .. }))
        .unwrap_or(events.len());
    events.splice(first_finish..first_finish, resent);
    events
}

fn jsonl(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for event in events {
        out.extend(serde_json::to_vec(event).expect("serializes"));
        out.push(b'\n');
    }
    out
}

async fn replay_under_a_poller(lanes: usize) {
    init_tracing();
    let prefix = unique(&format!("order{lanes}"));
    let spec = WorkloadSpec {
        runs: 150,
        tasks: 30,
        fail_rate: 0.1,
        output_bytes: 200,
        prefix: prefix.clone(),
        cancel_every: 9,
        ..WorkloadSpec::default()
    };
    let events = events(&spec);
    let want = implied(&events);
    let agg = aggregator(|b| {
        b.with_write_lanes(lanes)
            .with_max_batch_rows(200)
            .with_flush_interval(Duration::from_millis(20))
    })
    .await;
    let poller = Poller::start(raw_graph(), prefix);
    let summary = runtally_cli::replay::replay(&agg, &jsonl(&events), 32).await;
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    agg.flush().await.expect("flush");
    let (violations, polls) = poller.finish().await;
    assert!(agg.shutdown(Duration::from_secs(10)).await.complete);
    // A poll reads every run of the shared test database, which grows with each run of the
    // suite: on a developer's database of millions of nodes a poll takes about a second (9 and
    // 10 polls were seen in a replay of this size), on CI's fresh one a few milliseconds. Three
    // show the reader read while the replay wrote.
    assert!(polls >= 3, "the reader polled during the replay ({polls})");
    assert!(
        violations.is_empty(),
        "{} reads saw a run ahead of its tasks, e.g. {:?}",
        violations.len(),
        &violations[..violations.len().min(5)]
    );
    assert_implied(&store().await, &raw_graph(), &want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_sees_a_run_ahead_of_its_tasks_with_one_lane() {
    replay_under_a_poller(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_sees_a_run_ahead_of_its_tasks_with_two_lanes() {
    replay_under_a_poller(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_sees_a_run_ahead_of_its_tasks_across_a_restart_and_a_spill_replay() {
    init_tracing();
    let db = Arc::new(PrivateDb::start("order-outage"));
    let prefix = unique("outage");
    let spec = WorkloadSpec {
        runs: 60,
        tasks: 20,
        fail_rate: 0.1,
        output_bytes: 100,
        prefix: prefix.clone(),
        cancel_every: 7,
        ..WorkloadSpec::default()
    };
    let events = events(&spec);
    let want = implied(&events);
    let spill = std::env::temp_dir().join(format!("{}.jsonl", unique("order-spill")));
    let config = AggregatorConfig::builder()
        .with_neo4j(db.neo4j())
        .with_max_batch_rows(50)
        .with_flush_interval(Duration::from_millis(20))
        .with_write_timeout(Duration::from_secs(2))
        .with_retry(RetryPolicy::new(
            Duration::from_millis(20),
            Duration::from_millis(200),
        ))
        .with_spill_path(&spill)
        .build()
        .expect("config");
    let agg = runtally::Aggregator::start(config).await.expect("start");
    let poller = Poller::start(db.graph(), prefix.clone());

    // The first third of the stream with the database up, the second third across a restart,
    // the rest (every finish among it) with the database down, then shutdown spills.
    let stream = jsonl(&events);
    let lines: Vec<&[u8]> = stream.split_inclusive(|b| *b == b'\n').collect();
    let third = lines.len() / 3;
    let part = |from: usize, to: usize| lines[from..to].concat();
    let summary = runtally_cli::replay::replay(&agg, &part(0, third), 16).await;
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    db.stop();
    // The outage lasts while the second third is accepted, plus half a second.
    let restart = {
        let db = Arc::clone(&db);
        tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(500));
            db.restart();
        })
    };
    let summary = runtally_cli::replay::replay(&agg, &part(third, 2 * third), 16).await;
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    restart.await.expect("restarted");
    agg.flush().await.expect("flush after the restart");
    db.stop();
    let summary = runtally_cli::replay::replay(&agg, &part(2 * third, lines.len()), 16).await;
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    let report = agg.shutdown(Duration::from_secs(2)).await;
    assert!(!report.complete, "the database was down: rows spilled");
    assert!(report.spilled_rows > 0);

    // The spill replayed by the CLI, with the reader polling throughout.
    db.restart();
    let output = Command::new(env!("CARGO_BIN_EXE_runtally"))
        .args([
            "replay",
            spill.to_str().expect("path"),
            "--max-batch-rows",
            "7",
        ])
        .envs(db.env())
        .output()
        .expect("runtally replay");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (violations, polls) = poller.finish().await;
    assert!(polls > 10, "the reader polled ({polls})");
    assert!(
        violations.is_empty(),
        "{} reads saw a run ahead of its tasks, e.g. {:?}",
        violations.len(),
        &violations[..violations.len().min(5)]
    );
    assert_implied(&db.store(), &db.graph(), &want).await;
    let _ = std::fs::remove_file(&spill);
}
