//! `reconcile_stale` racing a run's finish: Neo4j reads committed data and does not re-check a
//! `WHERE` once a write lock is granted, so a reconcile that matched a run while its finish was
//! still uncommitted could overwrite the finished run as `interrupted`. The reconcile takes
//! each candidate's lock first and checks again.
//!
//! The race is made deterministic: the finish's transaction is held open (holding the node's
//! lock) until the server lists the reconcile as blocked on it, then committed. ArcadeDB locks
//! optimistically (a conflicting commit fails and is retried), so the lock wait this test
//! builds only exists on Neo4j; on ArcadeDB it checks the plain sequence.

mod common;

use std::time::Duration;

use common::private_db::is_neo4j;
use common::*;
use runtally::rows::ExecutionRow;
use runtally::store::GraphStore;
use runtally::RunStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_blocked_behind_a_finish_leaves_the_finished_run_alone() {
    let store = store().await;
    let exec = unique("race");
    // A run of another process whose heartbeat is an hour old.
    let mut row: ExecutionRow = started(&exec, "p", 1);
    row.owner = Some("another-process".into());
    row.updated = chrono::Utc::now() - chrono::Duration::hours(1);
    row.version = 1;
    write(&store, vec![row], vec![]).await;

    // The finish: a transaction that ends the run, held open.
    let graph = raw_graph();
    let mut finish = graph.start_txn().await.expect("begin");
    finish
        .run(
            neo4rs::query(
                "MATCH (e:Node {id: $id}) SET e.status = 'completed', e.endTime = datetime()",
            )
            .param("id", exec.as_str()),
        )
        .await
        .expect("finish statement");

    let mut finish = Some(finish);
    if !is_neo4j() {
        // No lock to wait on: the finish commits first, then the reconcile runs.
        let txn = finish.take().expect("open");
        txn.commit().await.expect("the finish commits");
    }
    let reconcile = {
        let store = common::store().await;
        tokio::spawn(async move {
            let now = chrono::Utc::now();
            store
                .reconcile_stale(now - chrono::Duration::minutes(5), Some("me"), now)
                .await
        })
    };
    if is_neo4j() {
        // Wait (bounded) until the server shows the reconcile waiting for the finish's lock.
        let observer = raw_graph();
        let blocked = eventually(Duration::from_secs(30), || {
            let observer = observer.clone();
            async move {
                let q = neo4rs::query(
                    "SHOW TRANSACTIONS YIELD currentQuery, status \
                     WHERE currentQuery CONTAINS 'interrupted' AND status STARTS WITH 'Blocked' \
                     RETURN count(*) AS n",
                );
                match observer.execute(q).await {
                    Ok(mut rows) => matches!(
                        rows.next().await,
                        Ok(Some(row)) if row.get::<i64>("n").unwrap_or(0) > 0
                    ),
                    Err(_) => false,
                }
            }
        })
        .await;
        assert!(
            blocked.is_some(),
            "the reconcile waits for the finish's lock"
        );
        let txn = finish.take().expect("open");
        txn.commit().await.expect("the finish commits");
    }
    let marked = reconcile.await.expect("joins").expect("reconcile");
    assert!(
        !marked.contains(&exec),
        "the finished run was marked interrupted: {marked:?}"
    );
    let record = store
        .execution(&exec_id(&exec))
        .await
        .expect("read")
        .expect("found");
    assert_eq!(record.status, RunStatus::Completed);
}
