//! Memory per live idle run: resident memory added by 100,000 begun-and-idle runs (their actor,
//! mailbox, counters, registry entry and shared state), with a store that discards batches.
//! Prints one JSON line. Linux only (reads /proc/self/status).
//!
//! ```text
//! cargo bench --bench idle_run_memory
//! ```

use std::sync::Arc;
use std::time::Duration;

use runtally::store::NullStore;
use runtally::{Aggregator, AggregatorConfig, ExecutionId, PlanId, RunStart};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too, with a small count.
    let runs: usize = if std::env::args().any(|a| a == "--bench") {
        100_000
    } else {
        1_000
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let config = AggregatorConfig::builder().build().expect("config");
        let aggregator = Aggregator::start_with_store(config, Arc::new(NullStore::new()))
            .await
            .expect("start");
        let plan = PlanId::new("plan").expect("id");
        let ids: Vec<ExecutionId> = (0..runs)
            .map(|r| ExecutionId::new(format!("idle-run-{r:06}")).expect("id"))
            .collect();
        // Let the runtime and the first writes settle before the baseline.
        aggregator.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = rss_kib();
        let mut handles = Vec::with_capacity(runs);
        for id in &ids {
            handles.push(
                aggregator
                    .begin_run(RunStart::new(id.clone(), plan.clone(), 10))
                    .expect("begin"),
            );
        }
        aggregator.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_kib();
        let per_run = (after.saturating_sub(before) * 1024) as f64 / runs as f64;
        println!(
            "{}",
            serde_json::json!({
                "bench": "idle_run_memory",
                "runs": runs,
                "rss_before_mib": before as f64 / 1024.0,
                "rss_after_mib": after as f64 / 1024.0,
                "bytes_per_idle_run": per_run.round(),
                "live_runs": aggregator.live_runs(),
            })
        );
        drop(handles);
        aggregator.shutdown(Duration::from_secs(30)).await;
    });
}
