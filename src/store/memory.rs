//! In-memory stores: a [`MemoryStore`] that keeps the latest rows (for actor-logic tests, with
//! fault injection), a [`NullStore`] that discards everything (to measure runtally alone) and a
//! [`DownStore`] that is never reachable (to measure the disk buffer's overflow).
//!
//! Neither proves anything about persistence; the integration tests use the real database.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::{BoxFuture, GraphStore};
use crate::error::StoreError;
use crate::model::RunStatus;
use crate::rows::{ExecutionRow, ExecutionWrite, TaskRow, WriteBatch};
use crate::sync::lock;

type Fault = Box<dyn FnMut(&WriteBatch) -> Option<StoreError> + Send>;

#[derive(Default)]
struct Graph {
    executions: HashMap<String, ExecutionRow>,
    tasks: HashMap<String, TaskRow>,
    failed_edges: HashSet<String>,
    batches: u64,
    interrupted: HashSet<String>,
    heartbeats: HashMap<String, DateTime<Utc>>,
}

/// Keeps the latest execution and task rows in memory, with the same all-or-nothing and
/// no-orphan rules as the Neo4j store. Clones share the data.
#[derive(Clone, Default)]
pub struct MemoryStore {
    graph: Arc<Mutex<Graph>>,
    fault: Arc<Mutex<Option<Fault>>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later write call `fault` first; a returned error fails that write (nothing
    /// of it is stored).
    pub fn fail_with(&self, fault: impl FnMut(&WriteBatch) -> Option<StoreError> + Send + 'static) {
        *lock(&self.fault) = Some(Box::new(fault));
    }

    /// Stops injecting faults.
    pub fn heal(&self) {
        *lock(&self.fault) = None;
    }

    /// The latest row of an execution.
    pub fn execution(&self, id: &str) -> Option<ExecutionRow> {
        lock(&self.graph).executions.get(id).cloned()
    }

    /// Every execution row.
    pub fn executions(&self) -> Vec<ExecutionRow> {
        lock(&self.graph).executions.values().cloned().collect()
    }

    /// The latest rows of a run's tasks, ordered by node id.
    pub fn tasks_of(&self, execution_id: &str) -> Vec<TaskRow> {
        let graph = lock(&self.graph);
        let mut tasks: Vec<TaskRow> = graph
            .tasks
            .values()
            .filter(|t| t.execution_id.as_str() == execution_id)
            .cloned()
            .collect();
        tasks.sort_by(|a, b| a.id.cmp(&b.id));
        tasks
    }

    /// Number of task nodes.
    pub fn task_count(&self) -> usize {
        lock(&self.graph).tasks.len()
    }

    /// Whether the task execution `id` has a `FAILED_TASK` edge.
    pub fn has_failed_edge(&self, id: &str) -> bool {
        lock(&self.graph).failed_edges.contains(id)
    }

    /// Batches written successfully.
    pub fn batches(&self) -> u64 {
        lock(&self.graph).batches
    }

    /// Whether reconciliation marked this run interrupted.
    pub fn interrupted(&self, id: &str) -> bool {
        lock(&self.graph).interrupted.contains(id)
    }

    fn apply(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        if let Some(fault) = lock(&self.fault).as_mut() {
            if let Some(e) = fault(batch) {
                return Err(e);
            }
        }
        let mut graph = lock(&self.graph);
        let missing = batch
            .tasks
            .iter()
            .filter(|t| {
                !graph.executions.contains_key(t.execution_id.as_str())
                    && !batch.executions.iter().any(|e| e.id == t.execution_id)
            })
            .count();
        if missing > 0 {
            return Err(StoreError::orphaned(batch.tasks.len(), missing));
        }
        for row in &batch.executions {
            let stored = graph.executions.get(row.id.as_str());
            let stored_version = stored.map(|old| old.version);
            let created = stored.map_or(row.created, |old| old.created);
            let new_row = match row.write {
                // A newer state of the run is already stored.
                ExecutionWrite::State if stored_version.is_some_and(|v| v > row.version) => {
                    continue
                }
                ExecutionWrite::State => {
                    let mut new = row.clone();
                    new.created = created;
                    new
                }
                ExecutionWrite::Status => match stored {
                    Some(old) if old.version >= row.version => continue,
                    Some(old) => {
                        let mut new = old.clone();
                        new.status = row.status;
                        new.updated = row.updated;
                        new.version = row.version;
                        new
                    }
                    None => {
                        let mut new = placeholder_of(row);
                        new.status = row.status;
                        new.version = row.version;
                        new
                    }
                },
                ExecutionWrite::Placeholder if stored.is_some() => continue,
                ExecutionWrite::Placeholder => placeholder_of(row),
            };
            graph.executions.insert(row.id.as_str().to_owned(), new_row);
        }
        for row in &batch.tasks {
            if row.failed() {
                graph.failed_edges.insert(row.id.clone());
            } else {
                graph.failed_edges.remove(&row.id);
            }
            graph.tasks.insert(row.id.clone(), row.clone());
        }
        if let Some(heartbeat) = &batch.heartbeat {
            for id in &heartbeat.runs {
                if graph.executions.contains_key(id.as_str()) {
                    graph
                        .heartbeats
                        .insert(id.as_str().to_owned(), heartbeat.at);
                }
            }
        }
        graph.batches += 1;
        Ok(())
    }
}

/// The node a placeholder creates: `running`, zero counters, no end, version below any state.
fn placeholder_of(row: &ExecutionRow) -> ExecutionRow {
    let mut new = row.clone();
    new.status = RunStatus::Running;
    new.end_time = None;
    new.duration_ms = 0;
    new.tasks_successful = 0;
    new.tasks_failed = 0;
    new.tokens_input = 0;
    new.tokens_output = 0;
    new.tokens_total = 0;
    new.tool_calls = 0;
    new.link_plan = false;
    new.version = 0;
    new.write = ExecutionWrite::State;
    new
}

impl GraphStore for MemoryStore {
    fn write<'a>(&'a self, batch: &'a WriteBatch) -> BoxFuture<'a, Result<(), StoreError>> {
        let outcome = self.apply(batch);
        Box::pin(async move { outcome })
    }

    fn ensure_schema(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn reconcile_stale(
        &self,
        cutoff: DateTime<Utc>,
        except_owner: Option<&str>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        let mut graph = lock(&self.graph);
        let graph = &mut *graph;
        let mut marked = Vec::new();
        for row in graph.executions.values_mut() {
            let live = row.end_time.is_none()
                && matches!(row.status, RunStatus::Running | RunStatus::Failed);
            let other_owner = except_owner.is_none() || row.owner.as_deref() != except_owner;
            let beat = graph
                .heartbeats
                .get(row.id.as_str())
                .map_or(row.updated, |b| (*b).max(row.updated));
            if live && other_owner && beat < cutoff {
                row.status = RunStatus::Failed;
                row.end_time = Some(now);
                row.duration_ms = (now - row.start_time).num_milliseconds();
                row.updated = now;
                marked.push(row.id.as_str().to_owned());
            }
        }
        graph.interrupted.extend(marked.iter().cloned());
        Box::pin(async move { Ok(marked) })
    }
}

/// Discards every batch, counting rows: measures runtally's own path without a database.
#[derive(Debug, Default)]
pub struct NullStore {
    rows: AtomicU64,
    batches: AtomicU64,
}

impl NullStore {
    /// A new null store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rows discarded so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Batches discarded so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}

impl GraphStore for NullStore {
    fn write<'a>(&'a self, batch: &'a WriteBatch) -> BoxFuture<'a, Result<(), StoreError>> {
        self.rows.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }

    fn ensure_schema(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn reconcile_stale(
        &self,
        _cutoff: DateTime<Utc>,
        _except_owner: Option<&str>,
        _now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// A database that is never reachable: every call fails as a refused connection would (a
/// retriable error). With a disk buffer and `WhenFull::Overflow`, everything accepted goes to
/// the buffer; `runtally loadgen --store down` measures that.
#[derive(Debug, Clone, Copy, Default)]
pub struct DownStore;

impl DownStore {
    fn down<T>() -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
    {
        Box::pin(async {
            Err(StoreError::new(
                crate::error::StoreErrorKind::Connection,
                "DownStore is never reachable",
            ))
        })
    }
}

impl GraphStore for DownStore {
    fn write<'a>(&'a self, _: &'a WriteBatch) -> BoxFuture<'a, Result<(), StoreError>> {
        Self::down()
    }

    fn ensure_schema(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Self::down()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Self::down()
    }

    fn reconcile_stale(
        &self,
        _cutoff: DateTime<Utc>,
        _except_owner: Option<&str>,
        _now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Self::down()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ExecutionId, PlanId, TaskDefinition, TaskId, TaskResult};

    fn exec_row(id: &str) -> ExecutionRow {
        ExecutionRow::started(
            ExecutionId::new(id).expect("id"),
            PlanId::new("p").expect("id"),
            2,
            Utc::now(),
            Utc::now(),
        )
        .expect("row")
    }

    fn task_row(exec: &str, task: &str, failed: bool) -> TaskRow {
        let t = TaskId::new(task).expect("id");
        let result = if failed {
            TaskResult::failure(t.clone(), "x")
        } else {
            TaskResult::success(t.clone())
        };
        TaskRow::new(
            &ExecutionId::new(exec).expect("id"),
            &PlanId::new("p").expect("id"),
            TaskDefinition::new(t),
            result,
            Utc::now(),
        )
        .expect("row")
    }

    #[tokio::test]
    async fn orphan_tasks_fail_the_whole_batch() {
        let store = MemoryStore::new();
        let batch = WriteBatch::new(vec![], vec![task_row("nope", "t", false)]);
        let err = store.write(&batch).await.expect_err("orphan");
        assert_eq!(err.kind(), crate::StoreErrorKind::Orphaned);
        assert_eq!(err.to_string(), "1 of 1 task rows found no execution node");
        assert_eq!(store.task_count(), 0);
    }

    #[tokio::test]
    async fn a_success_re_sent_over_a_failure_removes_the_failed_edge() {
        let store = MemoryStore::new();
        let first = WriteBatch::new(vec![exec_row("e")], vec![task_row("e", "t", true)]);
        store.write(&first).await.expect("write");
        assert!(store.has_failed_edge("e-t"));
        let second = WriteBatch::new(vec![], vec![task_row("e", "t", false)]);
        store.write(&second).await.expect("write");
        assert!(!store.has_failed_edge("e-t"));
        assert_eq!(store.task_count(), 1);
    }

    #[tokio::test]
    async fn injected_faults_fail_writes_until_healed() {
        let store = MemoryStore::new();
        store.fail_with(|_| Some(StoreError::timeout(std::time::Duration::from_millis(1))));
        let batch = WriteBatch::new(vec![exec_row("e")], vec![]);
        assert!(store.write(&batch).await.is_err());
        assert!(store.execution("e").is_none());
        store.heal();
        store.write(&batch).await.expect("healed");
        assert!(store.execution("e").is_some());
    }
}
