//! Database errors keep their source and say whether a retry can help.

mod common;

use common::*;
use runtally::config::Neo4jConfig;
use runtally::error::StoreError;
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
    assert!(matches!(err, StoreError::Connection(_)), "{err:?}");
    assert!(err.is_retriable());
    let exec = unique("unreachable");
    let err = store
        .write(&WriteBatch {
            executions: vec![started(&exec, "p", 1)],
            tasks: vec![],
        })
        .await
        .expect_err("down");
    assert!(err.is_retriable(), "{err:?}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "keeps the driver error"
    );
}

#[tokio::test]
async fn a_wrong_password_is_a_permanent_auth_error() {
    // One wrong attempt only: the local server locks the account after five.
    let config = neo4j_config();
    let bad = Neo4jConfig::builder(config.uri(), config.user(), "definitely-not-the-password")
        .build()
        .expect("config");
    let store = Neo4jStore::new(&bad).expect("pool");
    let err = store.ping().await.expect_err("rejected");
    assert!(matches!(err, StoreError::Auth(_)), "{err:?}");
    assert!(!err.is_retriable());
}

#[tokio::test]
async fn a_bad_uri_is_a_config_error() {
    let config = Neo4jConfig::builder("bolt://", "u", "p").build();
    assert!(config.is_err(), "empty host rejected by the builder");
    let odd = Neo4jConfig::builder("bolt://exa mple:7687", "u", "p")
        .build()
        .expect("builder accepts, the driver decides");
    match Neo4jStore::new(&odd) {
        Err(e) => assert!(matches!(e, StoreError::Config(_)), "{e:?}"),
        Ok(store) => {
            let err = store.ping().await.expect_err("cannot resolve");
            assert!(!matches!(err, StoreError::Auth(_)), "{err:?}");
        }
    }
}
