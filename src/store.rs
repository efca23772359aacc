//! Where batches go: the [`GraphStore`] trait the writer calls, its Neo4j implementation, and
//! in-memory stores for tests and benchmarks.
//!
//! A store gets whole [`WriteBatch`]es and must write each one idempotently, with its task rows
//! visible no later than its execution rows: writing the same batch twice leaves the graph as
//! writing it once. The writer relies on that to retry a batch whose outcome it does not know (a
//! connection lost during commit).

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::model::{RunStatus, TaskStatus};
use crate::rows::WriteBatch;

mod driver;
pub mod memory;
pub mod neo4j;
mod nodelay;

pub use memory::{DownStore, MemoryStore, NullStore};
pub use neo4j::Neo4jStore;

/// A boxed, sendable future, so [`GraphStore`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The storage the writer calls with whole batches.
///
/// Implementations must be idempotent (the same batch twice equals once), leave no task node
/// without its execution node, and make a batch's execution rows visible no earlier than its task
/// rows: all in one atomic transaction where the server's readers see commits whole, or (as
/// [`Neo4jStore`] does, for Neo4j's readers) the task rows in a transaction committed before the
/// one with the execution rows. A failure between the two leaves the task rows written and the
/// execution rows as they were; the writer sends the whole batch again.
pub trait GraphStore: Send + Sync + 'static {
    /// Writes one batch (see the trait's documentation for the order it must keep).
    ///
    /// # Errors
    ///
    /// A [`StoreError`]; when [`StoreError::is_retriable`] the same batch may be sent again.
    fn write<'a>(&'a self, batch: &'a WriteBatch) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Creates the unique constraint on `Node.id` and the indexes on `Node.type` and
    /// `Node.executionId` if they are missing. Idempotent.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the server refuses.
    fn ensure_schema(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// One round trip, to tell a reachable server from an unreachable one.
    ///
    /// # Errors
    ///
    /// A [`Connection`](crate::StoreErrorKind::Connection) error if the server cannot be
    /// reached, an [`Auth`](crate::StoreErrorKind::Auth) error if it rejects the credentials.
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Marks runs left `running` by a dead aggregator as `failed`, with `error = 'interrupted'`
    /// and an end time: every `running` execution whose heartbeat (`updated`) is older than
    /// `cutoff` and whose owner is not `except_owner`. Returns the ids it marked.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the query fails.
    fn reconcile_stale(
        &self,
        cutoff: DateTime<Utc>,
        except_owner: Option<&str>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;
}

/// An `orchestration_execution` node as read back.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ExecutionRecord {
    /// `id`.
    pub id: String,
    /// `planId`.
    pub plan_id: Option<String>,
    /// `status`.
    pub status: RunStatus,
    /// `startTime`.
    pub start_time: Option<DateTime<Utc>>,
    /// `endTime`, absent while running.
    pub end_time: Option<DateTime<Utc>>,
    /// `duration` in milliseconds.
    pub duration: i64,
    /// `tasksTotal`.
    pub tasks_total: i64,
    /// `tasksSuccessful`.
    pub tasks_successful: i64,
    /// `tasksFailed`.
    pub tasks_failed: i64,
    /// `tokensInput`.
    pub tokens_input: i64,
    /// `tokensOutput`.
    pub tokens_output: i64,
    /// `tokensTotal`.
    pub tokens_total: i64,
    /// `toolCalls`.
    pub tool_calls: i64,
    /// `created`.
    pub created: Option<DateTime<Utc>>,
    /// `updated`.
    pub updated: Option<DateTime<Utc>>,
    /// `error`: only set by reconciliation (`interrupted`).
    pub error: Option<String>,
}

/// A `task_execution` node as read back.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct TaskExecutionRecord {
    /// `id`: `"{executionId}-{taskId}"`.
    pub id: String,
    /// `executionId`.
    pub execution_id: String,
    /// `taskId`.
    pub task_id: String,
    /// `taskTitle`.
    pub task_title: String,
    /// `status`.
    pub status: TaskStatus,
    /// `output`.
    pub output: String,
    /// `error`.
    pub error: Option<String>,
    /// `duration` in milliseconds.
    pub duration: i64,
    /// `agentRoleDescription`.
    pub agent_role_description: String,
    /// `qcRoleDescription`.
    pub qc_role_description: Option<String>,
    /// `prompt`.
    pub prompt: Option<String>,
    /// `tokensInput`.
    pub tokens_input: i64,
    /// `tokensOutput`.
    pub tokens_output: i64,
    /// `tokensTotal`.
    pub tokens_total: i64,
    /// `toolCalls`.
    pub tool_calls: i64,
    /// `attemptNumber`.
    pub attempt_number: i64,
    /// `qcPassed`.
    pub qc_passed: bool,
    /// `qcScore`.
    pub qc_score: i64,
    /// `qcFeedback`.
    pub qc_feedback: Option<String>,
    /// `qcIssues`, lines joined with `"\n"`.
    pub qc_issues: Option<String>,
    /// `qcRequiredFixes`, lines joined with `"\n"`.
    pub qc_required_fixes: Option<String>,
    /// `timestamp`.
    pub timestamp: Option<DateTime<Utc>>,
    /// `updated`.
    pub updated: Option<DateTime<Utc>>,
}
