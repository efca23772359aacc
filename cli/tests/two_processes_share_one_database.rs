//! Two aggregator processes write different runs to one database at the same time (the server
//! sees concurrent writers, and the deadlocks they cause are retried): both sets of totals are
//! exact.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use runtally_cli::workload::WorkloadSpec;

#[tokio::test]
async fn two_replay_processes_at_once_both_write_exact_totals() {
    let mut want = std::collections::HashMap::new();
    let mut children = Vec::new();
    let mut files = Vec::new();
    for p in 0..2 {
        let spec = WorkloadSpec {
            runs: 60,
            tasks: 25,
            fail_rate: 0.1,
            output_bytes: 200,
            prefix: unique(&format!("proc{p}")),
            cancel_every: 6,
            ..WorkloadSpec::default()
        };
        let events = spec.events().expect("events");
        want.extend(implied(&events));
        let path = std::env::temp_dir().join(format!("{}.jsonl", spec.prefix));
        let mut file = std::fs::File::create(&path).expect("file");
        for e in &events {
            writeln!(file, "{}", serde_json::to_string(e).expect("json")).expect("write");
        }
        files.push(path.clone());
        children.push(
            Command::new(env!("CARGO_BIN_EXE_runtally"))
                .args([
                    "replay",
                    path.to_str().expect("path"),
                    "--concurrency",
                    "32",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn runtally replay"),
        );
    }
    for child in children {
        let out = child.wait_with_output().expect("runtally replay");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
        assert_eq!(summary["write_errors"], 0);
    }
    assert_implied(&store().await, &raw_graph(), &want).await;
    for path in files {
        let _ = std::fs::remove_file(path);
    }
}
