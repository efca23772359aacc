//! `runtally replay` of a generated stream (the gen_events.py workload, with failures and
//! cancellations) writes exactly the values the stream implies; malformed lines are reported by
//! number and every valid line is still applied.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::Command;

use common::*;
use runtally::events::Event;
use runtally::workload::WorkloadSpec;
use runtally::{RunStatus, TaskStatus};

#[derive(Default, Debug, PartialEq, Clone, Copy)]
struct Totals {
    ok: i64,
    failed: i64,
    tokens_in: i64,
    tokens_out: i64,
    calls: i64,
}

fn expected(events: &[Event]) -> HashMap<String, (Totals, RunStatus, i64)> {
    let mut out: HashMap<String, (Totals, RunStatus, i64)> = HashMap::new();
    let mut starts = HashMap::new();
    for event in events {
        match event {
            Event::RunStarted {
                execution_id,
                start_time,
                ..
            } => {
                starts.insert(execution_id.to_string(), *start_time);
                out.insert(
                    execution_id.to_string(),
                    (Totals::default(), RunStatus::Running, 0),
                );
            }
            Event::TaskFinished {
                execution_id,
                result,
                ..
            } => {
                let (t, _, _) = out.get_mut(execution_id.as_str()).expect("started");
                if result.status == TaskStatus::Failure {
                    t.failed += 1
                } else {
                    t.ok += 1
                }
                t.tokens_in += result.tokens.input as i64;
                t.tokens_out += result.tokens.output as i64;
                t.calls += result.tool_calls as i64;
            }
            Event::RunFinished {
                execution_id,
                end_time,
                cancelled,
            } => {
                let entry = out.get_mut(execution_id.as_str()).expect("started");
                entry.1 = if *cancelled {
                    RunStatus::Cancelled
                } else if entry.0.failed > 0 {
                    RunStatus::Failed
                } else {
                    RunStatus::Completed
                };
                entry.2 = (*end_time - starts[execution_id.as_str()]).num_milliseconds();
            }
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn replay_writes_exactly_the_values_the_stream_implies() {
    let spec = WorkloadSpec {
        runs: 30,
        tasks: 12,
        fail_rate: 0.15,
        output_bytes: 64,
        prefix: unique("replay"),
        cancel_every: 4,
        ..WorkloadSpec::default()
    };
    let events = spec.events().expect("events");
    let want = expected(&events);
    let mut file = tempfile();
    let mut lines: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(e).expect("json"))
        .collect();
    // Bad lines in the middle: truncated, empty, not an object, an event for an unknown run.
    let bad = [
        lines[40][..30].to_owned(),
        String::new(),
        "[1,2,3]".to_owned(),
        r#"{"event":"run_finished","executionId":"nobody-knows","endTime":1,"cancelled":false}"#
            .to_owned(),
    ];
    for (i, line) in bad.iter().enumerate() {
        lines.insert(50 + i, line.clone());
    }
    // A byte-order mark on the first line is ignored.
    lines[0] = format!("\u{feff}{}", lines[0]);
    for line in &lines {
        writeln!(file.1, "{line}").expect("write");
    }
    drop(file.1);

    let output = Command::new(env!("CARGO_BIN_EXE_runtally"))
        .args([
            "replay",
            file.0.to_str().expect("path"),
            "--concurrency",
            "8",
        ])
        .output()
        .expect("run runtally");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    for n in 51..=54 {
        assert!(
            stderr.contains(&format!("line {n}:")),
            "line {n} reported: {stderr}"
        );
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON summary line");
    assert_eq!(
        summary["tasks"],
        want.values().map(|(t, _, _)| t.ok + t.failed).sum::<i64>()
    );
    assert_eq!(summary["line_errors"], 4);
    assert_eq!(summary["write_errors"], 0);

    let store = store().await;
    for (exec, (totals, status, duration)) in &want {
        let rec = store
            .execution(&exec_id(exec))
            .await
            .expect("read")
            .expect("stored");
        let got = Totals {
            ok: rec.tasks_successful,
            failed: rec.tasks_failed,
            tokens_in: rec.tokens_input,
            tokens_out: rec.tokens_output,
            calls: rec.tool_calls,
        };
        assert_eq!(got, *totals, "{exec}");
        assert_eq!(rec.status, *status, "{exec}");
        assert_eq!(rec.duration, *duration, "{exec}");
        assert_eq!(rec.tasks_total, 12);
        let tasks = store.task_executions(&exec_id(exec)).await.expect("tasks");
        assert_eq!(tasks.len() as i64, totals.ok + totals.failed);
        assert!(tasks.iter().all(|t| t.output.len() == 64));
    }
    let _ = std::fs::remove_file(&file.0);
}

fn tempfile() -> (std::path::PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!("{}.jsonl", unique("runtally-replay")));
    let file = std::fs::File::create(&path).expect("temp file");
    (path, file)
}
