//! The shutdown spill file: rows [`shutdown`](crate::Aggregator::shutdown) could not write
//! before its deadline, one JSON object per line, exactly as runtally meant to write them (the
//! graph's property names, absolute values).
//!
//! ```text
//! {"event":"execution_state", "id":…, "planId":…, "status":…, …}
//! {"event":"task_state", "executionId":…, "taskId":…, …}
//! ```
//!
//! Each batch is appended executions first, so reading the file in order meets every run before
//! its tasks. [`read`] gives the rows back one [`WriteBatch`] per run, and
//! [`Aggregator::restore`](crate::Aggregator::restore) queues such a batch as it is; the
//! `runtally replay FILE` command does both. The `event` tags are the same as the CLI's event
//! stream uses, so one file may hold both.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::ExecutionId;
use crate::rows::{ExecutionRow, TaskRow, WriteBatch};

/// One line of a spill file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SpillRecord {
    /// A run's state as runtally last meant to write it.
    ExecutionState(ExecutionRow),
    /// A task node's state as runtally last meant to write it.
    TaskState(TaskRow),
}

impl SpillRecord {
    /// The run this row belongs to.
    pub fn execution_id(&self) -> &ExecutionId {
        match self {
            SpillRecord::ExecutionState(row) => &row.id,
            SpillRecord::TaskState(row) => &row.execution_id,
        }
    }
}

/// Why a line of a spill file is not a row.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {source}")]
#[non_exhaustive]
pub struct SpillError {
    /// 1-based line number.
    pub line: usize,
    /// The line is not valid JSON or not a valid row.
    #[source]
    pub source: serde_json::Error,
}

/// Appends a batch's rows (executions first). Returns the rows written.
///
/// # Errors
///
/// The writer's I/O error.
pub fn write_rows(mut out: impl Write, batch: &WriteBatch) -> std::io::Result<usize> {
    // Borrowed twin of `SpillRecord`: the same tags, without cloning the rows.
    #[derive(Serialize)]
    #[serde(tag = "event", rename_all = "snake_case")]
    enum Line<'a> {
        ExecutionState(&'a ExecutionRow),
        TaskState(&'a TaskRow),
    }
    let lines = batch
        .executions
        .iter()
        .map(Line::ExecutionState)
        .chain(batch.tasks.iter().map(Line::TaskState));
    let mut rows = 0;
    for line in lines {
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
        rows += 1;
    }
    Ok(rows)
}

/// Appends batches to the file at `path` (created if missing) and syncs it to disk. Returns the
/// rows written.
///
/// # Errors
///
/// The file system's error.
pub fn append(path: &Path, batches: &[WriteBatch]) -> std::io::Result<usize> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut out = std::io::BufWriter::new(file);
    let mut rows = 0;
    for batch in batches {
        rows += write_rows(&mut out, batch)?;
    }
    out.flush()?;
    out.get_ref().sync_all()?;
    Ok(rows)
}

/// Parses one line (a UTF-8 byte-order mark at its start and a trailing `\r` are ignored).
///
/// # Errors
///
/// The JSON error of a line that is not a valid row.
pub fn parse_record(line: &[u8]) -> Result<SpillRecord, serde_json::Error> {
    let line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    serde_json::from_slice(line)
}

/// What [`read`] found in a spill file.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct SpillContents {
    /// One batch per run, in the order of each run's first line, its rows in file order.
    pub batches: Vec<WriteBatch>,
    /// Lines that are not rows; every other line is in `batches`.
    pub errors: Vec<SpillError>,
}

/// Reads a spill file's bytes back into one batch per run. Blank lines are skipped; a bad line
/// is reported in [`SpillContents::errors`] and never stops the rest.
///
/// A run's rows are kept together because they must be restored together: restored one line
/// at a time, a run's final state could be written ahead of the task rows that follow it.
pub fn read(input: &[u8]) -> SpillContents {
    let mut contents = SpillContents::default();
    let mut index: HashMap<ExecutionId, usize> = HashMap::new();
    for (i, line) in input.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record = match parse_record(line) {
            Ok(record) => record,
            Err(source) => {
                contents.errors.push(SpillError {
                    line: i + 1,
                    source,
                });
                continue;
            }
        };
        let at = *index
            .entry(record.execution_id().clone())
            .or_insert_with(|| {
                contents.batches.push(WriteBatch::default());
                contents.batches.len() - 1
            });
        let batch = &mut contents.batches[at];
        match record {
            SpillRecord::ExecutionState(row) => batch.executions.push(row),
            SpillRecord::TaskState(row) => batch.tasks.push(row),
        }
    }
    contents
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PlanId, TaskDefinition, TaskId, TaskResult};

    fn batch(run: &str, tasks: usize) -> WriteBatch {
        let now = chrono::Utc::now();
        let id = ExecutionId::new(run).expect("id");
        let plan = PlanId::new("plan").expect("plan");
        let mut exec =
            ExecutionRow::started(id.clone(), plan.clone(), 3, now, now).expect("execution row");
        exec.owner = Some("host/1/abc".into());
        exec.end_time = Some(now);
        let tasks = (0..tasks)
            .map(|i| {
                let task = TaskId::new(format!("task-{i}")).expect("task");
                let result = TaskResult::success(task.clone()).with_tokens(10, 5);
                TaskRow::new(&id, &plan, TaskDefinition::new(task), result, now).expect("row")
            })
            .collect();
        WriteBatch::new(vec![exec], tasks)
    }

    #[test]
    fn appended_batches_read_back_one_batch_per_run() {
        let dir = std::env::temp_dir().join(format!("runtally-spill-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("spill.jsonl");
        let _ = std::fs::remove_file(&path);
        let (a, b, a_again) = (batch("run-a", 2), batch("run-b", 1), batch("run-a", 1));
        assert_eq!(
            append(&path, &[a.clone(), b.clone()]).expect("append"),
            3 + 2
        );
        assert_eq!(
            append(&path, std::slice::from_ref(&a_again)).expect("append"),
            2
        );

        let contents = read(&std::fs::read(&path).expect("read"));
        assert!(contents.errors.is_empty(), "{:?}", contents.errors);
        assert_eq!(contents.batches.len(), 2);
        let run_a = &contents.batches[0];
        assert_eq!(
            run_a.executions,
            [a.executions.clone(), a_again.executions.clone()].concat()
        );
        assert_eq!(
            run_a.tasks,
            [a.tasks.clone(), a_again.tasks.clone()].concat()
        );
        assert_eq!(contents.batches[1], b);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number_and_the_rest_read() {
        let mut input = Vec::new();
        write_rows(&mut input, &batch("run-a", 1)).expect("write");
        input.extend_from_slice(b"{\"event\":\"task_state\",\"executionId\":\n\n");
        write_rows(&mut input, &batch("run-b", 0)).expect("write");
        let contents = read(&input);
        assert_eq!(contents.errors.len(), 1);
        assert_eq!(contents.errors[0].line, 3);
        assert_eq!(contents.batches.len(), 2);
        assert_eq!(contents.batches[0].tasks.len(), 1);
    }
}
