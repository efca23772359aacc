//! `runtally serve` never queues without bound: with the database down and the pending bytes
//! at `--max-pending-bytes`, a request waits `--full-wait-ms` and is answered 429 with
//! `Retry-After` (saying how many of its events were applied); once the database is back, the
//! client's resends (the whole request, as a client does) are applied exactly once and every
//! run is in the graph with its exact values.

mod common;

use common::private_db::PrivateDb;
use common::*;
use runtally_cli::http::ServeClient;
use serde_json::{json, Value};

fn run_body(id: &str, tasks: usize) -> Vec<u8> {
    let output = "x".repeat(50_000);
    let mut events = vec![
        json!({"event": "run_started", "executionId": id, "planId": "p429",
        "totalTasks": tasks, "startTime": 1_764_800_000_000_i64}),
    ];
    for i in 0..tasks {
        events.push(json!({"event": "task_finished", "executionId": id,
            "task": {"id": format!("t{i}")},
            "result": {"taskId": format!("t{i}"), "status": "success", "output": output,
                       "duration": 10, "tokens": {"input": 2, "output": 3}, "toolCalls": 1}}));
    }
    events.push(
        json!({"event": "run_finished", "executionId": id, "endTime": 1_764_800_001_000_i64}),
    );
    serde_json::to_vec(&Value::Array(events)).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_runtally_answers_429_and_resends_after_the_outage_count_once() {
    let db = PrivateDb::start("serve429");
    let serve = Serve::start(
        &db.env(),
        &[
            "--max-batch-bytes",
            "65536",
            "--max-pending-bytes",
            "1048576",
            "--full-wait-ms",
            "200",
        ],
    );
    db.stop();
    // A client that does not retry, to see the 429 itself.
    let once = ServeClient::new(&serve.url, None, 1);
    let prefix = unique("full");
    let mut answers = Vec::new();
    let mut first_429 = None;
    for i in 0..40 {
        let body = run_body(&format!("{prefix}-{i}"), 10);
        match once
            .post("/v1/events", "application/json", body.into())
            .await
        {
            Ok(answer) => answers.push((i, answer.status)),
            Err(runtally_cli::http::HttpError::Exhausted { status, .. }) => {
                assert_eq!(status, 429);
                first_429.get_or_insert(i);
                answers.push((i, 429));
            }
            Err(e) => panic!("no answer: {e}"),
        }
    }
    let first_429 = first_429.expect("a 429 within 40 requests of 500 KB with a 1 MiB bound");
    assert!(first_429 > 0, "the first request fits");
    // The raw answer: Retry-After and how far the request got.
    let raw = std::process::Command::new("curl")
        .args([
            "-s",
            "-i",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
        ])
        .args(["--data-binary", "@-"])
        .arg(format!("{}/v1/events", serve.url))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(&run_body(&format!("{prefix}-curl"), 10))?;
            child.wait_with_output()
        })
        .expect("curl");
    let text = String::from_utf8_lossy(&raw.stdout).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 429"), "{text}");
    assert!(text.contains("retry-after: 1"), "{text}");
    assert!(text.contains("\"error\":\"full\""), "{text}");

    db.restart();
    // Resend everything not answered 200, with retries, as a client would.
    let patient = ServeClient::new(&serve.url, None, 600);
    for (i, status) in &answers {
        if *status != 200 {
            let body = run_body(&format!("{prefix}-{i}"), 10);
            let answer = patient
                .post("/v1/events", "application/json", body.into())
                .await
                .expect("answered");
            assert_eq!(
                answer.status,
                200,
                "{}",
                String::from_utf8_lossy(&answer.body)
            );
        }
    }
    let flushed = patient
        .post("/v1/flush", "application/json", "{}".into())
        .await
        .expect("flush");
    assert_eq!(flushed.status, 200);
    let graph = db.graph();
    let q = neo4rs::query(
        "MATCH (e:Node {type: 'orchestration_execution'}) WHERE e.id STARTS WITH $p \
         AND e.status = 'completed' AND e.tasksSuccessful = 10 AND e.tokensInput = 20 \
         AND e.toolCalls = 10 RETURN count(e) AS n",
    )
    .param("p", format!("{prefix}-"));
    let mut rows = graph.execute(q).await.expect("read");
    let n: i64 = rows
        .next()
        .await
        .expect("row")
        .and_then(|r| r.get("n").ok())
        .unwrap_or(-1);
    assert_eq!(n, 40, "every run once, exact");
}
