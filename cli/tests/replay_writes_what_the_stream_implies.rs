//! `runtally replay` of a generated stream (the gen_events.py workload, with failures and
//! cancellations) writes exactly the values the stream implies; malformed lines are reported by
//! number and every valid line is still applied.

mod common;

use std::io::Write;
use std::process::Command;

use common::*;
use runtally_cli::workload::WorkloadSpec;

#[tokio::test]
async fn replay_writes_exactly_the_values_the_stream_implies() {
    replays_exactly(None, &[]).await;
}

/// The same stream through `runtally serve` (`replay --http`): the same values, the same bad
/// lines reported by number (the unknown run's by the service).
#[tokio::test]
async fn replay_over_http_writes_exactly_the_values_the_stream_implies() {
    let serve = Serve::start(&db_env(), &["--token", "replay-http"]);
    replays_exactly(Some(&serve.url), &["--token", "replay-http"]).await;
}

async fn replays_exactly(http: Option<&str>, extra: &[&str]) {
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
    let want = implied(&events);
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
        .args(http.map(|url| ["--http", url]).into_iter().flatten())
        .args(extra)
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
        want.values().map(|(t, _)| t.ok + t.failed).sum::<i64>()
    );
    assert_eq!(summary["line_errors"], 4);
    assert_eq!(summary["write_errors"], 0);

    let store = store().await;
    assert_implied(&store, &raw_graph(), &want).await;
    for exec in want.keys() {
        let tasks = store.task_executions(&exec_id(exec)).await.expect("tasks");
        assert!(
            tasks.iter().all(|t| t.output.len() == 64),
            "{exec}: outputs whole"
        );
    }
    let _ = std::fs::remove_file(&file.0);
}

fn tempfile() -> (std::path::PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!("{}.jsonl", unique("runtally-replay")));
    let file = std::fs::File::create(&path).expect("temp file");
    (path, file)
}
