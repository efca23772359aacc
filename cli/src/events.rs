//! The orchestration event stream: one JSON object per line, as `gen_events.py` writes it and
//! as `runtally replay` reads it.
//!
//! ```text
//! {"event":"run_started",  "executionId":…, "planId":…, "totalTasks":N, "startTime":epochMs}
//! {"event":"task_finished","executionId":…, "task":TaskDefinition, "result":ExecutionResult}
//! {"event":"run_finished", "executionId":…, "endTime":epochMs, "cancelled":bool}
//! ```
//!
//! A shutdown spill ([`runtally::spill`]) adds two kinds of its own, `execution_state` and
//! `task_state`: rows exactly as runtally meant to write them, with the graph's property names,
//! restored as they are. They parse here as [`Event::ExecutionState`] and [`Event::TaskState`],
//! so `runtally replay` reads a spill file, an event stream, or both in one file.
//!
//! Parsing one line never affects another: a bad line is a typed [`EventError`] naming what is
//! wrong, and the caller carries on with the next.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use runtally::rows::{ExecutionRow, TaskRow};
use runtally::{ExecutionId, PlanId, TaskDefinition, TaskResult};

/// One event of the stream.
// Task events dominate any stream, so boxing them would add an allocation to nearly every event
// to shrink the rare small ones.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A workflow run started.
    #[serde(rename_all = "camelCase")]
    RunStarted {
        /// The run.
        execution_id: ExecutionId,
        /// Its plan.
        plan_id: PlanId,
        /// Planned task count.
        total_tasks: u64,
        /// Start, in epoch milliseconds.
        #[serde(with = "epoch_ms")]
        start_time: DateTime<Utc>,
    },
    /// A task finished.
    #[serde(rename_all = "camelCase")]
    TaskFinished {
        /// The run.
        execution_id: ExecutionId,
        /// The task's definition.
        task: TaskDefinition,
        /// Its result.
        result: TaskResult,
    },
    /// A run's state as runtally last meant to write it (a shutdown spill). Replayed as is.
    ExecutionState(ExecutionRow),
    /// A task node's state as runtally last meant to write it (a shutdown spill). Replayed as
    /// is.
    TaskState(TaskRow),
    /// A workflow run ended.
    #[serde(rename_all = "camelCase")]
    RunFinished {
        /// The run.
        execution_id: ExecutionId,
        /// End, in epoch milliseconds.
        #[serde(with = "epoch_ms")]
        end_time: DateTime<Utc>,
        /// Cancelled rather than finished.
        #[serde(default)]
        cancelled: bool,
    },
}

impl Event {
    /// The run this event belongs to.
    pub fn execution_id(&self) -> &ExecutionId {
        match self {
            Event::RunStarted { execution_id, .. }
            | Event::TaskFinished { execution_id, .. }
            | Event::RunFinished { execution_id, .. } => execution_id,
            Event::ExecutionState(row) => &row.id,
            Event::TaskState(row) => &row.execution_id,
        }
    }
}

/// Why a line is not an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The line is empty or only whitespace.
    #[error("empty line")]
    Empty,
    /// The line is not valid JSON, or not an object, or not a known event with valid fields.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

/// Parses one line. A UTF-8 byte-order mark at its start is ignored.
///
/// # Errors
///
/// [`EventError::Empty`] for a blank line; [`EventError::Json`] for anything else that is not a
/// valid event (truncated JSON, an array, an unknown `event`, an empty id, a count above
/// `i64::MAX`, a non-integer number, …).
pub fn parse_line(line: &str) -> Result<Event, EventError> {
    parse_bytes(line.as_bytes())
}

/// Parses one line of raw bytes (invalid UTF-8 is an [`EventError::Json`]). A UTF-8
/// byte-order mark at its start, and a trailing `\r`, are ignored.
///
/// # Errors
///
/// As [`parse_line`].
pub fn parse_bytes(line: &[u8]) -> Result<Event, EventError> {
    let line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(EventError::Empty);
    }
    Ok(serde_json::from_slice(line)?)
}

/// Epoch milliseconds on the wire, `DateTime<Utc>` in Rust.
mod epoch_ms {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(t.timestamp_millis())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let ms = i64::deserialize(d)?;
        Utc.timestamp_millis_opt(ms)
            .single()
            .ok_or_else(|| serde::de::Error::custom(format_args!("{ms} is not a valid epoch time")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use runtally::rows::WriteBatch;
    use runtally::spill::write_rows;

    const STARTED: &str = r#"{"event": "run_started", "executionId": "demo-exec-0", "planId": "demo-plan-0", "totalTasks": 20, "startTime": 1795744800000}"#;
    const FINISHED: &str = r#"{"event": "run_finished", "executionId": "demo-exec-0", "endTime": 1795744880000, "cancelled": false}"#;
    const TASK: &str = r#"{"event": "task_finished", "executionId": "demo-exec-0", "task": {"id": "task-0", "title": "Task 0 of run 0", "agentRoleDescription": "worker agent", "recommendedModel": "gpt-4o", "prompt": "Do step 0.", "dependencies": [], "estimatedDuration": "1m", "parallelGroup": 0, "qcRole": "qc reviewer", "verificationCriteria": "output is complete", "maxRetries": 2}, "result": {"taskId": "task-0", "status": "success", "output": "xxxxx", "duration": 100, "preamblePath": "preambles/worker.md", "prompt": "Do step 0.", "tokens": {"input": 1000, "output": 500}, "toolCalls": 0, "qcVerification": {"passed": true, "score": 95, "feedback": "all checks passed", "issues": [], "requiredFixes": []}, "attemptNumber": 1}}"#;

    #[test]
    fn gen_events_lines_parse() {
        match parse_line(STARTED).expect("started") {
            Event::RunStarted {
                execution_id,
                total_tasks,
                start_time,
                ..
            } => {
                assert_eq!(execution_id.as_str(), "demo-exec-0");
                assert_eq!(total_tasks, 20);
                assert_eq!(start_time.timestamp_millis(), 1_795_744_800_000);
            }
            other => panic!("{other:?}"),
        }
        match parse_line(TASK).expect("task") {
            Event::TaskFinished { task, result, .. } => {
                assert_eq!(task.title.as_deref(), Some("Task 0 of run 0"));
                assert_eq!(result.tokens.input, 1000);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_line(FINISHED).expect("finished"),
            Event::RunFinished {
                cancelled: false,
                ..
            }
        ));
    }

    #[test]
    fn events_round_trip_through_json() {
        for line in [STARTED, TASK, FINISHED] {
            let event = parse_line(line).expect("parse");
            let again = parse_line(&serde_json::to_string(&event).expect("json")).expect("again");
            assert_eq!(again, event);
        }
    }

    #[test]
    fn spilled_rows_parse_back_to_the_same_rows() {
        let spec = crate::workload::WorkloadSpec::default();
        let run = spec.run(3).expect("run");
        let now = chrono::Utc::now();
        let mut exec = ExecutionRow::started(
            run.execution_id.clone(),
            run.plan_id.clone(),
            run.total_tasks,
            run.start_time,
            now,
        )
        .expect("row");
        exec.owner = Some("host/1/abc".into());
        exec.end_time = Some(run.end_time);
        let tasks: Vec<TaskRow> = run
            .tasks
            .into_iter()
            .map(|(t, r)| TaskRow::new(&run.execution_id, &run.plan_id, t, r, now).expect("row"))
            .collect();
        let batch = WriteBatch::new(vec![exec.clone()], tasks.clone());
        let mut out = Vec::new();
        assert_eq!(
            write_rows(&mut out, &batch).expect("write"),
            1 + tasks.len()
        );
        let events: Vec<Event> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse_bytes(l).expect("parses"))
            .collect();
        assert_eq!(events[0], Event::ExecutionState(exec));
        for (event, task) in events[1..].iter().zip(&tasks) {
            assert_eq!(event, &Event::TaskState(task.clone()));
        }
    }

    #[test]
    fn a_byte_order_mark_and_crlf_are_ignored() {
        assert!(parse_line(&format!("\u{feff}{STARTED}")).is_ok());
        assert!(parse_line(&format!("{STARTED}\r")).is_ok());
    }

    #[test]
    fn invalid_utf8_is_a_typed_error() {
        let mut bytes = TASK.as_bytes().to_vec();
        let at = TASK.find("xxxxx").expect("output");
        bytes[at] = 0xff;
        assert!(matches!(parse_bytes(&bytes), Err(EventError::Json(_))));
    }

    #[test]
    fn bad_lines_are_typed_errors() {
        assert!(matches!(parse_line(""), Err(EventError::Empty)));
        assert!(matches!(parse_line("   \t"), Err(EventError::Empty)));
        for bad in [
            &STARTED[..STARTED.len() / 2],
            "[1,2,3]",
            "42",
            "\"run_started\"",
            r#"{"event":"run_exploded","executionId":"x"}"#,
            r#"{"event":"run_started","executionId":"","planId":"p","totalTasks":1,"startTime":0}"#,
            r#"{"event":"run_started","executionId":"x","planId":"p","totalTasks":1.5,"startTime":0}"#,
            r#"{"event":"task_finished","executionId":"x","task":{"id":"t"},"result":{"taskId":"t","status":"success","toolCalls":9223372036854775808}}"#,
            r#"{"event":"task_finished","executionId":"x","task":{"id":"t"},"result":{"taskId":"t","status":"success","qcVerification":{"score":1.5}}}"#,
            r#"{"event":"task_finished","executionId":"x","task":{"id":"t"},"result":{"taskId":"\ud800","status":"success"}}"#,
        ] {
            assert!(matches!(parse_line(bad), Err(EventError::Json(_))), "{bad}");
        }
    }

    proptest! {
        /// Whatever the bytes, parsing returns an event or an error; it never panics.
        #[test]
        fn parsing_arbitrary_text_never_panics(line in ".{0,300}") {
            let _ = parse_line(&line);
        }

        /// Mangling a valid line (cutting it, or changing one character) gives an event or a
        /// typed error, never a panic; cutting it always gives an error.
        #[test]
        fn mangled_lines_give_typed_errors(cut in 1usize..400, pos in 0usize..400, c in any::<char>()) {
            let cut = cut.min(TASK.len() - 1);
            if TASK.is_char_boundary(cut) {
                prop_assert!(parse_line(&TASK[..cut]).is_err());
            }
            let mut chars: Vec<char> = TASK.chars().collect();
            let pos = pos % chars.len();
            chars[pos] = c;
            let mangled: String = chars.into_iter().collect();
            let _ = parse_line(&mangled);
        }
    }
}
