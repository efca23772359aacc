//! [`GraphStore`] over Bolt with `neo4rs`: the seed's graph, written in batches.
//!
//! Each batch is written in explicit transactions of `UNWIND $rows` statements: one for a batch
//! of only task rows or only execution rows; for a batch of both, first the task rows (after a
//! placeholder statement that creates any missing execution node as `running` with zero
//! counters), then, once that has committed, the execution rows and the heartbeat of live runs.
//! Neo4j's readers take no locks and can see a committing transaction's node properties before
//! its relationships, so a state in the transaction of its tasks was read ahead of them; a commit
//! returns once applied, so a reader that sees the state now sees its tasks. All values
//! travel as parameters; the Cypher text is constant. Every `SET` writes an absolute value, so a
//! batch sent twice (a retry after a lost commit) changes nothing.
//!
//! Relationship `MERGE`s start from the task node (`MERGE (te)<-[:R]-(exec)`): the other way
//! round, a server may scan all of the execution's edges for every row, and a run with thousands
//! of tasks slows down as it grows.
//!
//! Explicit transactions are not retried by the driver (its auto-commit `Graph::run` is, for up
//! to a minute); runtally's writer owns the retry policy, so writes go through `Txn` only.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use neo4rs::{query, BoltMap, BoltNode, BoltString, BoltType, Query, Txn};

use super::driver::Driver;
use super::nodelay::NoDelay;
use super::{BoxFuture, ExecutionRecord, GraphStore, TaskExecutionRecord};
use crate::config::Neo4jConfig;
use crate::error::StoreError;
use crate::model::{ExecutionId, RunStatus, TaskStatus};
use crate::rows::{iso_millis, ExecutionRow, ExecutionWrite, TaskRow, WriteBatch};

/// Upserts execution nodes with absolute values (rows of kind `state`), unless the node already
/// holds a newer version of the run (an urgent mark that overtook this write). `created` only
/// on creation; the plan link only when the row asks for it (first and final writes), because
/// merging it scans the execution's edges. The link does not depend on the version: a row that
/// lost to a newer mark may still be the one that asks for it.
const UPSERT_EXECUTIONS: &str = "\
UNWIND $rows AS row
MERGE (exec:Node {id: row.id})
ON CREATE SET exec.created = datetime(row.created)
WITH exec, row
FOREACH (_ IN CASE WHEN coalesce(exec.runtallyVersion, -1) <= row.version THEN [1] ELSE [] END |
SET exec.type = 'orchestration_execution',
    exec.planId = row.planId,
    exec.status = row.status,
    exec.startTime = datetime(row.startTime),
    exec.endTime = CASE WHEN row.endTime IS NULL THEN null ELSE datetime(row.endTime) END,
    exec.duration = row.duration,
    exec.tasksTotal = row.tasksTotal,
    exec.tasksSuccessful = row.tasksSuccessful,
    exec.tasksFailed = row.tasksFailed,
    exec.tokensInput = row.tokensInput,
    exec.tokensOutput = row.tokensOutput,
    exec.tokensTotal = row.tokensTotal,
    exec.toolCalls = row.toolCalls,
    exec.updated = datetime(row.updated),
    exec.runtallyOwner = row.owner,
    exec.runtallyHeartbeat = datetime(row.updated),
    exec.runtallyVersion = row.version)
WITH exec, row WHERE row.linkPlan
MATCH (plan:Node {id: row.planId})
WHERE plan.type = 'orchestration_plan'
MERGE (exec)-[:EXECUTES_PLAN]->(plan)";

/// What a missing node is created as by a placeholder or an urgent mark (rows of kinds
/// `placeholder` and `status`): `running`, zero counters, no end, and a version below any
/// state, so a node never shows counters or an end before the transaction that carries them.
/// An existing node is not touched here.
macro_rules! create_missing_execution {
    () => {
        "MERGE (exec:Node {id: row.id})
ON CREATE SET exec.type = 'orchestration_execution',
    exec.planId = row.planId,
    exec.status = 'running',
    exec.startTime = datetime(row.startTime),
    exec.duration = 0,
    exec.tasksTotal = row.tasksTotal,
    exec.tasksSuccessful = 0,
    exec.tasksFailed = 0,
    exec.tokensInput = 0,
    exec.tokensOutput = 0,
    exec.tokensTotal = 0,
    exec.toolCalls = 0,
    exec.created = datetime(row.created),
    exec.updated = datetime(row.updated),
    exec.runtallyOwner = row.owner,
    exec.runtallyHeartbeat = datetime(row.updated),
    exec.runtallyVersion = -1
"
    };
}

/// Placeholders: make sure the node exists, so that task rows written before the transaction
/// carrying their run's state find it.
const UPSERT_PLACEHOLDERS: &str = concat!("UNWIND $rows AS row\n", create_missing_execution!());

/// Urgent marks: only the status (and `updated`, the version), if the row is newer than the
/// node. Its counters stay as the node has them: the task rows they count may still be queued.
const UPSERT_MARKS: &str = concat!(
    "UNWIND $rows AS row\n",
    create_missing_execution!(),
    "WITH exec, row
WHERE coalesce(exec.runtallyVersion, -1) < row.version
SET exec.status = row.status,
    exec.updated = datetime(row.updated),
    exec.runtallyHeartbeat = datetime(row.updated),
    exec.runtallyVersion = row.version"
);

/// Upserts task execution nodes and their edges, returning how many rows found their
/// execution. `FAILED_TASK` follows the row's status, so a success re-sent over a failure
/// removes the edge.
const UPSERT_TASKS: &str = "\
UNWIND $rows AS row
MATCH (exec:Node {id: row.executionId})
WHERE exec.type = 'orchestration_execution'
MERGE (te:Node {id: row.id})
SET te.type = 'task_execution',
    te.executionId = row.executionId,
    te.taskId = row.taskId,
    te.taskTitle = row.taskTitle,
    te.status = row.status,
    te.output = row.output,
    te.error = row.error,
    te.duration = row.duration,
    te.agentRoleDescription = row.agentRoleDescription,
    te.qcRoleDescription = row.qcRoleDescription,
    te.prompt = row.prompt,
    te.tokensInput = row.tokensInput,
    te.tokensOutput = row.tokensOutput,
    te.tokensTotal = row.tokensTotal,
    te.toolCalls = row.toolCalls,
    te.attemptNumber = row.attemptNumber,
    te.qcPassed = row.qcPassed,
    te.qcScore = row.qcScore,
    te.qcFeedback = row.qcFeedback,
    te.qcIssues = row.qcIssues,
    te.qcRequiredFixes = row.qcRequiredFixes,
    te.timestamp = datetime(row.timestamp),
    te.updated = datetime(row.timestamp)
MERGE (te)<-[:HAS_TASK_EXECUTION]-(exec)
FOREACH (_ IN CASE WHEN row.failed THEN [1] ELSE [] END |
  MERGE (te)<-[:FAILED_TASK]-(exec))
WITH te, exec, row
OPTIONAL MATCH (te)<-[stale:FAILED_TASK]-(exec)
WHERE NOT row.failed
DELETE stale
WITH DISTINCT te, row
OPTIONAL MATCH (plan:Node {id: row.planId})
WHERE plan.type = 'orchestration_plan'
FOREACH (p IN CASE WHEN plan IS NULL THEN [] ELSE [plan] END |
  MERGE (te)<-[:HAS_EXECUTION]-(p))
RETURN count(DISTINCT te) AS written";

/// Marks runs whose writer stopped heart-beating as interrupted. Seed-written runs have no
/// heartbeat; their `updated` stands in for it.
///
/// Under read committed (Neo4j) the first `WHERE` may read a run that a concurrent `finish` is
/// about to end: its transaction holds the node's lock, and nothing re-checks the condition
/// once the lock is granted. So the statement takes each candidate's write lock first (a
/// throwaway property, set and removed), then checks the condition again on what is committed
/// now, and only then marks the run.
const RECONCILE_STALE: &str = "\
MATCH (exec:Node {type: 'orchestration_execution'})
WHERE exec.endTime IS NULL
  AND exec.status IN ['running', 'failed']
  AND coalesce(exec.runtallyHeartbeat, exec.updated) < datetime($cutoff)
  AND ($except IS NULL OR coalesce(exec.runtallyOwner, '') <> $except)
SET exec.runtallyReconciling = true
REMOVE exec.runtallyReconciling
WITH exec
WHERE exec.endTime IS NULL
  AND exec.status IN ['running', 'failed']
  AND coalesce(exec.runtallyHeartbeat, exec.updated) < datetime($cutoff)
SET exec.status = 'failed',
    exec.error = 'interrupted',
    exec.endTime = datetime($now),
    exec.duration = CASE WHEN exec.startTime IS NULL THEN 0
                    ELSE $nowMs - exec.startTime.epochMillis END,
    exec.updated = datetime($now)
RETURN exec.id AS id";

/// Refreshes the heartbeat of live runs (their state did not change, so no row was written).
const HEARTBEAT: &str = "\
UNWIND $ids AS id
MATCH (exec:Node {id: id})
WHERE exec.type = 'orchestration_execution' AND exec.endTime IS NULL
SET exec.runtallyHeartbeat = datetime($at)";

/// Uniqueness constraints on `:Node(id)`, under any name (`UNIQUENESS` on Neo4j 5.0–5.x and
/// ArcadeDB, `NODE_PROPERTY_UNIQUENESS` on later 5.x, or a node key).
const SHOW_ID_CONSTRAINTS: &str = "SHOW CONSTRAINTS YIELD type, labelsOrTypes, properties \
    WHERE labelsOrTypes = ['Node'] AND properties = ['id'] \
    AND type IN ['UNIQUENESS', 'NODE_PROPERTY_UNIQUENESS', 'NODE_KEY'] \
    RETURN count(*) AS n";
/// Single-property indexes on `:Node`, as `name|property` (one string column, so the reader
/// stays simple; split at the last `|`, since property names have none).
const SHOW_NODE_INDEXES: &str = "SHOW INDEXES YIELD name, labelsOrTypes, properties \
    WHERE labelsOrTypes = ['Node'] AND size(properties) = 1 \
    RETURN name + '|' + properties[0] AS entry";

const CREATE_CONSTRAINT: &str =
    "CREATE CONSTRAINT node_id_unique IF NOT EXISTS FOR (n:Node) REQUIRE n.id IS UNIQUE";
const CREATE_TYPE_INDEX: &str = "CREATE INDEX node_type IF NOT EXISTS FOR (n:Node) ON (n.type)";
/// Not in the seed's schema: without it the seed's task query (`te.type = 'task_execution' AND
/// te.executionId = $id`) reads every task node ever written; with it, a planner that uses it
/// (Neo4j's does) reads only the run's.
const CREATE_EXECUTION_ID_INDEX: &str =
    "CREATE INDEX node_execution_id IF NOT EXISTS FOR (n:Node) ON (n.executionId)";

/// The seed's reader queries for one run and for the list, verbatim.
const READ_EXECUTION: &str =
    "MATCH (exec:Node {id:$executionId, type:'orchestration_execution'}) RETURN exec";
/// A run's tasks: the seed's reader asks `te.type='task_execution' AND te.executionId=$id`;
/// following the run's `HAS_TASK_EXECUTION` edges from its node (found by the unique id) gives
/// the same nodes for every run runtally writes, without scanning every task node of every run
/// on servers that do not use the `executionId` index for that query.
const READ_TASKS: &str = "MATCH (exec:Node {id: $executionId})-[:HAS_TASK_EXECUTION]->(te:Node) \
    WHERE exec.type = 'orchestration_execution' AND te.type = 'task_execution' \
    RETURN te ORDER BY te.timestamp";
/// Several executions at once (for pollers watching many runs). `UNWIND` + `MATCH` by id uses
/// the unique index; `WHERE exec.id IN $ids` scans every node on some servers.
const READ_SOME_EXECUTIONS: &str = "UNWIND $ids AS id MATCH (exec:Node {id: id}) \
    WHERE exec.type = 'orchestration_execution' RETURN exec";
const READ_EXECUTIONS: &str = "MATCH (exec:Node {type:'orchestration_execution'}) RETURN exec \
    ORDER BY exec.startTime DESC SKIP $offset LIMIT $limit";

/// A Neo4j (or Bolt-compatible) database behind a connection pool.
///
/// Through a `neo4j://` URI every transaction, the reads ([`execution`](Self::execution),
/// [`list_executions`](Self::list_executions), …) included, goes to the cluster's writer, so a
/// read sees every write this store made before it.
///
/// Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct Neo4jStore {
    driver: Arc<Driver>,
    nodelay: Arc<NoDelay>,
}

impl std::fmt::Debug for Neo4jStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Neo4jStore").finish_non_exhaustive()
    }
}

impl Neo4jStore {
    /// Creates the pool. No connection is opened yet; see [`GraphStore::ping`].
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::StoreErrorKind::Config) error if the driver rejects the URI or
    /// settings.
    pub fn new(config: &Neo4jConfig) -> Result<Self, StoreError> {
        let driver = Driver::new(config)?;
        // A routed pool connects to servers the routing table names, not only the URI's.
        let nodelay = NoDelay::new(config.uri(), config.tcp_nodelay(), driver.routed());
        Ok(Self {
            driver: Arc::new(driver),
            nodelay: Arc::new(nodelay),
        })
    }

    /// Reads one execution with the seed's status query.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the query fails or a property has an unexpected type.
    pub async fn execution(&self, id: &ExecutionId) -> Result<Option<ExecutionRecord>, StoreError> {
        let q = query(READ_EXECUTION).param("executionId", id.as_str());
        let nodes = self.read_nodes(q, "exec").await?;
        nodes.into_iter().next().map(execution_record).transpose()
    }

    /// Reads several executions in one query (those not found are left out), for a host that
    /// watches many runs at once.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the query fails or a property has an unexpected type.
    pub async fn executions(
        &self,
        ids: &[ExecutionId],
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let ids: BoltType = ids.iter().map(|id| id.as_str()).collect();
        let q = query(READ_SOME_EXECUTIONS).param("ids", ids);
        self.read_nodes(q, "exec")
            .await?
            .into_iter()
            .map(execution_record)
            .collect()
    }

    /// Reads a run's task executions, ordered by `timestamp` (the nodes the seed's task query
    /// returns, found through the run's `HAS_TASK_EXECUTION` edges).
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the query fails or a property has an unexpected type.
    pub async fn task_executions(
        &self,
        id: &ExecutionId,
    ) -> Result<Vec<TaskExecutionRecord>, StoreError> {
        let q = query(READ_TASKS).param("executionId", id.as_str());
        self.read_nodes(q, "te")
            .await?
            .into_iter()
            .map(task_record)
            .collect()
    }

    /// Lists executions, newest `startTime` first, with the seed's list query.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the query fails or a property has an unexpected type.
    pub async fn list_executions(
        &self,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let q = query(READ_EXECUTIONS)
            .param("limit", i64::from(limit))
            .param("offset", i64::from(offset));
        self.read_nodes(q, "exec")
            .await?
            .into_iter()
            .map(execution_record)
            .collect()
    }

    /// Runs one query in its own transaction and returns column `column` of every row.
    async fn read_nodes(&self, q: Query, column: &str) -> Result<Vec<BoltNode>, StoreError> {
        let mut txn = self.begin().await?;
        let nodes = collect_nodes(&mut txn, q, column).await;
        self.finish(txn, nodes).await
    }

    /// Starts a transaction, then makes sure its connection (perhaps just opened by the pool)
    /// does not hold back writes (see [`NoDelay`]).
    async fn begin(&self) -> Result<Txn, StoreError> {
        let txn = self.driver.begin().await?;
        self.nodelay.sweep_if_due().await;
        Ok(txn)
    }

    /// Commits the transaction if `outcome` is a success, else rolls it back; an error passes
    /// the driver first (a leader refusal makes a routed pool ask its router again).
    async fn finish<T>(&self, txn: Txn, outcome: Result<T, StoreError>) -> Result<T, StoreError> {
        finish(txn, outcome).await.map_err(|e| self.driver.saw(e))
    }

    /// Runs one statement in its own transaction (servers refuse schema changes mixed with
    /// others).
    async fn run_alone(&self, statement: &'static str) -> Result<(), StoreError> {
        let mut txn = self.begin().await?;
        let outcome = txn
            .run(query(statement))
            .await
            .map(drop)
            .map_err(|e| StoreError::from_driver("create schema", e));
        self.finish(txn, outcome).await
    }

    /// What of runtally's schema the server has, or `None` if it cannot say (a server without
    /// `SHOW CONSTRAINTS`/`SHOW INDEXES`).
    async fn schema_state(&self) -> Result<Option<SchemaState>, StoreError> {
        let mut txn = self.begin().await?;
        let read = async {
            let unique = collect_ints(&mut txn, query(SHOW_ID_CONSTRAINTS), "n").await?;
            let indexes = collect_strings(&mut txn, query(SHOW_NODE_INDEXES), "entry").await?;
            Ok::<_, StoreError>((unique, indexes))
        }
        .await;
        let (unique, indexes) = match self.finish(txn, read).await {
            Ok(found) => found,
            Err(e) if e.is_retriable() => return Err(e),
            Err(e) => {
                tracing::debug!(error = %crate::error::chain(&e), "cannot list the schema; creating it blind");
                return Ok(None);
            }
        };
        let index_on = |property: &str| {
            indexes.iter().find_map(|entry| {
                let (name, on) = entry.rsplit_once('|')?;
                (on == property).then(|| name.to_owned())
            })
        };
        Ok(Some(SchemaState {
            unique_id: unique.first().copied().unwrap_or(0) > 0,
            id_index: index_on("id"),
            type_index: index_on("type").is_some(),
            execution_id_index: index_on("executionId").is_some(),
        }))
    }

    /// Makes sure the schema runtally relies on is there: a uniqueness constraint on
    /// `:Node(id)` (it makes `MERGE` safe under concurrency and lookups by id fast) and indexes
    /// on `type` and `executionId` (speed only). What is already there (under any name) is
    /// kept. A missing index that cannot be created is a warning; a missing constraint that
    /// cannot be created is a warning if a plain index on `:Node(id)` stands in for it, else
    /// a [`Schema`](crate::StoreErrorKind::Schema) error naming the fix.
    async fn ensure_schema_inner(&self) -> Result<(), StoreError> {
        let state = self.schema_state().await?;
        let has = |f: fn(&SchemaState) -> bool| state.as_ref().is_some_and(f);
        if !has(|s| s.unique_id) {
            if let Err(e) = self.run_alone(CREATE_CONSTRAINT).await {
                if e.is_retriable() {
                    return Err(e);
                }
                match state.as_ref().and_then(|s| s.id_index.clone()) {
                    Some(index) => tracing::warn!(
                        error = %crate::error::chain(&e),
                        index = %index,
                        "no uniqueness constraint on :Node(id), and it cannot be created while \
                         the plain index on :Node(id) exists; runtally goes on with that index \
                         (lookups are fast, but concurrent writers could create duplicate \
                         nodes). To fix: DROP INDEX `{index}`, then restart runtally or run \
                         CREATE CONSTRAINT node_id_unique FOR (n:Node) REQUIRE n.id IS UNIQUE",
                    ),
                    None => return Err(StoreError::constraint_missing(e)),
                }
            }
        }
        for (present, statement, what) in [
            (has(|s| s.type_index), CREATE_TYPE_INDEX, "node_type"),
            (
                has(|s| s.execution_id_index),
                CREATE_EXECUTION_ID_INDEX,
                "node_execution_id",
            ),
        ] {
            if present {
                continue;
            }
            if let Err(e) = self.run_alone(statement).await {
                if e.is_retriable() {
                    return Err(e);
                }
                // Only speed depends on these: go on, and say how to add it.
                tracing::warn!(
                    error = %crate::error::chain(&e),
                    index = what,
                    statement,
                    "cannot create an index runtally's reads use; they will be slower until an \
                     administrator creates it"
                );
            }
        }
        Ok(())
    }

    async fn write_batch(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // A batch with both task rows and execution rows is two transactions: the task rows
        // first (with their run's node made sure of), then, once that commit has returned, the
        // execution rows. Neo4j's readers take no locks and can see a committing transaction's
        // node properties before its relationships, so a state in the same transaction as its
        // tasks was read ahead of them (test `ended_runs_never_precede_their_tasks`). A commit
        // returns only once applied, so a reader that sees the state sees its tasks.
        if batch.tasks.is_empty() || batch.executions.is_empty() {
            return self.write_phase(batch, Phase::Whole).await;
        }
        self.write_phase(batch, Phase::Tasks).await?;
        self.write_phase(batch, Phase::Executions).await
    }

    async fn write_phase(&self, batch: &WriteBatch, phase: Phase) -> Result<(), StoreError> {
        let mut txn = self.begin().await?;
        let outcome = write_rows(&mut txn, batch, phase).await;
        self.finish(txn, outcome).await
    }

    async fn reconcile(
        &self,
        cutoff: DateTime<Utc>,
        except_owner: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let q = query(RECONCILE_STALE)
            .param("cutoff", iso_millis(&cutoff))
            .param("except", except_owner.map(str::to_owned))
            .param("now", iso_millis(&now))
            .param("nowMs", now.timestamp_millis());
        let mut txn = self.begin().await?;
        let ids = collect_strings(&mut txn, q, "id").await;
        self.finish(txn, ids).await
    }
}

impl GraphStore for Neo4jStore {
    fn write<'a>(&'a self, batch: &'a WriteBatch) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.write_batch(batch))
    }

    fn ensure_schema(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.ensure_schema_inner())
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut txn = self.begin().await?;
            let outcome = collect_strings(&mut txn, query("RETURN 'ok' AS ok"), "ok")
                .await
                .map(drop);
            self.finish(txn, outcome).await
        })
    }

    fn reconcile_stale(
        &self,
        cutoff: DateTime<Utc>,
        except_owner: Option<&str>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        let except_owner = except_owner.map(str::to_owned);
        Box::pin(async move { self.reconcile(cutoff, except_owner.as_deref(), now).await })
    }
}

/// Commits on success; on failure rolls back and returns the original error. A failed rollback
/// is only logged: the server drops the transaction with the connection anyway, and the error
/// that matters is the first one.
async fn finish<T>(txn: Txn, outcome: Result<T, StoreError>) -> Result<T, StoreError> {
    match outcome {
        Ok(value) => {
            txn.commit()
                .await
                .map_err(|e| StoreError::from_driver("commit", e))?;
            Ok(value)
        }
        Err(e) => {
            if let Err(rollback) = txn.rollback().await {
                tracing::debug!(error = %rollback, "rollback after a failed statement failed");
            }
            Err(e)
        }
    }
}

/// Which rows of a batch a transaction carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Every row (a batch of only task rows, or only execution rows).
    Whole,
    /// The task rows, after placeholders for every run in the batch (so each task row finds its
    /// execution node; an existing node is not touched).
    Tasks,
    /// The execution rows and the heartbeat, after the task rows' transaction committed.
    Executions,
}

async fn write_rows(txn: &mut Txn, batch: &WriteBatch, phase: Phase) -> Result<(), StoreError> {
    if phase == Phase::Tasks {
        let rows: Vec<BoltType> = batch
            .executions
            .iter()
            .map(|e| execution_params(&e.placeholder()))
            .collect();
        txn.run(query(UPSERT_PLACEHOLDERS).param("rows", BoltType::from(rows)))
            .await
            .map_err(|e| StoreError::from_driver("upsert placeholders", e))?;
    } else {
        write_executions(txn, &batch.executions).await?;
    }
    if phase != Phase::Executions && !batch.tasks.is_empty() {
        let rows: BoltType = batch.tasks.iter().map(task_params).collect();
        let q = query(UPSERT_TASKS).param("rows", rows);
        let written = collect_ints(txn, q, "written").await?;
        let written = usize::try_from(written.first().copied().unwrap_or(0)).unwrap_or(0);
        let expected = distinct_task_ids(&batch.tasks);
        if written != expected {
            return Err(StoreError::orphaned(
                expected,
                expected.saturating_sub(written),
            ));
        }
    }
    if phase == Phase::Tasks {
        return Ok(());
    }
    if let Some(heartbeat) = &batch.heartbeat {
        let ids: BoltType = heartbeat.runs.iter().map(|id| id.as_str()).collect();
        txn.run(
            query(HEARTBEAT)
                .param("ids", ids)
                .param("at", iso_millis(&heartbeat.at)),
        )
        .await
        .map_err(|e| StoreError::from_driver("heartbeat", e))?;
    }
    Ok(())
}

/// Each kind of execution row has its own statement, run only when the batch has such rows:
/// the common one (whole states) stays as simple as it can be.
async fn write_executions(txn: &mut Txn, executions: &[ExecutionRow]) -> Result<(), StoreError> {
    for (kind, statement, name) in [
        (
            ExecutionWrite::Placeholder,
            UPSERT_PLACEHOLDERS,
            "upsert placeholders",
        ),
        (
            ExecutionWrite::State,
            UPSERT_EXECUTIONS,
            "upsert executions",
        ),
        (ExecutionWrite::Status, UPSERT_MARKS, "upsert status marks"),
    ] {
        let rows: Vec<BoltType> = executions
            .iter()
            .filter(|e| e.write == kind)
            .map(execution_params)
            .collect();
        if rows.is_empty() {
            continue;
        }
        txn.run(query(statement).param("rows", BoltType::from(rows)))
            .await
            .map_err(|e| StoreError::from_driver(name, e))?;
    }
    Ok(())
}

fn distinct_task_ids(tasks: &[TaskRow]) -> usize {
    let mut ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

async fn collect_values(
    txn: &mut Txn,
    q: Query,
    column: &str,
    statement: &'static str,
) -> Result<Vec<BoltType>, StoreError> {
    let mut stream = txn
        .execute(q)
        .await
        .map_err(|e| StoreError::from_driver(statement, e))?;
    let mut values = Vec::new();
    while let Some(row) = stream
        .next(&mut *txn)
        .await
        .map_err(|e| StoreError::from_driver(statement, e))?
    {
        let value: BoltType = row
            .get(column)
            .map_err(|e| StoreError::decode(String::new(), "result column", e.to_string()))?;
        values.push(value);
    }
    Ok(values)
}

async fn collect_nodes(txn: &mut Txn, q: Query, column: &str) -> Result<Vec<BoltNode>, StoreError> {
    collect_values(txn, q, column, "read")
        .await?
        .into_iter()
        .map(|v| match v {
            BoltType::Node(node) => Ok(node),
            other => Err(decode_error("", "result column", "a node", &other)),
        })
        .collect()
}

async fn collect_strings(txn: &mut Txn, q: Query, column: &str) -> Result<Vec<String>, StoreError> {
    collect_values(txn, q, column, "query")
        .await?
        .into_iter()
        .map(|v| match v {
            BoltType::String(s) => Ok(s.value),
            other => Err(decode_error("", "result column", "a string", &other)),
        })
        .collect()
}

async fn collect_ints(txn: &mut Txn, q: Query, column: &str) -> Result<Vec<i64>, StoreError> {
    collect_values(txn, q, column, "upsert tasks")
        .await?
        .into_iter()
        .map(|v| match v {
            BoltType::Integer(i) => Ok(i.value),
            other => Err(decode_error("", "result column", "an integer", &other)),
        })
        .collect()
}

// --- rows to parameters

struct Params(BoltMap);

impl Params {
    fn new(capacity: usize) -> Self {
        Self(BoltMap::with_capacity(capacity))
    }

    fn put(&mut self, key: &'static str, value: impl Into<BoltType>) -> &mut Self {
        self.0.put(BoltString::from(key), value.into());
        self
    }

    fn time(&mut self, key: &'static str, t: &DateTime<Utc>) -> &mut Self {
        self.put(key, iso_millis(t))
    }

    fn done(&mut self) -> BoltType {
        BoltType::Map(std::mem::take(&mut self.0))
    }
}

fn execution_params(row: &ExecutionRow) -> BoltType {
    let mut p = Params::new(18);
    p.put("id", row.id.as_str())
        .put("planId", row.plan_id.as_str())
        .put("status", row.status.as_str())
        .time("startTime", &row.start_time)
        .put("endTime", row.end_time.as_ref().map(iso_millis))
        .put("duration", row.duration_ms)
        .put("tasksTotal", row.tasks_total)
        .put("tasksSuccessful", row.tasks_successful)
        .put("tasksFailed", row.tasks_failed)
        .put("tokensInput", row.tokens_input)
        .put("tokensOutput", row.tokens_output)
        .put("tokensTotal", row.tokens_total)
        .put("toolCalls", row.tool_calls)
        .time("created", &row.created)
        .time("updated", &row.updated)
        .put("linkPlan", row.link_plan)
        .put("owner", row.owner.as_deref())
        .put("version", i64::try_from(row.version).unwrap_or(i64::MAX));
    p.done()
}

fn task_params(row: &TaskRow) -> BoltType {
    let mut p = Params::new(26);
    p.put("id", row.id.as_str())
        .put("executionId", row.execution_id.as_str())
        .put("planId", row.plan_id.as_str())
        .put("taskId", row.task_id.as_str())
        .put("taskTitle", row.task_title.as_str())
        .put("status", row.status.as_str())
        .put("failed", row.failed())
        .put("output", row.output.as_str())
        .put("error", row.error.as_deref())
        .put("duration", row.duration)
        .put("agentRoleDescription", row.agent_role_description.as_str())
        .put("qcRoleDescription", row.qc_role_description.as_deref())
        .put("prompt", row.prompt.as_deref())
        .put("tokensInput", row.tokens_input)
        .put("tokensOutput", row.tokens_output)
        .put("tokensTotal", row.tokens_total)
        .put("toolCalls", row.tool_calls)
        .put("attemptNumber", row.attempt_number)
        .put("qcPassed", row.qc_passed)
        .put("qcScore", row.qc_score)
        .put("qcFeedback", row.qc_feedback.as_deref())
        .put("qcIssues", row.qc_issues.as_deref())
        .put("qcRequiredFixes", row.qc_required_fixes.as_deref())
        .time("timestamp", &row.timestamp);
    p.done()
}

// --- nodes to records, strict about Bolt types: integers must be Integer, times DateTime.

struct Props<'a> {
    node: &'a BoltNode,
    id: String,
}

impl<'a> Props<'a> {
    fn new(node: &'a BoltNode) -> Self {
        let id = match node.properties.value.get("id") {
            Some(BoltType::String(s)) => s.value.clone(),
            _ => String::new(),
        };
        Self { node, id }
    }

    fn raw(&self, key: &str) -> Option<&'a BoltType> {
        match self.node.properties.value.get(key) {
            None | Some(BoltType::Null(_)) => None,
            Some(v) => Some(v),
        }
    }

    fn opt_string(&self, key: &'static str) -> Result<Option<String>, StoreError> {
        match self.raw(key) {
            None => Ok(None),
            Some(BoltType::String(s)) => Ok(Some(s.value.clone())),
            Some(other) => Err(decode_error(&self.id, key, "a string", other)),
        }
    }

    fn string(&self, key: &'static str) -> Result<String, StoreError> {
        self.opt_string(key)?
            .ok_or_else(|| missing_error(&self.id, key))
    }

    fn int(&self, key: &'static str) -> Result<i64, StoreError> {
        match self.raw(key) {
            Some(BoltType::Integer(i)) => Ok(i.value),
            Some(other) => Err(decode_error(&self.id, key, "an integer", other)),
            None => Err(missing_error(&self.id, key)),
        }
    }

    fn bool(&self, key: &'static str) -> Result<bool, StoreError> {
        match self.raw(key) {
            Some(BoltType::Boolean(b)) => Ok(b.value),
            Some(other) => Err(decode_error(&self.id, key, "a boolean", other)),
            None => Err(missing_error(&self.id, key)),
        }
    }

    fn time(&self, key: &'static str) -> Result<Option<DateTime<Utc>>, StoreError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v @ BoltType::DateTime(_)) => {
                let t: DateTime<chrono::FixedOffset> = v
                    .clone()
                    .try_into()
                    .map_err(|_| decode_error(&self.id, key, "a valid datetime", v))?;
                Ok(Some(t.with_timezone(&Utc)))
            }
            // A bare `datetime()` yields a zone-id value on servers whose default time zone is a
            // named one (ArcadeDB's is the host's; Neo4j's is `db.temporal.timezone`), so nodes
            // the seed wrote there carry these. Bolt 4 sends the local time and the zone; the
            // driver resolves the zone with its time-zone database.
            Some(v @ BoltType::DateTimeZoneId(zoned)) => {
                let t = DateTime::<chrono::FixedOffset>::try_from(zoned).map_err(|_| {
                    decode_error(&self.id, key, "a datetime in a known time zone", v)
                })?;
                Ok(Some(t.with_timezone(&Utc)))
            }
            Some(other) => Err(decode_error(&self.id, key, "a datetime", other)),
        }
    }
}

/// What of runtally's schema a server has (see `Neo4jStore::ensure_schema`).
#[derive(Debug)]
struct SchemaState {
    unique_id: bool,
    /// The name of a plain index on `:Node(id)`, if any.
    id_index: Option<String>,
    type_index: bool,
    execution_id_index: bool,
}

fn decode_error(node: &str, property: &'static str, want: &str, got: &BoltType) -> StoreError {
    StoreError::decode(
        node,
        property,
        format!("expected {want}, found {}", bolt_type_name(got)),
    )
}

fn missing_error(node: &str, property: &'static str) -> StoreError {
    StoreError::decode(node, property, "missing")
}

fn bolt_type_name(v: &BoltType) -> &'static str {
    match v {
        BoltType::String(_) => "String",
        BoltType::Boolean(_) => "Boolean",
        BoltType::Map(_) => "Map",
        BoltType::Null(_) => "Null",
        BoltType::Integer(_) => "Integer",
        BoltType::Float(_) => "Float",
        BoltType::List(_) => "List",
        BoltType::Node(_) => "Node",
        BoltType::Relation(_) | BoltType::UnboundedRelation(_) => "Relationship",
        BoltType::Point2D(_) | BoltType::Point3D(_) => "Point",
        BoltType::Bytes(_) => "Bytes",
        BoltType::Path(_) => "Path",
        BoltType::Duration(_) => "Duration",
        BoltType::Date(_) => "Date",
        BoltType::Time(_) => "Time",
        BoltType::LocalTime(_) => "LocalTime",
        BoltType::DateTime(_) => "DateTime",
        BoltType::LocalDateTime(_) => "LocalDateTime",
        BoltType::DateTimeZoneId(_) => "DateTimeZoneId",
    }
}

fn execution_record(node: BoltNode) -> Result<ExecutionRecord, StoreError> {
    let p = Props::new(&node);
    let status = p.string("status")?;
    let status = status
        .parse::<RunStatus>()
        .map_err(|e| StoreError::decode(p.id.clone(), "status", e.to_string()))?;
    Ok(ExecutionRecord {
        id: p.string("id")?,
        plan_id: p.opt_string("planId")?,
        status,
        start_time: p.time("startTime")?,
        end_time: p.time("endTime")?,
        duration: p.int("duration")?,
        tasks_total: p.int("tasksTotal")?,
        tasks_successful: p.int("tasksSuccessful")?,
        tasks_failed: p.int("tasksFailed")?,
        tokens_input: p.int("tokensInput")?,
        tokens_output: p.int("tokensOutput")?,
        tokens_total: p.int("tokensTotal")?,
        tool_calls: p.int("toolCalls")?,
        created: p.time("created")?,
        updated: p.time("updated")?,
        error: p.opt_string("error")?,
    })
}

fn task_record(node: BoltNode) -> Result<TaskExecutionRecord, StoreError> {
    let p = Props::new(&node);
    let status = match p.string("status")?.as_str() {
        "success" => TaskStatus::Success,
        "failure" => TaskStatus::Failure,
        other => {
            return Err(StoreError::decode(
                p.id.clone(),
                "status",
                format!("unknown task status {other:?}"),
            ))
        }
    };
    Ok(TaskExecutionRecord {
        id: p.string("id")?,
        execution_id: p.string("executionId")?,
        task_id: p.string("taskId")?,
        task_title: p.string("taskTitle")?,
        status,
        output: p.opt_string("output")?.unwrap_or_default(),
        error: p.opt_string("error")?,
        duration: p.int("duration")?,
        agent_role_description: p.opt_string("agentRoleDescription")?.unwrap_or_default(),
        qc_role_description: p.opt_string("qcRoleDescription")?,
        prompt: p.opt_string("prompt")?,
        tokens_input: p.int("tokensInput")?,
        tokens_output: p.int("tokensOutput")?,
        tokens_total: p.int("tokensTotal")?,
        tool_calls: p.int("toolCalls")?,
        attempt_number: p.int("attemptNumber")?,
        qc_passed: p.bool("qcPassed")?,
        qc_score: p.int("qcScore")?,
        qc_feedback: p.opt_string("qcFeedback")?,
        qc_issues: p.opt_string("qcIssues")?,
        qc_required_fixes: p.opt_string("qcRequiredFixes")?,
        timestamp: p.time("timestamp")?,
        updated: p.time("updated")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_never_increment_counters() {
        for statement in [UPSERT_EXECUTIONS, UPSERT_TASKS] {
            assert!(!statement.contains("+ row."), "{statement}");
            assert!(!statement.contains("CREATE ("), "{statement}");
        }
    }

    #[test]
    fn relationship_merges_start_from_the_task_side() {
        for edge in ["HAS_TASK_EXECUTION", "FAILED_TASK", "HAS_EXECUTION"] {
            let needle = format!("MERGE (te)<-[:{edge}]-");
            assert!(UPSERT_TASKS.contains(&needle), "{edge}");
        }
    }
}
