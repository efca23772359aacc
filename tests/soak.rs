//! Soak: 100,000 tasks over 1,000 runs, 32 runs at a time, random failures and re-sent
//! results, and one database restart in the middle. Afterwards: nothing lost, nothing
//! duplicated, and memory back near where it started.
//!
//! Takes a few minutes, so it is ignored by default:
//!
//! ```text
//! cargo test --release --test soak -- --ignored --nocapture
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
                    let mut rng = fastrand::Rng::with_seed(r as u64);
                    let exec = format!("{prefix}-{r}");
                    let start = chrono::Utc::now();
                    let run = agg
                        .begin_run(
                            RunStart::new(exec_id(&exec), plan_id("p"), TASKS as u64)
                                .with_start_time(start),
                        )
                        .expect("begin");
                    let mut implied = Implied {
                        total: TASKS as i64,
                        ..Implied::default()
                    };
                    for t in 0..TASKS {
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
                            tokio::time::sleep(Duration::from_millis(1)).await;
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
                    want.lock().expect("lock").insert(exec, (implied, status));
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
