//! Plain data: typed ids, the seed orchestrator's task and result shapes, statuses.
//!
//! Everything here deserializes the seed orchestrator's own camelCase JSON. Unknown fields are
//! ignored and missing optional fields take the values the seed would have written (its `x || d`
//! fallbacks are applied where the graph row is built, see [`crate::rows`]). Counts are unsigned in
//! Rust; a count above [`i64::MAX`], the largest integer Bolt can carry, is rejected when the JSON
//! is read and again when a row is built, so it can never wrap silently.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

/// The largest count runtally accepts: Bolt integers are signed 64-bit.
pub const MAX_COUNT: u64 = i64::MAX as u64;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        ///
        /// Cheap to clone (a shared `str`). Never empty, never only whitespace, never holds
        /// control characters; any other text, quotes and Cypher keywords included, is kept
        /// verbatim (it only ever reaches the database as a query parameter).
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// Checks and wraps an id.
            ///
            /// # Errors
            ///
            /// [`ModelError::InvalidId`] if the id is empty, only whitespace, or holds a control
            /// character.
            pub fn new(id: impl Into<String>) -> Result<Self, ModelError> {
                let id = id.into();
                check_id($what, &id)?;
                Ok(Self(Arc::from(id)))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ModelError;
            fn try_from(id: String) -> Result<Self, ModelError> {
                Self::new(id)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = ModelError;
            fn try_from(id: &str) -> Result<Self, ModelError> {
                Self::new(id)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ModelError;
            fn from_str(id: &str) -> Result<Self, ModelError> {
                Self::new(id)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

typed_id!(
    /// The id of one workflow run (the seed's `executionId`, e.g. `exec-1763134573643`).
    ExecutionId,
    "execution"
);
typed_id!(
    /// The id of a task within its plan (e.g. `task-1.1`).
    TaskId,
    "task"
);
typed_id!(
    /// The id of the `orchestration_plan` node a run executes.
    PlanId,
    "plan"
);

fn check_id(kind: &'static str, id: &str) -> Result<(), ModelError> {
    let problem = if id.is_empty() {
        Some("is empty")
    } else if id.trim().is_empty() {
        Some("is only whitespace")
    } else if id.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(ModelError::InvalidId { kind, problem }),
        None => Ok(()),
    }
}

/// The id of a `task_execution` node: `"{executionId}-{taskId}"`, as the seed builds it.
pub fn task_execution_id(execution: &ExecutionId, task: &TaskId) -> String {
    let mut id = String::with_capacity(execution.as_str().len() + task.as_str().len() + 1);
    id.push_str(execution.as_str());
    id.push('-');
    id.push_str(task.as_str());
    id
}

/// The outcome of one task attempt, as the seed's `ExecutionResult.status` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// `"success"`.
    Success,
    /// `"failure"`: flips the run to [`RunStatus::Failed`].
    Failure,
}

impl TaskStatus {
    /// The string stored in the graph.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Success => "success",
            TaskStatus::Failure => "failure",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of a run, as stored in `orchestration_execution.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Started, no task's latest result is a failure.
    Running,
    /// Some task's latest result is a failure (set the moment it arrives, kept to the end).
    Failed,
    /// Finished with every task's latest result a success.
    Completed,
    /// Cancelled by the orchestrator, whatever the tasks did.
    Cancelled,
}

impl RunStatus {
    /// The string stored in the graph.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Failed => "failed",
            RunStatus::Completed => "completed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RunStatus {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s {
            "running" => Ok(RunStatus::Running),
            "failed" => Ok(RunStatus::Failed),
            "completed" => Ok(RunStatus::Completed),
            "cancelled" => Ok(RunStatus::Cancelled),
            other => Err(ModelError::UnknownStatus(other.to_owned())),
        }
    }
}

/// The kind of a task definition (`taskType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskType {
    /// An LLM agent task.
    Agent,
    /// A deterministic transformer (lambda) task.
    Transformer,
}

/// Tokens one task attempt used (`tokens: {input, output}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Prompt tokens. At most [`MAX_COUNT`].
    #[serde(default, deserialize_with = "count_or_zero")]
    pub input: u64,
    /// Completion tokens. At most [`MAX_COUNT`].
    #[serde(default, deserialize_with = "count_or_zero")]
    pub output: u64,
}

impl TokenUsage {
    /// Tokens in and out.
    pub fn new(input: u64, output: u64) -> Self {
        Self { input, output }
    }
}

/// A QC agent's verdict on a task's output (the seed's `QCResult`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct QcVerification {
    /// Whether QC passed. Missing or `null` is `false`, as in the seed.
    #[serde(default, deserialize_with = "bool_or_false")]
    pub passed: bool,
    /// The QC score, an integer (the seed stores it as a Bolt integer). Missing is 0.
    #[serde(default, deserialize_with = "int_or_zero")]
    pub score: i64,
    /// Free-text feedback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
    /// Issues found; stored joined with `"\n"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issues: Option<Vec<String>>,
    /// Fixes required; stored joined with `"\n"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_fixes: Option<Vec<String>>,
    /// When QC ran (kept as given; not stored by the seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

impl QcVerification {
    /// A verdict with a pass flag and a score; the other fields empty.
    pub fn new(passed: bool, score: i64) -> Self {
        Self {
            passed,
            score,
            ..Self::default()
        }
    }
}

/// A task of a plan, as the orchestrator defines it (the seed's `TaskDefinition`).
///
/// Only `id` is required; runtally stores `title`, `agentRoleDescription` and `qcRole` and keeps
/// the rest so a spilled event replays exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct TaskDefinition {
    /// The task's id within its plan.
    pub id: TaskId,
    /// Title; an empty or missing title is stored as the task id (as the seed does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The worker agent's role, stored as `agentRoleDescription` (missing: `""`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_role_description: Option<String>,
    /// The model the planner recommended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended_model: Option<String>,
    /// The task prompt as planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Ids of the tasks this one waits for.
    #[serde(default, deserialize_with = "vec_or_empty")]
    pub dependencies: Vec<String>,
    /// The planner's estimate, free text (e.g. `"15 min"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_duration: Option<String>,
    /// Tasks sharing a group run in parallel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_group: Option<u64>,
    /// `agent` or `transformer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<TaskType>,
    /// The QC agent's role, stored as `qcRoleDescription` (missing: `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qc_role: Option<String>,
    /// What QC checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_criteria: Option<String>,
    /// Retries the orchestrator allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u64>,
    /// The planner's tool-call estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_tool_calls: Option<u64>,
    /// Lambda (transformer) id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda_id: Option<String>,
    /// Lambda source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda_script: Option<String>,
    /// Lambda language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda_language: Option<String>,
    /// Lambda name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda_name: Option<String>,
}

impl TaskDefinition {
    /// A definition with only an id; every other field takes its default.
    pub fn new(id: TaskId) -> Self {
        Self {
            id,
            title: None,
            agent_role_description: None,
            recommended_model: None,
            prompt: None,
            dependencies: Vec::new(),
            estimated_duration: None,
            parallel_group: None,
            task_type: None,
            qc_role: None,
            verification_criteria: None,
            max_retries: None,
            estimated_tool_calls: None,
            lambda_id: None,
            lambda_script: None,
            lambda_language: None,
            lambda_name: None,
        }
    }

    /// Sets the title.
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Sets the worker agent's role.
    pub fn with_agent_role(mut self, role: impl Into<String>) -> Self {
        self.agent_role_description = Some(role.into());
        self
    }

    /// Sets the QC agent's role.
    pub fn with_qc_role(mut self, role: impl Into<String>) -> Self {
        self.qc_role = Some(role.into());
        self
    }

    /// Sets the parallel group.
    pub fn with_parallel_group(mut self, group: u64) -> Self {
        self.parallel_group = Some(group);
        self
    }
}

/// What one task attempt produced (the seed's `ExecutionResult`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct TaskResult {
    /// The task this result belongs to; must equal the definition's `id`.
    pub task_id: TaskId,
    /// `success` or `failure`.
    pub status: TaskStatus,
    /// The task's output, stored whole (missing or `null`: `""`).
    #[serde(default, deserialize_with = "string_or_empty")]
    pub output: String,
    /// The error message of a failure (an empty message is stored as `null`, as in the seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Wall time of the attempt in milliseconds. At most [`MAX_COUNT`].
    #[serde(default, deserialize_with = "count_or_zero")]
    pub duration: u64,
    /// Path of the preamble the agent ran with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preamble_path: Option<String>,
    /// The role the agent actually ran with (not stored: the seed stores the definition's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_role_description: Option<String>,
    /// The prompt actually sent, stored as `prompt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Tokens used (missing: zero).
    #[serde(default, deserialize_with = "tokens_or_zero")]
    pub tokens: TokenUsage,
    /// Tool calls made (missing: zero). At most [`MAX_COUNT`].
    #[serde(default, deserialize_with = "count_or_zero")]
    pub tool_calls: u64,
    /// The orchestrator's own graph node for the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_node_id: Option<String>,
    /// The final QC verdict; its fields become the `qc*` properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qc_verification: Option<QcVerification>,
    /// Every QC verdict of the task's attempts (kept, not stored by the seed).
    #[serde(default, deserialize_with = "vec_or_empty")]
    pub qc_verification_history: Vec<QcVerification>,
    /// QC's failure report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qc_failure_report: Option<String>,
    /// Which attempt this is; missing or 0 is stored as 1, as in the seed.
    #[serde(
        default,
        deserialize_with = "opt_count",
        skip_serializing_if = "Option::is_none"
    )]
    pub attempt_number: Option<u64>,
    /// The circuit breaker's analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker_analysis: Option<String>,
    /// A preview of the preamble.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preamble_preview: Option<String>,
    /// A preview of the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_preview: Option<String>,
}

impl TaskResult {
    /// A result with only a task id and a status; every other field takes its default.
    pub fn new(task_id: TaskId, status: TaskStatus) -> Self {
        Self {
            task_id,
            status,
            output: String::new(),
            error: None,
            duration: 0,
            preamble_path: None,
            agent_role_description: None,
            prompt: None,
            tokens: TokenUsage::default(),
            tool_calls: 0,
            graph_node_id: None,
            qc_verification: None,
            qc_verification_history: Vec::new(),
            qc_failure_report: None,
            attempt_number: None,
            circuit_breaker_analysis: None,
            preamble_preview: None,
            output_preview: None,
        }
    }

    /// A successful result.
    pub fn success(task_id: TaskId) -> Self {
        Self::new(task_id, TaskStatus::Success)
    }

    /// A failed result with its error message.
    pub fn failure(task_id: TaskId, error: impl Into<String>) -> Self {
        let mut result = Self::new(task_id, TaskStatus::Failure);
        result.error = Some(error.into());
        result
    }

    /// Sets the output.
    pub fn with_output(mut self, output: impl Into<String>) -> Self {
        self.output = output.into();
        self
    }

    /// Sets the token usage.
    pub fn with_tokens(mut self, input: u64, output: u64) -> Self {
        self.tokens = TokenUsage::new(input, output);
        self
    }

    /// Sets the tool-call count.
    pub fn with_tool_calls(mut self, tool_calls: u64) -> Self {
        self.tool_calls = tool_calls;
        self
    }

    /// Sets the duration in milliseconds.
    pub fn with_duration_ms(mut self, duration: u64) -> Self {
        self.duration = duration;
        self
    }

    /// Sets the QC verdict.
    pub fn with_qc(mut self, qc: QcVerification) -> Self {
        self.qc_verification = Some(qc);
        self
    }

    /// Sets the attempt number.
    pub fn with_attempt(mut self, attempt: u64) -> Self {
        self.attempt_number = Some(attempt);
        self
    }

    /// Sets the prompt actually sent.
    pub fn with_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = Some(prompt.into());
        self
    }
}

/// Checks that a count fits a Bolt integer.
///
/// # Errors
///
/// [`ModelError::CountOutOfRange`] naming `field` if `value` is above [`MAX_COUNT`].
pub fn check_count(field: &'static str, value: u64) -> Result<i64, ModelError> {
    i64::try_from(value).map_err(|_| ModelError::CountOutOfRange { field, value })
}

// --- lenient readers: the seed's `x || default` applied to JSON `null` as well as to a missing
// field, and the Bolt range checked where the number is read.

fn count_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(opt_count(d)?.unwrap_or(0))
}

fn opt_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<u64>::deserialize(d)? {
        Some(v) if v > MAX_COUNT => Err(serde::de::Error::custom(format_args!(
            "count {v} is above the largest Bolt integer ({MAX_COUNT})"
        ))),
        other => Ok(other),
    }
}

fn int_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(Option::<i64>::deserialize(d)?.unwrap_or(0))
}

fn bool_or_false<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

fn string_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn tokens_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<TokenUsage, D::Error> {
    Ok(Option::<TokenUsage>::deserialize(d)?.unwrap_or_default())
}

fn vec_or_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// Input that does not fit runtally's data model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// An id is empty, only whitespace, or holds a control character.
    #[error("{kind} id {problem}")]
    InvalidId {
        /// Which id: `execution`, `task` or `plan`.
        kind: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A count does not fit a Bolt integer (signed 64-bit).
    #[error("{field} = {value} is above the largest Bolt integer ({max})", max = i64::MAX)]
    CountOutOfRange {
        /// The field, by its JSON name.
        field: &'static str,
        /// The value given (saturated at `u64::MAX` for sums).
        value: u64,
    },
    /// A status string is not one runtally knows.
    #[error("unknown run status {0:?}")]
    UnknownStatus(String),
    /// A task result was sent with a definition of another task.
    #[error("task definition {definition:?} does not match result {result:?}", definition = definition.as_str(), result = result.as_str())]
    TaskIdMismatch {
        /// The definition's `id`.
        definition: TaskId,
        /// The result's `taskId`.
        result: TaskId,
    },
    /// A run's end time is before its start time.
    #[error("end time {end} is before the run's start time {start}")]
    EndBeforeStart {
        /// The run's start.
        start: chrono::DateTime<chrono::Utc>,
        /// The end given.
        end: chrono::DateTime<chrono::Utc>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> TaskId {
        TaskId::new(id).expect("valid id")
    }

    #[test]
    fn ids_reject_empty_blank_and_control_characters() {
        for bad in ["", "   ", "\t\n", "exec\u{0}1", "a\nb"] {
            let err = ExecutionId::new(bad).expect_err(bad);
            assert!(
                matches!(
                    err,
                    ModelError::InvalidId {
                        kind: "execution",
                        ..
                    }
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            TaskId::new("").expect_err("empty").to_string(),
            "task id is empty"
        );
        assert_eq!(
            PlanId::new(" ").expect_err("blank").to_string(),
            "plan id is only whitespace"
        );
    }

    #[test]
    fn ids_keep_quotes_keywords_and_unicode_verbatim() {
        let raw = "exec-'\"`})MATCH (n) DETACH DELETE n//ß漢字🙂";
        assert_eq!(ExecutionId::new(raw).expect("valid").as_str(), raw);
    }

    #[test]
    fn task_execution_id_is_execution_dash_task() {
        let exec = ExecutionId::new("exec-1763134573643").expect("valid");
        assert_eq!(
            task_execution_id(&exec, &task("task-1")),
            "exec-1763134573643-task-1"
        );
    }

    #[test]
    fn ids_deserialize_through_validation() {
        let err = serde_json::from_str::<TaskId>("\"\"").expect_err("empty");
        assert!(err.to_string().contains("task id is empty"), "{err}");
        let ok: TaskId = serde_json::from_str("\"task-2\"").expect("valid");
        assert_eq!(ok.as_str(), "task-2");
    }

    /// Example 1 of `persistTaskExecutionToNeo4j` in the seed's doc comments.
    #[test]
    fn seed_example_successful_task_with_qc_deserializes() {
        let json = r#"{
            "taskId": "task-1",
            "status": "success",
            "output": "✅ Environment validated successfully",
            "duration": 5000,
            "tokens": { "input": 1000, "output": 500 },
            "toolCalls": 3,
            "qcVerification": { "passed": true, "score": 95, "feedback": "All checks passed" }
        }"#;
        let r: TaskResult = serde_json::from_str(json).expect("seed example 1");
        assert_eq!(r.task_id, task("task-1"));
        assert_eq!(r.status, TaskStatus::Success);
        assert_eq!(r.output, "✅ Environment validated successfully");
        assert_eq!(r.duration, 5000);
        assert_eq!(r.tokens, TokenUsage::new(1000, 500));
        assert_eq!(r.tool_calls, 3);
        let qc = r.qc_verification.expect("qc");
        assert!(qc.passed);
        assert_eq!(qc.score, 95);
        assert_eq!(qc.feedback.as_deref(), Some("All checks passed"));
        assert_eq!(qc.issues, None);
        assert_eq!(r.attempt_number, None);
    }

    /// Example 2: a failed task with QC issues and required fixes.
    #[test]
    fn seed_example_failed_task_deserializes() {
        let json = r#"{
            "taskId": "task-2",
            "status": "failure",
            "error": "Timeout waiting for API response",
            "duration": 30000,
            "tokens": { "input": 800, "output": 100 },
            "qcVerification": {
                "passed": false,
                "score": 45,
                "issues": ["Incomplete data", "Missing validation"],
                "requiredFixes": ["Retry with timeout handling", "Add error recovery"]
            }
        }"#;
        let r: TaskResult = serde_json::from_str(json).expect("seed example 2");
        assert_eq!(r.status, TaskStatus::Failure);
        assert_eq!(r.error.as_deref(), Some("Timeout waiting for API response"));
        assert_eq!(r.output, "");
        assert_eq!(r.tool_calls, 0);
        let qc = r.qc_verification.expect("qc");
        assert!(!qc.passed);
        assert_eq!(
            qc.issues.expect("issues"),
            vec!["Incomplete data", "Missing validation"]
        );
        assert_eq!(
            qc.required_fixes.expect("fixes"),
            vec!["Retry with timeout handling", "Add error recovery"]
        );
    }

    /// Example 3: a retried task carries its attempt number.
    #[test]
    fn seed_example_retry_attempt_deserializes() {
        let json = r#"{
            "taskId": "task-3",
            "status": "success",
            "output": "Completed on second attempt",
            "duration": 8000,
            "attemptNumber": 2,
            "tokens": { "input": 1200, "output": 600 },
            "toolCalls": 5
        }"#;
        let r: TaskResult = serde_json::from_str(json).expect("seed example 3");
        assert_eq!(r.attempt_number, Some(2));
        assert_eq!(r.tokens, TokenUsage::new(1200, 600));
        assert_eq!(r.tool_calls, 5);
    }

    #[test]
    fn progress_examples_without_output_deserialize_with_defaults() {
        // updateExecutionNodeProgress example: no output, no qc, no attempt.
        let json = r#"{"taskId":"task-1","status":"success","duration":5000,
                       "tokens":{"input":1000,"output":500},"toolCalls":3}"#;
        let r: TaskResult = serde_json::from_str(json).expect("progress example");
        assert_eq!(r.output, "");
        assert!(r.qc_verification.is_none());
        assert!(r.qc_verification_history.is_empty());
    }

    #[test]
    fn full_result_with_every_seed_field_deserializes_and_round_trips() {
        let json = r#"{
            "taskId": "task-9", "status": "failure", "output": "out", "error": "boom",
            "duration": 12, "preamblePath": "preambles/w.md", "agentRoleDescription": "worker",
            "prompt": "do it", "tokens": {"input": 1, "output": 2}, "toolCalls": 4,
            "graphNodeId": "node-9",
            "qcVerification": {"passed": false, "score": 10, "feedback": "no", "issues": [],
                               "requiredFixes": ["a"], "timestamp": "2026-01-01T00:00:00Z"},
            "qcVerificationHistory": [{"passed": false, "score": 5}],
            "qcFailureReport": "report", "attemptNumber": 3,
            "circuitBreakerAnalysis": "tripped", "preamblePreview": "pre", "outputPreview": "o",
            "somethingNew": {"ignored": true}
        }"#;
        let r: TaskResult = serde_json::from_str(json).expect("full result");
        assert_eq!(r.graph_node_id.as_deref(), Some("node-9"));
        assert_eq!(r.qc_verification_history.len(), 1);
        assert_eq!(r.circuit_breaker_analysis.as_deref(), Some("tripped"));
        let again: TaskResult =
            serde_json::from_str(&serde_json::to_string(&r).expect("serialize")).expect("again");
        assert_eq!(again, r);
    }

    #[test]
    fn task_definition_with_every_seed_field_deserializes() {
        let json = r#"{
            "id": "task-1.1", "title": "Validate", "agentRoleDescription": "worker",
            "recommendedModel": "gpt-4o", "prompt": "p", "dependencies": ["task-0"],
            "estimatedDuration": "15 min", "parallelGroup": 2, "taskType": "transformer",
            "qcRole": "qc", "verificationCriteria": "v", "maxRetries": 2,
            "estimatedToolCalls": 7, "lambdaId": "l1", "lambdaScript": "x => x",
            "lambdaLanguage": "js", "lambdaName": "identity", "extra": 1
        }"#;
        let d: TaskDefinition = serde_json::from_str(json).expect("definition");
        assert_eq!(d.id, task("task-1.1"));
        assert_eq!(d.parallel_group, Some(2));
        assert_eq!(d.task_type, Some(TaskType::Transformer));
        assert_eq!(d.lambda_name.as_deref(), Some("identity"));
        let minimal: TaskDefinition = serde_json::from_str(r#"{"id":"t"}"#).expect("minimal");
        assert_eq!(minimal, TaskDefinition::new(task("t")));
    }

    #[test]
    fn nulls_take_the_seed_defaults() {
        let json = r#"{"taskId":"t","status":"success","output":null,"tokens":null,
                       "toolCalls":null,"duration":null,"qcVerificationHistory":null,
                       "qcVerification":{"passed":null,"score":null}}"#;
        let r: TaskResult = serde_json::from_str(json).expect("nulls");
        assert_eq!(r.output, "");
        assert_eq!(r.tokens, TokenUsage::default());
        assert_eq!(r.tool_calls, 0);
        let qc = r.qc_verification.expect("qc");
        assert!(!qc.passed);
        assert_eq!(qc.score, 0);
    }

    #[test]
    fn counts_above_bolt_range_are_rejected_when_read() {
        let too_big = u64::MAX;
        for json in [
            format!(r#"{{"taskId":"t","status":"success","toolCalls":{too_big}}}"#),
            format!(
                r#"{{"taskId":"t","status":"success","tokens":{{"input":{},"output":0}}}}"#,
                MAX_COUNT + 1
            ),
            format!(
                r#"{{"taskId":"t","status":"success","duration":{}}}"#,
                MAX_COUNT + 1
            ),
        ] {
            let err = serde_json::from_str::<TaskResult>(&json).expect_err(&json);
            assert!(
                err.to_string().contains("above the largest Bolt integer"),
                "{err}"
            );
        }
        let ok = format!(r#"{{"taskId":"t","status":"success","toolCalls":{MAX_COUNT}}}"#);
        assert_eq!(
            serde_json::from_str::<TaskResult>(&ok)
                .expect("max")
                .tool_calls,
            MAX_COUNT
        );
    }

    #[test]
    fn bad_json_gives_errors_not_panics() {
        for json in [
            r#"{"taskId":"t","status":"maybe"}"#,
            r#"{"taskId":"t"}"#,
            r#"{"status":"success"}"#,
            r#"{"taskId":"t","status":"success","toolCalls":-1}"#,
            r#"{"taskId":"t","status":"success","toolCalls":1.5}"#,
            r#"{"taskId":"t","status":"success","qcVerification":{"score":87.5}}"#,
            r#"{"taskId":"t","status":"success""#,
            "[]",
        ] {
            assert!(serde_json::from_str::<TaskResult>(json).is_err(), "{json}");
        }
    }

    #[test]
    fn check_count_rejects_values_above_i64_max() {
        assert_eq!(check_count("toolCalls", 7).expect("small"), 7);
        let err = check_count("toolCalls", MAX_COUNT + 1).expect_err("too big");
        assert_eq!(
            err.to_string(),
            "toolCalls = 9223372036854775808 is above the largest Bolt integer (9223372036854775807)"
        );
    }

    #[test]
    fn statuses_use_the_seed_strings() {
        assert_eq!(
            serde_json::to_string(&TaskStatus::Failure).expect("ser"),
            "\"failure\""
        );
        assert_eq!(RunStatus::Cancelled.to_string(), "cancelled");
        assert_eq!(
            "failed".parse::<RunStatus>().expect("parse"),
            RunStatus::Failed
        );
        assert!("done".parse::<RunStatus>().is_err());
    }
}
