//! Bytes allocated per result between the sender and the store: results (with outputs of 500 B
//! and 400 KB) are built before counting starts, then sent with `task_finished`, flushed and
//! written. With the null store that measures runtally's own copies; with `NEO4J_URI` set it
//! also writes them to that database, which adds the driver's copies (its Bolt parameters and
//! wire buffer). Prints one JSON line per case: the output bytes, the bytes and allocations
//! counted per result, and the bytes beyond the output's own size as a multiple of it.
//!
//! ```text
//! cargo bench --bench allocations_per_result
//! ```
#![allow(unsafe_code)] // a counting global allocator, delegating to the system's

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use runtally::store::{GraphStore, Neo4jStore, NullStore};
use runtally::{
    Aggregator, AggregatorConfig, ExecutionId, Neo4jConfig, PlanId, RunStart, TaskDefinition,
    TaskId, TaskResult,
};

struct Counting;

static BYTES: AtomicU64 = AtomicU64::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call goes to the system allocator with the caller's arguments; the counters
// are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A growth counts as a new allocation of the new size (what a copy would cost).
        if new_size > layout.size() {
            BYTES.fetch_add(new_size as u64, Relaxed);
            ALLOCATIONS.fetch_add(1, Relaxed);
        }
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn results(runs: usize, tasks: usize, output: usize) -> Vec<Vec<(TaskDefinition, TaskResult)>> {
    (0..runs)
        .map(|_| {
            (0..tasks)
                .map(|t| {
                    let id = TaskId::new(format!("task-{t}")).expect("id");
                    (
                        TaskDefinition::new(id.clone()).with_title("Step"),
                        TaskResult::success(id)
                            .with_tokens(1000, 500)
                            .with_tool_calls(3)
                            .with_output("o".repeat(output)),
                    )
                })
                .collect()
        })
        .collect()
}

async fn measure(store: Arc<dyn GraphStore>, label: &str, output: usize, results_total: usize) {
    let runs = 10;
    let per_run = results_total / runs;
    let inputs = results(runs, per_run, output);
    let config = AggregatorConfig::builder()
        .with_max_pending_rows(1_000_000)
        .with_max_pending_bytes(4 << 30)
        .build()
        .expect("config");
    let aggregator = Aggregator::start_with_store(config, store)
        .await
        .expect("start");
    let prefix = format!("alloc-{}-{}", std::process::id(), output);
    let handles: Vec<_> = (0..runs)
        .map(|r| {
            aggregator
                .begin_run(RunStart::new(
                    ExecutionId::new(format!("{prefix}-{r}")).expect("id"),
                    PlanId::new("p").expect("id"),
                    per_run as u64,
                ))
                .expect("begin")
        })
        .collect();
    aggregator.flush().await.expect("flush");
    let (bytes, allocations) = (BYTES.load(Relaxed), ALLOCATIONS.load(Relaxed));
    for (handle, tasks) in handles.iter().zip(inputs) {
        for (task, result) in tasks {
            handle.task_finished(task, result).await.expect("accepted");
        }
    }
    aggregator.flush().await.expect("flush");
    let n = (runs * per_run) as f64;
    let bytes = (BYTES.load(Relaxed) - bytes) as f64 / n;
    let allocations = (ALLOCATIONS.load(Relaxed) - allocations) as f64 / n;
    println!(
        "{}",
        serde_json::json!({
            "bench": "allocations_per_result",
            "store": label,
            "output_bytes": output,
            "results": n,
            "bytes_per_result": bytes.round(),
            "allocations_per_result": (allocations * 10.0).round() / 10.0,
            "extra_output_copies": ((bytes - 1000.0).max(0.0) / output as f64 * 100.0).round() / 100.0,
        })
    );
    aggregator.shutdown(Duration::from_secs(60)).await;
}

fn main() {
    // `cargo test --benches` runs this too: a smaller count there.
    let full = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for (output, total) in [(500, 20_000), (400_000, 200)] {
            let total = if full { total } else { total / 10 };
            measure(Arc::new(NullStore::new()), "null", output, total).await;
            if let Ok(config) = Neo4jConfig::from_env().and_then(|b| b.build()) {
                let store = Neo4jStore::new(&config).expect("store");
                measure(Arc::new(store), "neo4j", output, total).await;
            }
        }
    });
}
