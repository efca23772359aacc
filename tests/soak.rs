//! Soak: 100,000 tasks over 1,000 runs, 32 runs at a time, random failures and re-sent
//! results, and one database restart in the middle. Afterwards: nothing lost, nothing
//! duplicated, and memory back near where it started. And ten minutes (`RUNTALLY_SOAK_SECS`)
//! of runs through a disk buffer with overflow while the database goes away for 20 s every
//! minute: nothing lost, memory flat.
//!
//! Takes a few minutes, so it is ignored by default:
//!
//! ```text
//! cargo test --release --test soak -- --ignored --nocapture --test-threads 1
//! ```

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::private_db::PrivateDb;
use common::*;
use runtally::{Aggregator, AggregatorConfig, RunStart, RunStatus};

fn rss_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Sends one run of `tasks` results (3 % failing, 5 % sent twice: an earlier attempt, then the
/// final result) with 500-byte outputs, finishes it, and returns what it implies.
async fn send_run(
    agg: &Aggregator,
    exec: &str,
    seed: u64,
    tasks: usize,
    pause: Duration,
) -> (Implied, RunStatus) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let start = chrono::Utc::now();
    let run = agg
        .begin_run(RunStart::new(exec_id(exec), plan_id("p"), tasks as u64).with_start_time(start))
        .expect("begin");
    let mut implied = Implied {
        total: tasks as i64,
        ..Implied::default()
    };
    for t in 0..tasks {
        let failed = rng.u8(0..100) < 3;
        let (i, o, c) = (rng.u64(1..5000), rng.u64(1..2000), rng.u64(0..6));
        if rng.u8(0..100) < 5 {
            // An earlier attempt, replaced by the final result below.
            let (d, first) = result(&format!("t{t}"), true, 9, 9, 9);
            run.task_finished(d, first.with_output("y".repeat(500)))
                .await
                .expect("first");
        }
        let (d, last) = result(&format!("t{t}"), failed, i, o, c);
        run.task_finished(d, last.with_output("x".repeat(500)))
            .await
            .expect("task");
        if failed {
            implied.failed += 1
        } else {
            implied.ok += 1
        }
        implied.tokens_in += i as i64;
        implied.tokens_out += o as i64;
        implied.calls += c as i64;
        if t % 10 == 0 {
            tokio::time::sleep(pause).await;
        }
    }
    let end = start + chrono::Duration::seconds(90);
    run.finish(end).await.expect("finish");
    implied.duration = 90_000;
    let status = if implied.failed > 0 {
        RunStatus::Failed
    } else {
        RunStatus::Completed
    };
    (implied, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak run of several minutes; see the file's doc"]
async fn soak_a_hundred_thousand_tasks_with_a_database_restart() {
    const RUNS: usize = 1000;
    const TASKS: usize = 100;
    let db = PrivateDb::start("soak");
    let config = AggregatorConfig::builder()
        .with_neo4j(db.neo4j())
        .with_write_timeout(Duration::from_secs(5))
        .build()
        .expect("config");
    let agg = Aggregator::start(config).await.expect("start");
    let rss_before = rss_mib("VmRSS:");
    let prefix = unique("soak");
    let want: Arc<Mutex<HashMap<String, (Implied, RunStatus)>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let (agg, next, want, prefix) =
                (agg.clone(), next.clone(), want.clone(), prefix.clone());
            tokio::spawn(async move {
                loop {
                    let r = next.fetch_add(1, Ordering::Relaxed);
                    if r >= RUNS {
                        break;
                    }
                    let exec = format!("{prefix}-{r}");
                    let outcome =
                        send_run(&agg, &exec, r as u64, TASKS, Duration::from_millis(1)).await;
                    want.lock().expect("lock").insert(exec, outcome);
                }
            })
        })
        .collect();

    // Restart the database about a third of the way through.
    eventually(Duration::from_secs(600), || async {
        next.load(Ordering::Relaxed) > RUNS / 3
    })
    .await
    .expect("a third of the runs begun");
    db.stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    db.restart();

    for worker in workers {
        worker.await.expect("worker");
    }
    agg.flush().await.expect("flush");
    let seconds = started.elapsed().as_secs_f64();
    let rss_peak = rss_mib("VmHWM:");
    let metrics = agg.metrics();
    assert_eq!(agg.live_runs(), 0, "every finished run left the registry");
    let report = agg.shutdown(Duration::from_secs(60)).await;
    assert!(report.complete);
    let rss_after = rss_mib("VmRSS:");
    eprintln!(
        "soak: {} tasks ({} results incl. re-sent) over {RUNS} runs in {seconds:.1} s; \
         {} retries; RSS before {rss_before:.1} MiB, peak {rss_peak:.1} MiB, after {rss_after:.1} MiB",
        metrics.task_rows_written,
        metrics.tasks_succeeded + metrics.tasks_failed,
        metrics.retries,
    );
    assert!(metrics.retries > 0, "the restart was noticed");

    let want = want.lock().expect("lock").clone();
    assert_eq!(want.len(), RUNS);
    assert_implied(&db.store(), &db.graph(), &want).await;
    assert!(
        rss_after < rss_before + (rss_peak - rss_before) / 2.0 + 32.0,
        "memory came back down: before {rss_before:.1}, peak {rss_peak:.1}, after {rss_after:.1} MiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak run of ten minutes; see the file's doc"]
async fn soak_outages_every_minute_through_the_disk_buffer() {
    let seconds: u64 = std::env::var("RUNTALLY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    const TASKS: usize = 50;
    let db = Arc::new(PrivateDb::start("soak-buffer"));
    let buffer = std::env::temp_dir().join(unique("soak-buffer"));
    let config = AggregatorConfig::builder()
        .with_neo4j(db.neo4j())
        .with_write_timeout(Duration::from_secs(5))
        .with_max_pending_bytes(64 << 20)
        .with_buffer_dir(&buffer)
        .with_when_full(runtally::WhenFull::Overflow)
        .build()
        .expect("config");
    let agg = Aggregator::start(config).await.expect("start");
    let prefix = unique("soakbuf");
    let want: Arc<Mutex<HashMap<String, (Implied, RunStatus)>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    // Eight senders, each pausing 40 ms every ten results: about 2,000 results a second, well
    // under what the database takes, so each outage's backlog drains before the next one (a
    // faster stream would grow the backlog without bound, as overflow is meant to allow).
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (agg, next, want, prefix) =
                (agg.clone(), next.clone(), want.clone(), prefix.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let r = next.fetch_add(1, Ordering::Relaxed);
                    let exec = format!("{prefix}-{r}");
                    let outcome =
                        send_run(&agg, &exec, r as u64, TASKS, Duration::from_millis(40)).await;
                    want.lock().expect("lock").insert(exec, outcome);
                }
            })
        })
        .collect();
    // Every minute the database goes away for 20 s; resident memory is sampled meanwhile.
    let mut samples = Vec::new();
    let rss_before = rss_mib("VmRSS:");
    let mut outages = 0;
    while Instant::now() < until {
        let minute = Instant::now() + Duration::from_secs(60);
        tokio::time::sleep(
            Duration::from_secs(40).min(until.saturating_duration_since(Instant::now())),
        )
        .await;
        if Instant::now() >= until {
            break;
        }
        db.stop();
        outages += 1;
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            samples.push(rss_mib("VmRSS:"));
        }
        db.restart();
        tokio::time::sleep(minute.saturating_duration_since(Instant::now())).await;
        samples.push(rss_mib("VmRSS:"));
    }
    for worker in workers {
        worker.await.expect("worker");
    }
    eprintln!("soak: {} runs sent; flushing", next.load(Ordering::Relaxed));
    agg.flush().await.expect("flush");
    eprintln!("soak: flushed; checking");
    let metrics = agg.metrics();
    let report = agg.shutdown(Duration::from_secs(60)).await;
    assert!(report.complete, "{report:?}");
    eprintln!(
        "soak with a disk buffer: {} tasks over {} runs in {seconds} s, {outages} outages, {} \
         overflows, {} MB appended, {} records read back; RSS before {rss_before:.1} MiB, \
         samples {samples:.0?}",
        metrics.task_rows_written,
        next.load(Ordering::Relaxed),
        metrics.buffer.overflow_events,
        metrics.buffer.bytes_appended / 1_000_000,
        metrics.buffer.records_loaded,
    );
    assert!(outages >= 1);
    let want = want.lock().expect("lock").clone();
    // Every run at once (totals over the prefix: nothing lost, nothing counted twice), then a
    // sample of runs one by one.
    let q = neo4rs::query(
        "MATCH (e:Node {type: 'orchestration_execution'}) WHERE e.id STARTS WITH $prefix \
         OPTIONAL MATCH (e)-[:HAS_TASK_EXECUTION]->(t:Node) \
         WITH e, count(t) AS nodes \
         RETURN count(e) AS runs, sum(nodes) AS nodes, sum(e.tasksSuccessful) AS ok, \
                sum(e.tasksFailed) AS failed, sum(e.tokensInput) AS tokens_in, \
                sum(e.toolCalls) AS calls",
    )
    .param("prefix", prefix.as_str());
    let mut rows = db.graph().execute(q).await.expect("totals");
    let row = rows.next().await.expect("row").expect("one row");
    let get = |k: &str| row.get::<i64>(k).expect(k);
    let sum = |f: fn(&Implied) -> i64| want.values().map(|(i, _)| f(i)).sum::<i64>();
    assert_eq!(get("runs"), want.len() as i64);
    assert_eq!(
        get("nodes"),
        sum(|i| i.ok + i.failed),
        "one task node per task"
    );
    assert_eq!(get("ok"), sum(|i| i.ok));
    assert_eq!(get("failed"), sum(|i| i.failed));
    assert_eq!(get("tokens_in"), sum(|i| i.tokens_in));
    assert_eq!(get("calls"), sum(|i| i.calls));
    let sample: HashMap<_, _> = want
        .iter()
        .filter(|(exec, _)| exec.ends_with('7'))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_implied(&db.store(), &db.graph(), &sample).await;
    // Memory flat: the second half of the run needs no more than the first half did.
    let half = samples.len() / 2;
    let first = samples[..half].iter().copied().fold(0.0, f64::max);
    let second = samples[half..].iter().copied().fold(0.0, f64::max);
    assert!(
        second <= first + 32.0,
        "resident memory grew: first half peak {first:.1} MiB, second half {second:.1} MiB"
    );
    let left = std::fs::read_dir(&buffer)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(left, 0, "the buffer is empty");
    let _ = std::fs::remove_dir_all(&buffer);
}
