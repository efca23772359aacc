//! The disk buffer's actor logic, on an in-memory store (persistence itself is proven against
//! the real database in `cli/tests/`): rows accepted while the store fails are in the buffer,
//! a later aggregator on the same directory writes them first, with overflow memory stays under
//! the bound while senders never wait for the store, a second aggregator cannot open a
//! directory in use, and either way of writing (direct, page cache) reads the other's.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use runtally::store::MemoryStore;
use runtally::{
    Aggregator, AggregatorConfig, BufferError, RetryPolicy, RunStart, StartError, StoreError,
    StoreErrorKind, TaskDefinition, TaskResult, WhenFull,
};

fn config(dir: &std::path::Path) -> runtally::AggregatorConfigBuilder {
    AggregatorConfig::builder()
        .with_buffer_dir(dir)
        .with_flush_interval(Duration::from_millis(10))
        .with_retry(RetryPolicy::new(
            Duration::from_millis(5),
            Duration::from_millis(20),
        ))
}

fn down(store: &MemoryStore) {
    store.fail_with(|_| Some(StoreError::new(StoreErrorKind::Connection, "down")));
}

fn segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .expect("list")
        .filter(|e| {
            e.as_ref()
                .map(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .unwrap_or(false)
        })
        .count()
}

/// Begins `runs` runs of `tasks` tasks each with `output` bytes of output, sends every result
/// and finishes them; returns their ids.
async fn send(
    agg: &Aggregator,
    prefix: &str,
    runs: usize,
    tasks: usize,
    output: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for r in 0..runs {
        let id = format!("{prefix}-{r}");
        let run = agg
            .begin_run(RunStart::new(
                exec_id(&id),
                plan_id("plan-buffer"),
                tasks as u64,
            ))
            .expect("begin");
        for t in 0..tasks {
            let task = task_id(&format!("t{t}"));
            let result = TaskResult::success(task.clone())
                .with_output("x".repeat(output))
                .with_tokens(10, 3);
            run.task_finished(TaskDefinition::new(task), result)
                .await
                .expect("accepted");
        }
        run.finish(chrono::Utc::now()).await.expect("finish");
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn rows_accepted_while_the_store_is_down_are_written_by_the_next_aggregator_on_the_directory()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let first = MemoryStore::new();
    down(&first);
    let agg = Aggregator::start_with_store(
        config(dir.path()).build().expect("config"),
        Arc::new(first.clone()),
    )
    .await
    .expect("start");
    let ids = send(&agg, &unique("buf"), 3, 40, 100).await;
    // Every accepted result is on disk once this returns.
    agg.sync_buffer().await.expect("on disk");
    // Gone without a shutdown, as a killed process is (its memory is lost).
    drop(agg);
    assert_eq!(first.task_count(), 0);

    let second = MemoryStore::new();
    let agg = Aggregator::start_with_store(
        config(dir.path()).build().expect("config"),
        Arc::new(second.clone()),
    )
    .await
    .expect("start again");
    let recovery = agg.buffer_recovery().expect("a buffer").clone();
    assert!(recovery.records >= 6, "{recovery:?}");
    assert!(recovery.skipped.is_empty());
    agg.flush().await.expect("flush writes the backlog");
    for id in &ids {
        assert_eq!(second.tasks_of(id).len(), 40, "{id}");
        let run = second.execution(id).expect("stored");
        assert_eq!(run.tasks_successful, 40);
        assert!(run.end_time.is_some(), "the final state came back too");
    }
    let report = agg.shutdown(Duration::from_secs(5)).await;
    assert!(report.complete, "{report:?}");
    assert_eq!(
        segments(dir.path()),
        0,
        "everything durable: no segment left"
    );
}

#[tokio::test]
async fn a_buffer_written_through_the_page_cache_and_one_written_directly_read_the_same() {
    // Each way of writing reads what the other left: (page cache, then direct) and back.
    for first_direct in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = MemoryStore::new();
        down(&first);
        let agg = Aggregator::start_with_store(
            config(dir.path())
                .with_buffer_direct_writes(first_direct)
                .build()
                .expect("config"),
            Arc::new(first.clone()),
        )
        .await
        .expect("start");
        // Outputs over a direct write's 1 MiB window, and small ones.
        let big = send(&agg, &unique("big"), 2, 3, 700_000).await;
        let small = send(&agg, &unique("small"), 2, 30, 10).await;
        agg.sync_buffer().await.expect("on disk");
        drop(agg);

        let second = MemoryStore::new();
        let agg = Aggregator::start_with_store(
            config(dir.path())
                .with_buffer_direct_writes(!first_direct)
                .build()
                .expect("config"),
            Arc::new(second.clone()),
        )
        .await
        .expect("start again");
        let recovery = agg.buffer_recovery().expect("a buffer").clone();
        assert!(recovery.skipped.is_empty(), "{recovery:?}");
        agg.flush().await.expect("flush writes the backlog");
        for (ids, tasks, output) in [(&big, 3, 700_000), (&small, 30, 10)] {
            for id in ids {
                let rows = second.tasks_of(id);
                assert_eq!(rows.len(), tasks, "{id}");
                assert!(rows.iter().all(|t| t.output.len() == output), "{id}");
            }
        }
        let report = agg.shutdown(Duration::from_secs(5)).await;
        assert!(report.complete, "{report:?}");
    }
}

#[tokio::test]
async fn sync_buffer_says_when_there_is_no_buffer() {
    let agg = Aggregator::start_with_store(
        AggregatorConfig::builder().build().expect("config"),
        Arc::new(MemoryStore::new()),
    )
    .await
    .expect("start");
    assert!(matches!(
        agg.sync_buffer().await,
        Err(runtally::SyncBufferError::NoBuffer)
    ));
    assert!(agg.shutdown(Duration::from_secs(5)).await.complete);
}

#[tokio::test]
async fn a_second_aggregator_cannot_open_a_buffer_directory_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agg = Aggregator::start_with_store(
        config(dir.path()).build().expect("config"),
        Arc::new(MemoryStore::new()),
    )
    .await
    .expect("start");
    let err = Aggregator::start_with_store(
        config(dir.path()).build().expect("config"),
        Arc::new(MemoryStore::new()),
    )
    .await
    .expect_err("locked");
    match err {
        StartError::Buffer(BufferError::Locked { dir: locked }) => assert_eq!(locked, dir.path()),
        other => panic!("expected a locked directory, got {other:?}"),
    }
    assert!(agg.shutdown(Duration::from_secs(5)).await.complete);
    // Released with the first aggregator.
    let again = Aggregator::start_with_store(
        config(dir.path()).build().expect("config"),
        Arc::new(MemoryStore::new()),
    )
    .await
    .expect("free again");
    assert!(again.shutdown(Duration::from_secs(5)).await.complete);
}

#[tokio::test]
async fn with_overflow_senders_never_wait_for_a_down_store_and_memory_stays_under_the_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MemoryStore::new();
    down(&store);
    const BOUND: usize = 8 << 20;
    let config = config(dir.path())
        .with_when_full(WhenFull::Overflow)
        .with_max_batch_bytes(1 << 20)
        .with_max_pending_bytes(BOUND)
        .build()
        .expect("config");
    let budget = config.row_budget();
    let agg = Aggregator::start_with_store(config, Arc::new(store.clone()))
        .await
        .expect("start");
    // 40 MiB of outputs, five times the whole bound, while the store is down.
    let sending = {
        let agg = agg.clone();
        tokio::spawn(async move { send(&agg, &unique("over"), 4, 100, 100_000).await })
    };
    // The sender finishes while the store is still down: it never waited for the store.
    // Meanwhile the pending gauge is sampled for the memory bound.
    let mut peak = 0;
    while !sending.is_finished() {
        peak = peak.max(agg.metrics().pending_bytes);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ids = sending
        .await
        .expect("every result accepted while the store was down");
    let m = agg.metrics();
    assert!(m.buffer.overflow_events >= 1, "{:?}", m.buffer);
    assert!(m.buffer.backlog_rows > 0, "{:?}", m.buffer);
    assert!(
        peak <= budget as u64,
        "pending {peak} over the budget {budget}"
    );
    assert_eq!(store.task_count(), 0);
    store.heal();
    agg.flush().await.expect("flush");
    for id in &ids {
        assert_eq!(store.tasks_of(id).len(), 100, "{id}");
        assert_eq!(store.execution(id).expect("stored").tasks_successful, 100);
    }
    let report = agg.shutdown(Duration::from_secs(5)).await;
    assert!(report.complete, "{report:?}");
    assert_eq!(report.metrics.buffer.backlog_rows, 0);
}
