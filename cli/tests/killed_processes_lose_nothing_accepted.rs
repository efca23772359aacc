//! With a disk buffer, a process killed with `SIGKILL` loses nothing it accepted: `runtally
//! drain` (a fresh process on the same directory) writes it, in order, and a re-run of the
//! replay completes the rest with every value exact and nothing duplicated. A reader polling
//! throughout never sees a run ahead of its tasks. Also: a second process cannot open a
//! directory in use; torn and corrupt records are reported with their segment and offset and
//! skipped; a full disk (a file-size limit) is counted, never a panic or a lost row.
//!
//! Every check goes through the `runtally` binary, as an operator would, against a real server.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::private_db::PrivateDb;
use common::*;
use runtally_cli::events::Event;
use runtally_cli::workload::WorkloadSpec;

fn jsonl(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for event in events {
        out.extend(serde_json::to_vec(event).expect("serializes"));
        out.push(b'\n');
    }
    out
}

/// A scratch directory of this test's own (under the system's temp dir), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn runtally(env: &[(&'static str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runtally"));
    command
        .env_remove("NEO4J_URI")
        .env_remove("NEO4J_USER")
        .env_remove("NEO4J_PASSWORD")
        .env_remove("NEO4J_DATABASE")
        .envs(env.iter().cloned());
    command
}

/// Runs `runtally drain` to the end; returns its JSON line (and checks it exited 0).
fn drain(env: &[(&'static str, String)], dir: &Path) -> serde_json::Value {
    let output = runtally(env)
        .args(["drain", "--buffer-dir", dir.to_str().expect("path")])
        .output()
        .expect("runtally drain");
    assert!(
        output.status.success(),
        "drain failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON line")
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "seg"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Starts `runtally replay FILE --buffer-dir DIR ARGS…`; its stderr lines go to a channel.
fn start_replay(
    env: &[(&'static str, String)],
    events: &Path,
    dir: &Path,
    args: &[&str],
) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = runtally(env)
        .args([
            "replay",
            events.to_str().expect("path"),
            "--buffer-dir",
            dir.to_str().expect("path"),
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runtally replay");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Waits for a stderr line containing `needle` (at most `within`).
fn wait_for_line(lines: &std::sync::mpsc::Receiver<String>, needle: &str, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no line with {needle:?} within {within:?}; saw {seen:?}");
}

/// A stream of runs with failures, cancellations and outputs of `output_bytes`.
fn stream(prefix: &str, runs: usize, tasks: usize, output_bytes: usize) -> Vec<Event> {
    WorkloadSpec {
        runs,
        tasks,
        fail_rate: 0.1,
        output_bytes,
        prefix: prefix.to_owned(),
        cancel_every: 7,
        ..WorkloadSpec::default()
    }
    .events()
    .expect("events")
}

/// Execution nodes of this prefix in the database.
async fn runs_stored(graph: &neo4rs::Graph, prefix: &str) -> i64 {
    let q = neo4rs::query(
        "MATCH (e:Node {type: 'orchestration_execution'}) WHERE e.id STARTS WITH $prefix \
         RETURN count(e) AS n",
    )
    .param("prefix", prefix);
    match graph.execute(q).await {
        Ok(mut rows) => match rows.next().await {
            Ok(Some(row)) => row.get::<i64>("n").unwrap_or(0),
            _ => 0,
        },
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_killed_mid_stream_is_completed_by_drain_and_a_rerun_without_a_run_ahead_of_its_tasks(
) {
    init_tracing();
    let scratch = Scratch::new("kill-up");
    let prefix = unique("killup");
    let events = stream(&prefix, 400, 30, 300);
    let want = implied(&events);
    let file = scratch.path("events.jsonl");
    std::fs::write(&file, jsonl(&events)).expect("events file");
    let dir = scratch.path("buffer");
    let env = db_env();
    let graph = raw_graph();
    let poller = Poller::start(raw_graph(), prefix.clone());

    let (mut child, _lines) = start_replay(&env, &file, &dir, &["--concurrency", "32"]);
    // Killed in the middle: once the database shows some runs, long before all 400.
    let started = eventually(Duration::from_secs(60), || {
        let (graph, prefix) = (graph.clone(), prefix.clone());
        async move { runs_stored(&graph, &prefix).await >= 20 }
    })
    .await;
    assert!(started.is_some(), "the replay wrote nothing in 60 s");
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("reaped");
    assert!(!status.success(), "killed, not finished");
    assert!(
        !segments(&dir).is_empty(),
        "the killed process left its buffer"
    );

    // A fresh process on the same directory writes what the killed one had accepted.
    let drained = drain(&env, &dir);
    assert!(drained["records"].as_u64().unwrap_or(0) > 0, "{drained}");
    assert_eq!(drained["rows_left"], 0, "{drained}");
    assert!(segments(&dir).is_empty(), "drained: no segment left");
    // Every run the database shows as ended is complete and exact.
    let store = store().await;
    for (exec, (implied_values, status)) in &want {
        let Some(rec) = store.execution(&exec_id(exec)).await.expect("read") else {
            continue;
        };
        if rec.end_time.is_some() {
            assert_eq!(rec.status, *status, "{exec}");
            assert_eq!(
                rec.tasks_successful + rec.tasks_failed,
                implied_values.ok + implied_values.failed,
                "{exec}: an ended run has all its tasks"
            );
        }
    }

    // A re-run of the replay completes the rest.
    let output = runtally(&env)
        .args(["replay", file.to_str().expect("path")])
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
    assert_implied(&store, &raw_graph(), &want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_killed_during_an_outage_loses_nothing_it_accepted_and_holds_its_directory() {
    init_tracing();
    let db = PrivateDb::start("kill-down");
    let scratch = Scratch::new("kill-down");
    let prefix = unique("killdown");
    // 100 runs of 20 tasks with 20 KB outputs: 40 MB, more than memory may hold (16 MiB).
    let events = stream(&prefix, 100, 20, 20_000);
    let want = implied(&events);
    let file = scratch.path("events.jsonl");
    std::fs::write(&file, jsonl(&events)).expect("events file");
    let dir = scratch.path("buffer");
    db.stop();

    let (mut child, lines) = start_replay(
        &db.env(),
        &file,
        &dir,
        &[
            "--when-full",
            "overflow",
            "--max-batch-bytes",
            "1048576",
            "--max-pending-bytes",
            "16777216",
        ],
    );
    // The replay says when everything it accepted is on disk: all of the stream.
    wait_for_line(
        &lines,
        "of 100 runs accepted, all on disk",
        Duration::from_secs(120),
    );
    // Another process cannot take the directory while this one holds it.
    let refused = runtally(&db.env())
        .args(["drain", "--buffer-dir", dir.to_str().expect("path")])
        .output()
        .expect("runtally drain");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("is in use by another process"), "{stderr}");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");

    db.restart();
    let drained = drain(&db.env(), &dir);
    assert_eq!(drained["rows_left"], 0, "{drained}");
    assert!(
        drained["skipped"].as_array().is_some_and(Vec::is_empty),
        "{drained}"
    );
    assert!(segments(&dir).is_empty(), "drained: no segment left");
    // Everything the killed process accepted, exact, without a re-run.
    assert_implied(&db.store(), &db.graph(), &want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_and_corrupt_records_are_reported_with_their_place_and_every_other_one_is_written() {
    init_tracing();
    let db = PrivateDb::start("kill-torn");
    let scratch = Scratch::new("kill-torn");
    let prefix = unique("torn");
    let events = stream(&prefix, 30, 10, 2_000);
    let want = implied(&events);
    let file = scratch.path("events.jsonl");
    std::fs::write(&file, jsonl(&events)).expect("events file");
    let dir = scratch.path("buffer");
    db.stop();
    let (mut child, lines) = start_replay(&db.env(), &file, &dir, &[]);
    wait_for_line(&lines, "all on disk", Duration::from_secs(120));
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");

    // Damage the log as a failing disk and a power cut would: one byte of a record in the
    // middle, and half a record where the next write would have gone.
    let segment = segments(&dir).pop().expect("a segment");
    let mut bytes = std::fs::read(&segment).expect("read segment");
    let header = 16;
    // A frame's bytes, rows and sequence number (the format in src/buffer/record.rs).
    let frame = |bytes: &[u8], at: usize| {
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(bytes[at + 12..at + 20].try_into().expect("8 bytes"));
        (24 + u32_at(at + 4) as usize, u32_at(at + 20), seq)
    };
    // Records from the header to the end marker (no payload, sequence number 0), which
    // padding may follow.
    let mut offsets = vec![header];
    while let Some(&at) = offsets.last() {
        let (len, _, seq) = frame(&bytes, at);
        if len == 24 && seq == 0 {
            break;
        }
        offsets.push(at + len);
    }
    let torn_at = offsets.pop().expect("the end marker's offset");
    assert!(offsets.len() > 10, "{} records", offsets.len());
    let corrupt = offsets[offsets.len() / 2];
    let (_, lost_rows, _) = frame(&bytes, corrupt);
    bytes[corrupt + 30] ^= 0xff;
    let half = frame(&bytes, header).0 / 2;
    let copy = bytes[header..header + half].to_vec();
    bytes.truncate(torn_at);
    bytes.extend_from_slice(&copy);
    std::fs::write(&segment, &bytes).expect("damage");

    db.restart();
    let drained = drain(&db.env(), &dir);
    let skipped = drained["skipped"].as_array().expect("skipped list");
    let places: Vec<(u64, String)> = skipped
        .iter()
        .map(|s| {
            assert_eq!(s["segment"], segment.display().to_string());
            (
                s["offset"].as_u64().expect("offset"),
                s["reason"].as_str().expect("reason").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        places,
        vec![
            (corrupt as u64, "Corrupt".to_owned()),
            (torn_at as u64, "Torn".to_owned())
        ],
        "{drained}"
    );
    assert_eq!(drained["metrics"]["buffer"]["records_skipped"], 2);
    assert_eq!(drained["rows_left"], 0, "{drained}");
    // Every other record was written: the rows in the graph are all but the corrupt one's.
    let want_rows: i64 =
        want.values().map(|(i, _)| i.ok + i.failed + 1).sum::<i64>() - i64::from(lost_rows);
    let q = neo4rs::query(
        "MATCH (n:Node) WHERE n.id STARTS WITH $prefix AND n.type IN \
         ['orchestration_execution', 'task_execution'] RETURN count(n) AS n",
    )
    .param("prefix", prefix.as_str());
    let mut rows = db.graph().execute(q).await.expect("count");
    let stored = rows
        .next()
        .await
        .expect("row")
        .expect("one row")
        .get::<i64>("n")
        .expect("n");
    // A record holds one run's execution row and tasks; placeholders repeat an execution row,
    // so the corrupt record may also hold a row another record carries again.
    assert!(
        stored >= want_rows && stored <= want_rows + i64::from(lost_rows),
        "{stored} nodes stored, {want_rows} expected without the corrupt record's {lost_rows} rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_counted_and_every_row_is_still_written() {
    init_tracing();
    let scratch = Scratch::new("full-disk");
    let prefix = unique("fulldisk");
    let events = stream(&prefix, 60, 20, 5_000);
    let want = implied(&events);
    let file = scratch.path("events.jsonl");
    std::fs::write(&file, jsonl(&events)).expect("events file");
    let dir = scratch.path("buffer");
    // A file-size limit of 1 MiB stands in for a full disk (EFBIG, as ENOSPC would be): the
    // log's first megabyte is appended, the rest is refused. SIGXFSZ is ignored, as a
    // process's default handler would otherwise kill it.
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 2048; exec \"$0\" replay {} --buffer-dir {}",
            file.display(),
            dir.display()
        ))
        .arg(env!("CARGO_BIN_EXE_runtally"))
        .env_remove("NEO4J_URI")
        .envs(db_env())
        .output()
        .expect("sh");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("not all on disk"), "{stderr}");
    let line: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON line");
    assert!(
        line["metrics"]["buffer"]["errors"].as_u64().unwrap_or(0) > 0,
        "{line}"
    );
    assert!(stderr.contains("no space left to append to"), "{stderr}");
    assert_implied(&store().await, &raw_graph(), &want).await;
}
