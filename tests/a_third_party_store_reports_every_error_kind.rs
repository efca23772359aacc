//! A `GraphStore` written outside runtally, over a driver of its own, builds a `StoreError` of
//! every kind with the public constructors, and the writer treats it as it treats its own: a
//! transient error is retried, a permanent one refuses the row alone, and the store's own error
//! stays reachable as the source. Logic only: no database.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{exec_id, plan_id, result};
use runtally::rows::WriteBatch;
use runtally::store::{BoxFuture, GraphStore, MemoryStore};
use runtally::{
    Aggregator, AggregatorConfig, FlushError, RetryPolicy, RunStart, StoreError, StoreErrorKind,
};

/// The other driver's error type: runtally knows nothing of it.
#[derive(Debug)]
struct OtherDriverError(&'static str);

impl std::fmt::Display for OtherDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "other driver: {}", self.0)
    }
}

impl std::error::Error for OtherDriverError {}

/// One error of each kind, as such a store would build it.
fn every_kind() -> Vec<StoreError> {
    vec![
        StoreError::new(StoreErrorKind::Config, OtherDriverError("bad uri")),
        StoreError::new(StoreErrorKind::Auth, OtherDriverError("wrong password"))
            .with_code("Neo.ClientError.Security.Unauthorized"),
        StoreError::new(StoreErrorKind::Connection, OtherDriverError("reset")),
        StoreError::new(StoreErrorKind::Query, OtherDriverError("deadlock"))
            .with_statement("upsert tasks")
            .with_code("Neo.TransientError.Transaction.DeadlockDetected")
            .with_message("deadlock detected"),
        StoreError::new(StoreErrorKind::TooLarge, OtherDriverError("over 16 MiB"))
            .with_statement("upsert tasks"),
        StoreError::schema("create the constraint", OtherDriverError("not allowed")),
        StoreError::timeout(Duration::from_secs(1)),
        StoreError::orphaned(2, 1),
        StoreError::decode("t-1", "tokensTotal", "expected Integer, found String"),
    ]
}

/// What a caller outside the crate writes: the kind enum is non-exhaustive.
fn advice(e: &StoreError) -> &'static str {
    match e.kind() {
        StoreErrorKind::Config | StoreErrorKind::Auth => "fix the settings",
        StoreErrorKind::Connection | StoreErrorKind::Timeout => "wait for the database",
        StoreErrorKind::Schema => "ask an administrator",
        _ if e.is_retriable() => "try again",
        _ => "look at the rows",
    }
}

#[test]
fn every_kind_can_be_built_and_is_classified() {
    let kinds: Vec<_> = every_kind().iter().map(StoreError::kind).collect();
    assert_eq!(
        kinds,
        [
            StoreErrorKind::Config,
            StoreErrorKind::Auth,
            StoreErrorKind::Connection,
            StoreErrorKind::Query,
            StoreErrorKind::TooLarge,
            StoreErrorKind::Schema,
            StoreErrorKind::Timeout,
            StoreErrorKind::Orphaned,
            StoreErrorKind::Decode,
        ]
    );
    let retriable: Vec<_> = every_kind().iter().map(StoreError::is_retriable).collect();
    assert_eq!(
        retriable,
        [false, false, true, true, false, false, true, false, false]
    );
    let too_large: Vec<_> = every_kind().iter().map(StoreError::is_too_large).collect();
    assert_eq!(
        too_large,
        [false, false, false, false, true, false, false, false, false]
    );
    let advice: Vec<_> = every_kind().iter().map(advice).collect();
    assert_eq!(advice[3], "try again");
    assert_eq!(advice[7], "look at the rows");
    for e in every_kind() {
        let shown = runtally::error::chain(&e);
        assert!(!shown.is_empty());
        if let Some(source) = std::error::Error::source(&e) {
            assert!(
                source.downcast_ref::<OtherDriverError>().is_some(),
                "the store's own error is the source: {e:?}"
            );
        }
    }
    assert_eq!(
        runtally::error::chain(&every_kind()[4]),
        "upsert tasks was too large for the server: other driver: over 16 MiB"
    );
    assert_eq!(every_kind()[5].fix(), Some("create the constraint"));
}

/// Over a `MemoryStore`: the first write of a task named `flaky` fails with a transient error,
/// and every write of a task named `refused` fails with a permanent one.
#[derive(Default)]
struct OtherDriverStore {
    memory: MemoryStore,
    flaky_failures: AtomicUsize,
}

impl OtherDriverStore {
    fn fault(&self, batch: &WriteBatch) -> Option<StoreError> {
        let has = |id: &str| batch.tasks.iter().any(|t| t.task_id.as_str() == id);
        if has("refused") {
            return Some(
                StoreError::new(StoreErrorKind::Query, OtherDriverError("constraint"))
                    .with_statement("upsert tasks")
                    .with_code("Neo.ClientError.Schema.ConstraintValidationFailed"),
            );
        }
        if has("flaky") && self.flaky_failures.fetch_add(1, Ordering::SeqCst) == 0 {
            // A transient failure the other driver reports without a server code.
            return Some(
                StoreError::new(StoreErrorKind::Query, OtherDriverError("ignored"))
                    .with_retriable(true),
            );
        }
        None
    }
}

impl GraphStore for OtherDriverStore {
    fn write<'a>(&'a self, batch: &'a WriteBatch) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            match self.fault(batch) {
                Some(e) => Err(e),
                None => self.memory.write(batch).await,
            }
        })
    }

    fn ensure_schema(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.memory.ensure_schema()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.memory.ping()
    }

    fn reconcile_stale(
        &self,
        cutoff: DateTime<Utc>,
        except_owner: Option<&str>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.memory.reconcile_stale(cutoff, except_owner, now)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_retries_and_refuses_a_third_party_stores_errors_by_their_kind() {
    let rejected = Arc::new(Mutex::new(Vec::new()));
    let config = AggregatorConfig::builder()
        .with_flush_interval(Duration::from_secs(3600))
        .with_retry(RetryPolicy::new(
            Duration::from_millis(5),
            Duration::from_millis(20),
        ))
        .with_rejected_handler({
            let rejected = Arc::clone(&rejected);
            move |write| rejected.lock().expect("lock").push(write)
        })
        .build()
        .expect("config");
    let store = Arc::new(OtherDriverStore::default());
    let agg = Aggregator::start_with_store(config, Arc::clone(&store) as Arc<dyn GraphStore>)
        .await
        .expect("start");
    let run = agg
        .begin_run(RunStart::new(exec_id("third-party"), plan_id("p"), 3))
        .expect("begin");
    for task in ["fine", "flaky", "refused"] {
        let (d, r) = result(task, false, 1, 1, 0);
        run.task_finished(d, r).await.expect("accepted");
    }
    let flushed = agg.flush().await;
    assert!(
        matches!(flushed, Err(FlushError::Rejected { rows: 1 })),
        "{flushed:?}"
    );

    let metrics = agg.metrics();
    assert!(metrics.retries >= 1, "the transient error was retried");
    assert_eq!(metrics.rows_rejected, 1);
    let written: Vec<_> = store
        .memory
        .tasks_of("third-party")
        .iter()
        .map(|t| t.task_id.as_str().to_owned())
        .collect();
    assert_eq!(written.len(), 2, "{written:?}");
    assert!(written.iter().any(|t| t == "flaky") && written.iter().any(|t| t == "fine"));

    let rejected = std::mem::take(&mut *rejected.lock().expect("lock"));
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].tasks[0].task_id.as_str(), "refused");
    let error = &rejected[0].error;
    assert_eq!(error.kind(), StoreErrorKind::Query);
    assert!(!error.is_retriable());
    assert_eq!(error.statement(), Some("upsert tasks"));
    assert_eq!(
        error.code(),
        Some("Neo.ClientError.Schema.ConstraintValidationFailed")
    );
    assert!(std::error::Error::source(error)
        .and_then(|s| s.downcast_ref::<OtherDriverError>())
        .is_some());
    assert!(agg.shutdown(Duration::from_secs(5)).await.complete);
}
