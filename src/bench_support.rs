//! Internals exposed for runtally's own benchmarks only. Not part of the API: no stability, no
//! documentation promises. Use the public types instead.

use crate::execution::counters::{Contribution, RunCounters};
use crate::model::TaskId;
use crate::rows::{ExecutionRow, TaskRow, WriteBatch};
use crate::writer::batch::{ChunkLimits, PendingWrites};

/// The per-run counters the run actor keeps.
#[derive(Debug, Default)]
pub struct Counters(RunCounters);

impl Counters {
    /// Records a task's latest result (see `RunCounters::record`).
    pub fn record(&mut self, task: &TaskId, row: &TaskRow) -> bool {
        self.0.record(task, Contribution::of(row)).is_ok()
    }

    /// Successful tasks so far.
    pub fn successful(&self) -> i64 {
        self.0.totals().tasks_successful
    }
}

/// The writer's pending rows.
#[derive(Debug, Default)]
pub struct Pending(PendingWrites);

impl Pending {
    /// Adds a run's state and one task row; returns how many rows were replaced.
    pub fn push(&mut self, execution: ExecutionRow, task: TaskRow) -> usize {
        self.0.push([execution], vec![task], false).replaced
    }

    /// Seals everything open into chunks and takes them.
    pub fn seal_and_take(&mut self, max_task_rows: usize, max_bytes: usize) -> Vec<WriteBatch> {
        self.0.seal(ChunkLimits {
            rows: max_task_rows,
            bytes: max_bytes,
        });
        let mut out = Vec::new();
        while let Some(chunk) = self.0.next_chunk() {
            self.0.settle(&chunk.batch.tasks);
            out.push(chunk.batch);
        }
        out
    }
}
