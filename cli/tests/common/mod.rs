//! The library's test helpers (tests/common at the repository root, included as they are), and
//! what reading an event stream needs on top: the values a stream implies.

#![allow(dead_code, unreachable_pub)]

#[path = "../../../tests/common/mod.rs"]
mod shared;
pub use shared::*;

use runtally::TaskResult;

/// What an event stream implies for each run: totals over each task's latest result, the final
/// status, and the duration in milliseconds (0 while running).
pub fn implied(
    events: &[runtally_cli::events::Event],
) -> std::collections::HashMap<String, (Implied, runtally::RunStatus)> {
    use runtally::{RunStatus, TaskStatus};
    use runtally_cli::events::Event;
    use std::collections::HashMap;
    let mut latest: HashMap<String, HashMap<String, TaskResult>> = HashMap::new();
    let mut out: HashMap<String, (Implied, RunStatus)> = HashMap::new();
    let mut starts = HashMap::new();
    for event in events {
        match event {
            Event::RunStarted {
                execution_id,
                start_time,
                total_tasks,
                ..
            } => {
                starts.insert(execution_id.to_string(), *start_time);
                let implied = Implied {
                    total: *total_tasks as i64,
                    ..Implied::default()
                };
                out.insert(execution_id.to_string(), (implied, RunStatus::Running));
                latest.insert(execution_id.to_string(), HashMap::new());
            }
            Event::TaskFinished {
                execution_id,
                result,
                ..
            } => {
                latest
                    .get_mut(execution_id.as_str())
                    .expect("started")
                    .insert(result.task_id.to_string(), result.clone());
            }
            Event::RunFinished {
                execution_id,
                end_time,
                cancelled,
            } => {
                let entry = out.get_mut(execution_id.as_str()).expect("started");
                entry.0.duration = (*end_time - starts[execution_id.as_str()]).num_milliseconds();
                entry.1 = if *cancelled {
                    RunStatus::Cancelled
                } else {
                    RunStatus::Completed
                };
            }
            _ => {}
        }
    }
    for (exec, tasks) in latest {
        let (t, status) = out.get_mut(&exec).expect("run");
        for r in tasks.values() {
            if r.status == TaskStatus::Failure {
                t.failed += 1
            } else {
                t.ok += 1
            }
            t.tokens_in += r.tokens.input as i64;
            t.tokens_out += r.tokens.output as i64;
            t.calls += r.tool_calls as i64;
        }
        if t.failed > 0 && *status != RunStatus::Cancelled {
            *status = RunStatus::Failed;
        }
    }
    out
}

/// Runs whose node shows more than its task nodes: counters (tasks or tokens) above what its
/// task nodes hold, whether the node shows an end time or not.
///
/// The node's own values are read first, then its task nodes, as the seed's client does (one
/// query for the status, then one for the tasks): under read committed (Neo4j) a query that
/// read the task nodes first could see a transaction committed between its two reads. Neo4j
/// also reads each property when the query reaches it, so one read can pair a counter of the
/// run's previous state with the end time of its final one (seen once in a full local
/// `scripts/test`: "failed: 30 task nodes, counters say 27"). Such a read shows counters below
/// the task nodes (a run's task rows commit before its final state), never above: only
/// counters above the task nodes are a finding here, and the properties are read at once
/// (`properties()`), which narrows what a torn read can pair. That an ended run's counters
/// equal its task nodes exactly is checked after the replay (`assert_implied`).
pub const VIOLATIONS: &str = "\
MATCH (exec:Node {type: 'orchestration_execution'})
WHERE exec.id STARTS WITH $prefix
WITH exec, properties(exec) AS p
WITH exec, p.tasksSuccessful + p.tasksFailed AS counted, p.tokensTotal AS tokensTotal,
     p.status AS status
OPTIONAL MATCH (exec)-[:HAS_TASK_EXECUTION]->(te:Node)
WITH exec, counted, tokensTotal, status, count(te) AS nodes, sum(te.tokensTotal) AS tokens
WHERE nodes < counted OR tokens < tokensTotal
RETURN exec.id AS id, status, nodes, counted";

/// A reader polling every few milliseconds until stopped; returns the violations it saw (at
/// most a few, for the message) and how many polls it made.
pub struct Poller {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(Vec<String>, usize)>,
}

impl Poller {
    pub fn start(graph: neo4rs::Graph, prefix: String) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut polls = 0;
            while !flag.load(std::sync::atomic::Ordering::Acquire) {
                let q = neo4rs::query(VIOLATIONS).param("prefix", prefix.as_str());
                // The server may be down for part of the test: a failed poll is not a finding.
                if let Ok(mut rows) = graph.execute(q).await {
                    polls += 1;
                    while let Ok(Some(row)) = rows.next().await {
                        if seen.len() < 5 {
                            seen.push(format!(
                                "{} {}: {} task nodes, counters say {}",
                                row.get::<String>("id").unwrap_or_default(),
                                row.get::<String>("status").unwrap_or_default(),
                                row.get::<i64>("nodes").unwrap_or(-1),
                                row.get::<i64>("counted").unwrap_or(-1),
                            ));
                        } else {
                            seen.push(String::new());
                        }
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            (seen, polls)
        });
        Self { stop, task }
    }

    pub async fn finish(self) -> (Vec<String>, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.task.await.expect("poller joins")
    }
}

/// A `runtally serve` process of a test's own, on a port the system picks; stopped with
/// SIGTERM (and waited for) on drop, unless [`Serve::stop`] already did.
pub struct Serve {
    child: Option<std::process::Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its stderr lines, as they come.
    pub stderr: std::sync::mpsc::Receiver<String>,
    stdout: Option<std::process::ChildStdout>,
}

impl Serve {
    /// Starts `runtally serve --listen 127.0.0.1:0 ARGS…` against the database in `env`
    /// (NEO4J_*), and waits for its "listening" line.
    pub fn start(env: &[(&'static str, String)], args: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_runtally"))
            .env_remove("NEO4J_URI")
            .env_remove("NEO4J_USER")
            .env_remove("NEO4J_PASSWORD")
            .env_remove("NEO4J_DATABASE")
            .env_remove("RUNTALLY_TOKEN")
            .envs(env.iter().cloned())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("runtally serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut seen = Vec::new();
        let url = loop {
            let left = deadline
                .checked_duration_since(std::time::Instant::now())
                .unwrap_or_default();
            match rx.recv_timeout(left) {
                Ok(line) => match line.split_once("listening on ") {
                    Some((_, url)) => break url.trim().to_owned(),
                    None => seen.push(line),
                },
                Err(_) => panic!("serve did not start: {seen:?}"),
            }
        };
        let stdout = child.stdout.take();
        Serve {
            child: Some(child),
            url,
            stderr: rx,
            stdout,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Sends SIGTERM and waits for the exit; returns the status and the JSON line on stdout.
    pub fn stop(&mut self) -> (std::process::ExitStatus, serde_json::Value) {
        use std::io::Read;
        let mut child = self.child.take().expect("running");
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().expect("serve exits");
        let mut out = String::new();
        if let Some(mut stdout) = self.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        let line = out.lines().last().unwrap_or("null");
        (
            status,
            serde_json::from_str(line).unwrap_or(serde_json::Value::Null),
        )
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

/// The live database's settings (NEO4J_*), for child processes.
pub fn db_env() -> Vec<(&'static str, String)> {
    [
        "NEO4J_URI",
        "NEO4J_USER",
        "NEO4J_PASSWORD",
        "NEO4J_DATABASE",
    ]
    .into_iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k, v)))
    .collect()
}

/// The repository's root.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ is in the repository")
        .to_path_buf()
}
