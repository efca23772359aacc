//! What one write puts in the graph: the rows of an `orchestration_execution` node and of a
//! `task_execution` node, with every value already in the form and type the seed stores.
//!
//! Building a row applies the seed's fallbacks (`title || taskId`, `error || null`,
//! `attemptNumber || 1`, …) and checks every count against the Bolt integer range, so a store
//! only has to hand the values to the database.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::model::ModelError;
use crate::model::{
    check_count, task_execution_id, ExecutionId, PlanId, RunStatus, TaskDefinition, TaskResult,
    TaskStatus,
};

/// The state of one `orchestration_execution` node, written as absolute values.
///
/// Serializes with the graph's property names (a spill file holds these as
/// `execution_state` events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ExecutionRow {
    /// Node id: the execution id.
    pub id: ExecutionId,
    /// `planId`.
    pub plan_id: PlanId,
    /// `status`.
    pub status: RunStatus,
    /// `startTime`.
    pub start_time: DateTime<Utc>,
    /// `endTime`; `None` while the run is live (the property is then absent, as in the seed).
    pub end_time: Option<DateTime<Utc>>,
    /// `duration` in milliseconds: end minus start, 0 while live.
    #[serde(rename = "duration")]
    pub duration_ms: i64,
    /// `tasksTotal`: the planned task count.
    pub tasks_total: i64,
    /// `tasksSuccessful`: tasks whose latest result is a success.
    pub tasks_successful: i64,
    /// `tasksFailed`: tasks whose latest result is a failure.
    pub tasks_failed: i64,
    /// `tokensInput`.
    pub tokens_input: i64,
    /// `tokensOutput`.
    pub tokens_output: i64,
    /// `tokensTotal`.
    pub tokens_total: i64,
    /// `toolCalls`.
    pub tool_calls: i64,
    /// `created`, set only when the node is created.
    pub created: DateTime<Utc>,
    /// `updated`: when this state was produced.
    pub updated: DateTime<Utc>,
    /// Whether this write should (re)try the `EXECUTES_PLAN` link. Set on a run's first and final
    /// writes only: merging the link scans the execution's edges, which grow with its tasks.
    pub link_plan: bool,
    /// `runtallyOwner`: the aggregator instance writing this run (runtally's own property, which
    /// the seed's readers ignore). Used to find runs orphaned by a crashed process.
    #[serde(rename = "runtallyOwner")]
    pub owner: Option<Arc<str>>,
    /// `runtallyVersion`: the wall clock in microseconds when the run actor built the row,
    /// strictly increasing per run. A store applies a row only if it is not older than what the
    /// node holds, so two writes of one run may commit in either order (an urgent copy
    /// overtaking the queue) and the newest still wins.
    #[serde(rename = "runtallyVersion", default)]
    pub version: u64,
    /// How much of this row a write applies: the whole state (the default), or, on rows the
    /// writer derives from it, only the status or only the node's existence.
    #[serde(default, skip_serializing_if = "ExecutionWrite::is_state")]
    pub write: ExecutionWrite,
}

/// How much of an [`ExecutionRow`] a store applies.
///
/// Only [`ExecutionWrite::State`] rows come from run actors. The writer derives the other two
/// so that an execution node never shows more than the task nodes already in the graph: a
/// run's counters, and its end, are written after its task rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum ExecutionWrite {
    /// Every property, if the row is not older than the node (by `runtallyVersion`).
    #[default]
    State,
    /// Only `status` (and `updated`, `runtallyVersion`), if the row is newer than the node: the
    /// urgent mark of a run that just failed or recovered while some of its task rows are
    /// still queued. Counters stay as the node has them.
    Status,
    /// Only creates the node if it is missing (`running`, zero counters), so that task rows
    /// written in a transaction before the one carrying the run's state find their execution.
    /// An existing node is left as it is.
    Placeholder,
}

impl ExecutionWrite {
    /// Whether this is the whole state.
    pub fn is_state(&self) -> bool {
        *self == ExecutionWrite::State
    }
}

/// Fixed cost of a row besides its strings: the struct itself and, on the wire, its property
/// names and scalar values (~25 properties of a few bytes each).
const ROW_OVERHEAD_BYTES: usize = 512;

impl ExecutionRow {
    /// A copy that only writes this row's status (see [`ExecutionWrite::Status`]).
    pub(crate) fn status_mark(&self) -> Self {
        let mut row = self.clone();
        row.write = ExecutionWrite::Status;
        row.link_plan = false;
        row
    }

    /// A copy that only makes sure the node exists (see [`ExecutionWrite::Placeholder`]).
    pub(crate) fn placeholder(&self) -> Self {
        let mut row = self.clone();
        row.write = ExecutionWrite::Placeholder;
        row.link_plan = false;
        row
    }

    /// Whether this row ends the run (it carries an end time and is the whole state).
    pub fn is_terminal(&self) -> bool {
        self.write.is_state() && self.end_time.is_some()
    }

    /// Roughly what the row costs in memory and on the wire, in bytes.
    pub fn weight(&self) -> usize {
        ROW_OVERHEAD_BYTES
            + self.id.as_str().len()
            + self.plan_id.as_str().len()
            + self.owner.as_deref().map_or(0, str::len)
    }
}

impl ExecutionRow {
    /// A fresh `running` row with zero counters, as the seed's `createExecutionNodeInNeo4j`
    /// writes it.
    ///
    /// # Errors
    ///
    /// [`ModelError::CountOutOfRange`] if `tasks_total` is above [`i64::MAX`].
    pub fn started(
        id: ExecutionId,
        plan_id: PlanId,
        tasks_total: u64,
        start_time: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            id,
            plan_id,
            status: RunStatus::Running,
            start_time,
            end_time: None,
            duration_ms: 0,
            tasks_total: check_count("tasksTotal", tasks_total)?,
            tasks_successful: 0,
            tasks_failed: 0,
            tokens_input: 0,
            tokens_output: 0,
            tokens_total: 0,
            tool_calls: 0,
            created: now,
            updated: now,
            link_plan: true,
            owner: None,
            version: 0,
            write: ExecutionWrite::State,
        })
    }
}

/// The state of one `task_execution` node (the latest result of one task of one run).
///
/// Serializes with the graph's property names (a spill file holds these as `task_state`
/// events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct TaskRow {
    /// Node id: `"{executionId}-{taskId}"`.
    pub id: String,
    /// `executionId`.
    pub execution_id: ExecutionId,
    /// The run's plan, for the `HAS_EXECUTION` link (not a property).
    pub plan_id: PlanId,
    /// `taskId`.
    pub task_id: crate::model::TaskId,
    /// `taskTitle`: the title, or the task id when the title is missing or empty.
    pub task_title: String,
    /// `status`: `success` or `failure`.
    pub status: TaskStatus,
    /// `output`, whole.
    pub output: String,
    /// `error`; `None` (property absent) when missing or empty.
    pub error: Option<String>,
    /// `duration` in milliseconds.
    pub duration: i64,
    /// `agentRoleDescription` from the definition, `""` when missing or empty.
    pub agent_role_description: String,
    /// `qcRoleDescription` from the definition's `qcRole`; absent when missing or empty.
    pub qc_role_description: Option<String>,
    /// `prompt` from the result; absent when missing or empty.
    pub prompt: Option<String>,
    /// `tokensInput`.
    pub tokens_input: i64,
    /// `tokensOutput`.
    pub tokens_output: i64,
    /// `tokensTotal`: input plus output.
    pub tokens_total: i64,
    /// `toolCalls`.
    pub tool_calls: i64,
    /// `attemptNumber`: 1 when missing or 0.
    pub attempt_number: i64,
    /// `qcPassed`: `false` without a QC verdict.
    pub qc_passed: bool,
    /// `qcScore`: 0 without a QC verdict.
    pub qc_score: i64,
    /// `qcFeedback`; absent when missing or empty.
    pub qc_feedback: Option<String>,
    /// `qcIssues` joined with `"\n"`; absent without an `issues` list (an empty list is `""`).
    pub qc_issues: Option<String>,
    /// `qcRequiredFixes` joined with `"\n"`, like `qc_issues`.
    pub qc_required_fixes: Option<String>,
    /// `timestamp` and `updated`: when runtally received this result.
    pub timestamp: DateTime<Utc>,
}

impl TaskRow {
    /// Builds the row the seed's `persistTaskExecutionToNeo4j` would write for this result.
    ///
    /// # Errors
    ///
    /// - [`ModelError::TaskIdMismatch`] if the definition and the result name different tasks.
    /// - [`ModelError::CountOutOfRange`] if a count, or tokens in plus out, is above
    ///   [`i64::MAX`].
    pub fn new(
        execution_id: &ExecutionId,
        plan_id: &PlanId,
        task: TaskDefinition,
        result: TaskResult,
        timestamp: DateTime<Utc>,
    ) -> Result<Self, ModelError> {
        if task.id != result.task_id {
            return Err(ModelError::TaskIdMismatch {
                definition: task.id,
                result: result.task_id,
            });
        }
        let tokens_input = check_count("tokens.input", result.tokens.input)?;
        let tokens_output = check_count("tokens.output", result.tokens.output)?;
        let tokens_total =
            tokens_input
                .checked_add(tokens_output)
                .ok_or(ModelError::CountOutOfRange {
                    field: "tokensTotal",
                    value: result.tokens.input.saturating_add(result.tokens.output),
                })?;
        let attempt_number = match result.attempt_number {
            None | Some(0) => 1,
            Some(n) => check_count("attemptNumber", n)?,
        };
        let (qc_passed, qc_score, qc_feedback, qc_issues, qc_required_fixes) =
            match result.qc_verification {
                Some(qc) => (
                    qc.passed,
                    qc.score,
                    non_empty(qc.feedback),
                    qc.issues.map(|v| v.join("\n")),
                    qc.required_fixes.map(|v| v.join("\n")),
                ),
                None => (false, 0, None, None, None),
            };
        Ok(Self {
            id: task_execution_id(execution_id, &result.task_id),
            execution_id: execution_id.clone(),
            plan_id: plan_id.clone(),
            task_title: match task.title {
                Some(title) if !title.is_empty() => title,
                _ => result.task_id.as_str().to_owned(),
            },
            task_id: result.task_id,
            status: result.status,
            output: result.output,
            error: non_empty(result.error),
            duration: check_count("duration", result.duration)?,
            agent_role_description: task.agent_role_description.unwrap_or_default(),
            qc_role_description: non_empty(task.qc_role),
            prompt: non_empty(result.prompt),
            tokens_input,
            tokens_output,
            tokens_total,
            tool_calls: check_count("toolCalls", result.tool_calls)?,
            attempt_number,
            qc_passed,
            qc_score,
            qc_feedback,
            qc_issues,
            qc_required_fixes,
            timestamp,
        })
    }

    /// Whether this result is a failure (and so carries a `FAILED_TASK` edge).
    pub fn failed(&self) -> bool {
        self.status == TaskStatus::Failure
    }

    /// Roughly what the row costs in memory and on the wire, in bytes: its strings plus a fixed
    /// overhead. Batches close and senders wait by this weight (`max_batch_bytes`,
    /// `max_pending_bytes`). It depends only on the row's contents, so it is the same wherever
    /// it is computed.
    pub fn weight(&self) -> usize {
        let opt = |s: &Option<String>| s.as_deref().map_or(0, str::len);
        ROW_OVERHEAD_BYTES
            + self.id.len()
            + self.execution_id.as_str().len()
            + self.plan_id.as_str().len()
            + self.task_id.as_str().len()
            + self.task_title.len()
            + self.output.len()
            + opt(&self.error)
            + self.agent_role_description.len()
            + opt(&self.qc_role_description)
            + opt(&self.prompt)
            + opt(&self.qc_feedback)
            + opt(&self.qc_issues)
            + opt(&self.qc_required_fixes)
    }
}

/// A refresh of `runtallyHeartbeat` on the execution nodes of live runs, so that
/// reconciliation can tell a live run from one whose process died.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    /// The time to record.
    pub at: DateTime<Utc>,
    /// The live runs.
    pub runs: Vec<ExecutionId>,
}

/// One transaction's worth of rows. Executions are written before tasks, so every task finds
/// its execution node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    /// Execution nodes, at most one row per execution id.
    pub executions: Vec<ExecutionRow>,
    /// Task execution nodes, at most one row per node id.
    pub tasks: Vec<TaskRow>,
    /// A heartbeat for live runs, written after the rows.
    pub heartbeat: Option<Heartbeat>,
}

impl WriteBatch {
    /// A batch of rows, without a heartbeat.
    pub fn new(executions: Vec<ExecutionRow>, tasks: Vec<TaskRow>) -> Self {
        Self {
            executions,
            tasks,
            heartbeat: None,
        }
    }

    /// Rows in the batch (a heartbeat is not a row).
    pub fn len(&self) -> usize {
        self.executions.len() + self.tasks.len()
    }

    /// Roughly what the batch costs in memory and on the wire (the sum of its rows' weights).
    pub fn weight(&self) -> usize {
        self.executions
            .iter()
            .map(ExecutionRow::weight)
            .sum::<usize>()
            + self.tasks.iter().map(TaskRow::weight).sum::<usize>()
    }

    /// Whether the batch holds nothing to write.
    pub fn is_empty(&self) -> bool {
        self.executions.is_empty() && self.tasks.is_empty() && self.heartbeat.is_none()
    }
}

/// RFC 3339 with milliseconds and `Z`, the form JavaScript's `toISOString()` gives the seed.
pub(crate) fn iso_millis(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// JavaScript's `s || null` for an optional string.
fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{QcVerification, TaskId, MAX_COUNT};

    fn ids() -> (ExecutionId, PlanId) {
        (
            ExecutionId::new("exec-1").expect("id"),
            PlanId::new("plan-1").expect("id"),
        )
    }

    fn t(id: &str) -> TaskId {
        TaskId::new(id).expect("id")
    }

    #[test]
    fn task_row_applies_the_seed_fallbacks() {
        let (exec, plan) = ids();
        let def = TaskDefinition::new(t("task-1")).with_title("");
        let mut result = TaskResult::success(t("task-1"));
        result.error = Some(String::new());
        result.prompt = Some(String::new());
        result.attempt_number = Some(0);
        let row = TaskRow::new(&exec, &plan, def.clone(), result, Utc::now()).expect("row");
        assert_eq!(row.id, "exec-1-task-1");
        assert_eq!(row.task_title, "task-1");
        assert_eq!(row.output, "");
        assert_eq!(row.error, None);
        assert_eq!(row.prompt, None);
        assert_eq!(row.agent_role_description, "");
        assert_eq!(row.qc_role_description, None);
        assert_eq!(row.attempt_number, 1);
        assert!(!row.qc_passed);
        assert_eq!(row.qc_score, 0);
        assert_eq!(row.qc_issues, None);
    }

    #[test]
    fn qc_lists_are_joined_with_newlines_and_an_empty_list_is_an_empty_string() {
        let (exec, plan) = ids();
        let def = TaskDefinition::new(t("a"))
            .with_title("Title")
            .with_agent_role("worker")
            .with_qc_role("qc");
        let mut qc = QcVerification::new(false, 45);
        qc.issues = Some(vec!["Incomplete data".into(), "Missing validation".into()]);
        qc.required_fixes = Some(vec![]);
        qc.feedback = Some("meh".into());
        let result = TaskResult::failure(t("a"), "Timeout")
            .with_qc(qc)
            .with_tokens(800, 100)
            .with_tool_calls(2)
            .with_attempt(3);
        let row = TaskRow::new(&exec, &plan, def.clone(), result, Utc::now()).expect("row");
        assert_eq!(
            row.qc_issues.as_deref(),
            Some("Incomplete data\nMissing validation")
        );
        assert_eq!(row.qc_required_fixes.as_deref(), Some(""));
        assert_eq!(row.qc_feedback.as_deref(), Some("meh"));
        assert_eq!(row.qc_score, 45);
        assert_eq!(row.tokens_total, 900);
        assert_eq!(row.attempt_number, 3);
        assert_eq!(row.task_title, "Title");
        assert_eq!(row.agent_role_description, "worker");
        assert_eq!(row.qc_role_description.as_deref(), Some("qc"));
        assert!(row.failed());
    }

    #[test]
    fn mismatched_task_ids_are_rejected() {
        let (exec, plan) = ids();
        let err = TaskRow::new(
            &exec,
            &plan,
            TaskDefinition::new(t("a")),
            TaskResult::success(t("b")),
            Utc::now(),
        )
        .expect_err("mismatch");
        assert_eq!(
            err.to_string(),
            "task definition \"a\" does not match result \"b\""
        );
    }

    #[test]
    fn counts_out_of_bolt_range_are_rejected_when_building_rows() {
        let (exec, plan) = ids();
        let def = TaskDefinition::new(t("a"));
        let too_big = TaskResult::success(t("a")).with_tool_calls(MAX_COUNT + 1);
        assert!(matches!(
            TaskRow::new(&exec, &plan, def.clone(), too_big, Utc::now()),
            Err(ModelError::CountOutOfRange {
                field: "toolCalls",
                ..
            })
        ));
        let sum_too_big = TaskResult::success(t("a")).with_tokens(MAX_COUNT, 1);
        assert!(matches!(
            TaskRow::new(&exec, &plan, def.clone(), sum_too_big, Utc::now()),
            Err(ModelError::CountOutOfRange {
                field: "tokensTotal",
                ..
            })
        ));
    }

    #[test]
    fn iso_millis_matches_javascript_to_iso_string() {
        let t = DateTime::parse_from_rfc3339("2026-11-27T02:36:53.123456+02:00")
            .expect("parse")
            .with_timezone(&Utc);
        assert_eq!(iso_millis(&t), "2026-11-27T00:36:53.123Z");
    }
}
