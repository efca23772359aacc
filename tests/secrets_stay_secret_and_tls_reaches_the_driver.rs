//! The password never appears in `Debug` output, logs or metrics; values only ever reach the
//! database as parameters (see the verbatim tests); `bolt+s://` and `neo4j+s://` make the
//! driver speak TLS.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use runtally::store::{GraphStore, Neo4jStore};
use runtally::{Aggregator, AggregatorConfig, Neo4jConfig, RunStart, StoreErrorKind};

/// Collects every log line of every thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_never_shows_in_debug_logs_or_metrics() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .init();

    let neo4j = neo4j_config();
    let password = neo4j.password().expose().to_owned();
    assert!(password.len() >= 8, "a real password to look for");
    let config = AggregatorConfig::from_env()
        .expect("env")
        .with_flush_interval(Duration::from_millis(10))
        .build()
        .expect("config");
    let debug = format!("{config:?} {neo4j:?}");
    let agg = Aggregator::start(config).await.expect("start");
    let run = agg
        .begin_run(RunStart::new(exec_id(&unique("secret")), plan_id("p"), 1))
        .expect("begin");
    let (d, r) = result("a", true, 1, 1, 1);
    run.task_finished(d, r).await.expect("task");
    run.finish(chrono::Utc::now()).await.expect("finish");
    agg.flush().await.expect("flush");
    let debug = format!("{debug} {agg:?} {run:?}");
    let metrics = serde_json::to_string(&agg.metrics()).expect("json");
    let report = agg.shutdown(Duration::from_secs(10)).await;
    let report = format!("{report:?}");

    let logs = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf8");
    assert!(logs.contains("batch written"), "TRACE logs were captured");
    for (what, text) in [
        ("debug", &debug),
        ("metrics", &metrics),
        ("report", &report),
        ("logs", &logs),
    ] {
        assert!(!text.contains(&password), "the password leaked into {what}");
    }
}

#[tokio::test]
async fn tls_schemes_make_the_driver_speak_tls() {
    let neo4j = neo4j_config();
    let plain_host = neo4j
        .uri()
        .split("://")
        .last()
        .expect("host:port")
        .to_owned();
    // The local server speaks plain Bolt: a TLS client fails its handshake. That the failure is
    // a connection error (not a configuration or protocol error) shows TLS was attempted.
    for scheme in ["bolt+s", "neo4j+s", "bolt+ssc"] {
        let config = Neo4jConfig::builder(
            format!("{scheme}://{plain_host}"),
            neo4j.user(),
            "x-not-used",
        )
        .with_connection_timeout(Duration::from_secs(3))
        .build()
        .expect("config");
        let err = Neo4jStore::new(&config)
            .expect("the driver accepts the scheme")
            .ping()
            .await
            .expect_err("plain server");
        assert!(
            err.kind() == StoreErrorKind::Connection,
            "{scheme}: {err:?}"
        );
    }
    // And the same address in the clear works.
    let store = Neo4jStore::new(&neo4j).expect("pool");
    store.ping().await.expect("plain bolt");
}
