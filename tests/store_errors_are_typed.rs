//! Database errors have a kind, keep their source and say whether a retry can help.

mod common;

use common::*;
use runtally::config::Neo4jConfig;
use runtally::error::StoreErrorKind;
use runtally::rows::WriteBatch;
use runtally::store::{GraphStore, Neo4jStore};

#[tokio::test]
async fn an_unreachable_server_is_a_retriable_connection_error() {
    // A port nothing listens on.
    let config = Neo4jConfig::builder("bolt://127.0.0.1:1", "root", "whatever-pw")
        .build()
        .expect("config");
    let store = Neo4jStore::new(&config).expect("pool");
    let err = store.ping().await.expect_err("nothing listens on port 1");
    assert_eq!(err.kind(), StoreErrorKind::Connection, "{err:?}");
    assert!(err.is_retriable());
    assert!(!err.is_too_large());
    assert_eq!(err.to_string(), "cannot reach the database");
    let exec = unique("unreachable");
    let err = store
        .write(&WriteBatch::new(vec![started(&exec, "p", 1)], vec![]))
        .await
        .expect_err("down");
    assert_eq!(err.kind(), StoreErrorKind::Connection, "{err:?}");
    assert_eq!(err.statement(), Some("begin"), "{err:?}");
    assert!(err.is_retriable(), "{err:?}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "keeps the driver error"
    );
}

#[tokio::test]
async fn rejected_credentials_fail_start_with_a_permanent_auth_error() {
    // One wrong attempt only: the local server locks the account after five.
    let config = neo4j_config();
    let wrong = format!("{}-but-wrong", config.password().expose());
    let aggregator_config = runtally::AggregatorConfig::builder()
        .with_neo4j(Neo4jConfig::builder(
            config.uri(),
            config.user(),
            wrong.as_str(),
        ))
        .build()
        .expect("config");
    let err = runtally::Aggregator::start(aggregator_config)
        .await
        .expect_err("rejected");
    let runtally::StartError::Store(store_error) = &err else {
        panic!("expected a store error, got {err:?}");
    };
    assert_eq!(store_error.kind(), StoreErrorKind::Auth, "{store_error:?}");
    assert!(!store_error.is_retriable());
    assert!(
        std::error::Error::source(store_error).is_some(),
        "keeps the driver error"
    );
    let shown = format!("{err} {err:?} {}", runtally::error::chain(&err));
    assert!(
        !shown.contains(&wrong),
        "the password is not in the error: {shown}"
    );
}

#[tokio::test]
async fn a_bad_uri_is_a_config_error() {
    let config = Neo4jConfig::builder("bolt://", "u", "p").build();
    assert!(config.is_err(), "empty host rejected by the builder");
    let odd = Neo4jConfig::builder("bolt://exa mple:7687", "u", "p")
        .build()
        .expect("builder accepts, the driver decides");
    match Neo4jStore::new(&odd) {
        Err(e) => {
            assert_eq!(e.kind(), StoreErrorKind::Config, "{e:?}");
            assert!(!e.is_retriable());
        }
        Ok(store) => {
            let err = store.ping().await.expect_err("cannot resolve");
            assert_ne!(err.kind(), StoreErrorKind::Auth, "{err:?}");
        }
    }
}

#[tokio::test]
async fn an_unreachable_database_does_not_stop_start_and_results_are_still_accepted() {
    let config = runtally::AggregatorConfig::builder()
        .with_neo4j(Neo4jConfig::builder(
            "bolt://127.0.0.1:1",
            "root",
            "whatever-pw",
        ))
        .build()
        .expect("config");
    let agg = runtally::Aggregator::start(config)
        .await
        .expect("starts although the database is unreachable");
    assert!(!agg.metrics().database_up);
    let run = agg
        .begin_run(runtally::RunStart::new(
            exec_id(&unique("nodb")),
            plan_id("p"),
            1,
        ))
        .expect("begin");
    let (d, r) = result("a", false, 1, 1, 1);
    run.task_finished(d, r).await.expect("accepted while down");
    let report = agg.shutdown(std::time::Duration::from_millis(500)).await;
    assert!(!report.complete);
    assert_eq!(report.unwritten_rows(), 2, "the run's row and its task");
}
