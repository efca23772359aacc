//! The database goes away in the middle of a stream and comes back: the orchestrator never
//! notices (results keep being accepted), runtally retries, and afterwards every value in the
//! database is what the input implies, nothing lost, nothing duplicated.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::private_db::PrivateDb;
use common::*;
use runtally::{Aggregator, AggregatorConfig, RetryPolicy};
use runtally_cli::workload::WorkloadSpec;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ten_second_outage_loses_and_duplicates_nothing() {
    init_tracing();
    let db = PrivateDb::start("restart");
    let config = AggregatorConfig::builder()
        .with_neo4j(db.neo4j())
        .with_flush_interval(Duration::from_millis(50))
        .with_write_timeout(Duration::from_secs(3))
        .with_retry(RetryPolicy::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ))
        .build()
        .expect("config");
    let agg = Aggregator::start(config).await.expect("start");
    let spec = WorkloadSpec {
        runs: 100,
        tasks: 50,
        fail_rate: 0.1,
        output_bytes: 100,
        prefix: unique("outage"),
        cancel_every: 7,
        ..WorkloadSpec::default()
    };
    let events = spec.events().expect("events");
    let want = implied(&events);
    let accepted = |agg: &Aggregator| {
        let m = agg.metrics();
        m.tasks_succeeded + m.tasks_failed
    };
    // Sixteen runs at a time, each task 20 ms after the previous one, as an orchestrator
    // would. The first 20 runs go before the outage; the rest wait until the database is down
    // (a gate, not a guess at timing), so most results arrive during the outage.
    let (down_tx, down_rx) = tokio::sync::watch::channel(false);
    let driver = {
        let agg = agg.clone();
        let spec = spec.clone();
        tokio::spawn(async move {
            let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let workers = (0..16).map(|_| {
                let (agg, spec, next) = (agg.clone(), spec.clone(), next.clone());
                let mut down = down_rx.clone();
                tokio::spawn(async move {
                    loop {
                        let r = next.fetch_add(1, Ordering::Relaxed);
                        if r >= spec.runs {
                            break;
                        }
                        if r >= 20 {
                            down.wait_for(|d| *d).await.expect("gate");
                        }
                        let run = spec.run(r).expect("run");
                        let handle = agg
                            .begin_run(
                                runtally::RunStart::new(
                                    run.execution_id,
                                    run.plan_id,
                                    run.total_tasks,
                                )
                                .with_start_time(run.start_time),
                            )
                            .expect("begin");
                        for (task, result) in run.tasks {
                            handle.task_finished(task, result).await.expect("accepted");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        if run.cancelled {
                            handle.cancel(run.end_time).await.expect("cancel");
                        } else {
                            handle.finish(run.end_time).await.expect("finish");
                        }
                    }
                })
            });
            for worker in futures_util::future::join_all(workers).await {
                worker.expect("worker");
            }
        })
    };

    // Let some of it be written, then take the database away for ten seconds.
    eventually(Duration::from_secs(60), || async {
        agg.metrics().task_rows_written > 200
    })
    .await
    .expect("writes start");
    db.stop();
    let down_at = Instant::now();
    let accepted_at_stop = accepted(&agg);
    down_tx.send_replace(true);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        !agg.metrics().database_up,
        "the outage is visible in metrics"
    );
    let accepted_while_down = accepted(&agg) - accepted_at_stop;
    db.restart();
    let outage = down_at.elapsed();

    driver.await.expect("every result accepted, outage or not");
    agg.flush().await.expect("flush after the outage");
    let report = agg.shutdown(Duration::from_secs(30)).await;
    assert!(report.complete);
    assert!(report.metrics.retries > 0, "writes were retried");
    assert!(report.metrics.database_up);
    eprintln!(
        "outage {outage:?}: {accepted_while_down} results accepted while down; {} retries; \
         flush p99 {} ms",
        report.metrics.retries, report.metrics.flush_latency.p99_ms
    );
    assert!(
        accepted_while_down > 1000,
        "the orchestrator kept going while the database was down: {accepted_while_down}"
    );
    assert_eq!(
        report.metrics.task_rows_written as usize,
        5000 - (100 / 7) * 25
    );

    let store = db.store();
    let graph = db.graph();
    assert_implied(&store, &graph, &want).await;
}
