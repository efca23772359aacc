//! `runtally serve` takes GenAI agent traces from the official OpenTelemetry SDKs (Python and
//! Node, OTLP/HTTP protobuf and JSON, one span per request or batched, gzip) and the graph
//! holds exactly the runs they sent: the senders (`cli/tests/otel/`) print what they emitted,
//! and every run and task node is compared with it, property by property.
//!
//! Node's simple processor posts spans concurrently, so a root often arrives before some of
//! its children: the held traces' settle time is what keeps those.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::Duration;

use common::*;
use neo4rs::BoltType;
use serde_json::Value;

const TOKEN: &str = "otel-test-token";

/// `scripts/otel-clients`' assignments: `OTEL_PYTHON`, `OTEL_NODE_DIR`.
fn clients() -> HashMap<String, String> {
    let output = Command::new(repo_root().join("scripts/otel-clients"))
        .output()
        .expect("scripts/otel-clients");
    assert!(
        output.status.success(),
        "scripts/otel-clients failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches(['\'', '"']).to_owned()))
        .collect()
}

/// Runs a sender; returns the runs it says it sent.
fn send(mut command: Command, serve: &Serve, prefix: &str, args: &[&str]) -> Vec<Value> {
    let output = command
        .args(["--endpoint", &format!("{}/v1/traces", serve.url)])
        .args(["--token", TOKEN, "--prefix", prefix, "--seed", "7"])
        .args(args)
        .output()
        .expect("sender runs");
    assert!(
        output.status.success(),
        "sender failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sent: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    sent["runs"].as_array().expect("runs").clone()
}

fn bolt(v: &Value) -> Option<BoltType> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(boolean(*b)),
        Value::Number(n) => Some(int(n.as_i64().expect("an integer"))),
        Value::String(s) => Some(string(s)),
        other => panic!("unexpected value {other}"),
    }
}

/// Checks that the node has each expected property (a JSON null: absent or null).
fn assert_fields(node: &BTreeMap<String, BoltType>, expected: &Value, skip: &[&str], what: &str) {
    for (key, want) in expected.as_object().expect("object") {
        if skip.contains(&key.as_str()) {
            continue;
        }
        let got = node.get(key).filter(|v| !matches!(v, BoltType::Null(_)));
        assert_eq!(got, bolt(want).as_ref(), "{what}: property {key}");
    }
}

/// Waits until every sent run is final with all its task nodes, then compares them.
async fn assert_graph_holds(runs: &[Value]) {
    let graph = raw_graph();
    for run in runs {
        let id = run["executionId"].as_str().expect("id").to_owned();
        let tasks = run["tasks"].as_array().expect("tasks").len() as i64;
        let settled = eventually(Duration::from_secs(60), || {
            let graph = graph.clone();
            let id = id.clone();
            async move {
                let q = neo4rs::query(
                    "MATCH (e:Node {id: $id, type: 'orchestration_execution'}) \
                     WHERE e.endTime IS NOT NULL \
                     OPTIONAL MATCH (t:Node {type: 'task_execution', executionId: $id}) \
                     RETURN count(t) AS n",
                )
                .param("id", id);
                match graph.execute(q).await {
                    Ok(mut rows) => matches!(rows.next().await, Ok(Some(row))
                        if row.get::<i64>("n").unwrap_or(-1) == tasks),
                    Err(_) => false,
                }
            }
        })
        .await;
        assert!(settled.is_some(), "run {id} not written within 60 s");
        let node = props(&graph, &id).await;
        // The execution node's id is the run's id (`executionId` in the sender's terms).
        assert_fields(&node, run, &["tasks", "executionId"], &id);
        for task in run["tasks"].as_array().expect("tasks") {
            let task_id = task["taskId"].as_str().expect("task id");
            let node = props(&graph, &format!("{id}-{task_id}")).await;
            assert_fields(&node, task, &[], &format!("{id}/{task_id}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_spans_posted_one_per_request_become_exact_runs() {
    let clients = clients();
    let python = clients
        .get("OTEL_PYTHON")
        .expect("python3 with venv is needed");
    let serve = Serve::start(&db_env(), &["--token", TOKEN, "--trace-settle-ms", "300"]);
    let mut sender = Command::new(python);
    sender.arg(repo_root().join("cli/tests/otel/python/genai_trace.py"));
    let prefix = unique("otel-py");
    let runs = send(
        sender,
        &serve,
        &prefix,
        &["--runs", "4", "--tasks", "6", "--processor", "simple"],
    );
    assert_eq!(runs.len(), 4);
    assert_graph_holds(&runs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_spans_out_of_order_as_json_and_batched_gzip_protobuf_become_exact_runs() {
    let clients = clients();
    let dir = clients
        .get("OTEL_NODE_DIR")
        .expect("node and npm are needed");
    let serve = Serve::start(&db_env(), &["--token", TOKEN, "--trace-settle-ms", "500"]);
    let script = std::path::Path::new(dir).join("genai_trace.mjs");
    let mut all = Vec::new();
    for (tag, args) in [
        ("json", &["--processor", "simple", "--protocol", "json"][..]),
        (
            "pb",
            &["--processor", "batch", "--protocol", "protobuf", "--gzip"][..],
        ),
    ] {
        let mut sender = Command::new("node");
        sender.arg(&script);
        let prefix = unique(&format!("otel-node-{tag}"));
        let runs = send(
            sender,
            &serve,
            &prefix,
            &[&["--runs", "3", "--tasks", "8"][..], args].concat(),
        );
        assert_eq!(runs.len(), 3);
        all.extend(runs);
    }
    assert_graph_holds(&all).await;
}
