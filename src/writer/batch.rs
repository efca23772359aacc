//! Pending writes: pure state, no actor, property-tested against a simple model.
//!
//! Rows arrive into an *open* set where they coalesce: task rows keyed by task-execution id
//! (the latest result wins), execution rows keyed by run (the latest absolute values win), so a
//! run with 1,000 tasks between two flushes costs one execution update. A flush *seals* the open
//! set into chunks, queued in order; the writer writes one chunk at a time, each in one
//! transaction. A chunk closes at `max_batch_rows` task rows or `max_batch_bytes` of rows,
//! whichever comes first; a row larger than the byte limit goes alone.
//!
//! **A run's state never precedes its tasks.** A seal groups each run's task rows together and
//! puts the run's execution row in the chunk holding its last task row, so the counters and the
//! end of a run become visible in the transaction that writes the last tasks they count, never
//! before. When a run's tasks span several chunks, the first of them carries a *placeholder*
//! (it only creates a missing node) so those tasks find their execution.
//!
//! An urgent state (a run that just failed or recovered) must not wait behind queued chunks:
//! [`urgent_copy`] hands out, for each urgent run, a status-only mark of its newest state while
//! some of its task rows are still outstanding (a whole copy once none is). A final state is
//! copied only once every task row of its run is settled; otherwise it waits for its turn in
//! the queue. The originals stay where they are and are written in order later; execution rows
//! carry a version and stores keep the newest, so a copy and the original may commit in either
//! order.
//!
//! [`urgent_copy`]: PendingWrites::urgent_copy

use std::collections::{HashMap, HashSet, VecDeque};

use std::hash::{Hash, Hasher};

use indexmap::{Equivalent, IndexMap, IndexSet};

use crate::model::ExecutionId;
use crate::rows::{ExecutionRow, ExecutionWrite, Heartbeat, TaskRow, WriteBatch};

/// When a chunk closes: at whichever bound its task rows reach first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkLimits {
    /// Task rows per chunk (at least one).
    pub(crate) rows: usize,
    /// Bytes of rows per chunk, by [`TaskRow::weight`] and [`ExecutionRow::weight`]; one task
    /// row heavier than this goes alone.
    pub(crate) bytes: usize,
}

impl ChunkLimits {
    /// No bound at all (a spill takes everything as one batch).
    pub(crate) const UNBOUNDED: ChunkLimits = ChunkLimits {
        rows: usize::MAX,
        bytes: usize::MAX,
    };

    /// Whether open rows of this size make a full chunk.
    pub(crate) fn reached(&self, rows: usize, bytes: usize) -> bool {
        rows >= self.rows || bytes >= self.bytes
    }
}

/// A chunk ready to be written, tagged with the seal that produced it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chunk {
    pub(crate) seal: u64,
    pub(crate) batch: WriteBatch,
    /// The chunk's weight in bytes (task and execution rows).
    pub(crate) bytes: usize,
}

/// What [`PendingWrites::push`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pushed {
    /// Task rows that replaced a pending row for the same task (their slot is freed).
    pub(crate) replaced: usize,
    /// The byte charges of the rows they replaced (see [`PendingWrites::new`]).
    pub(crate) replaced_bytes: usize,
}

/// Maps on the writer's hot path hash with foldhash: keys are runtally's own ids.
type Map<K, V> = IndexMap<K, V, foldhash::fast::RandomState>;

/// A task row in the open set, hashed and compared by its node id, so the id is not stored a
/// second time as a key.
#[derive(Debug)]
struct Keyed(TaskRow);

impl Hash for Keyed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Same as hashing the `str`, so lookups by `&str` find it.
        self.0.id.as_str().hash(state);
    }
}

impl PartialEq for Keyed {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for Keyed {}

impl Equivalent<Keyed> for str {
    fn equivalent(&self, key: &Keyed) -> bool {
        self == key.0.id
    }
}

/// Everything accepted and not yet written.
#[derive(Debug)]
pub(crate) struct PendingWrites {
    open_executions: Map<ExecutionId, ExecutionRow>,
    open_tasks: IndexSet<Keyed, foldhash::fast::RandomState>,
    /// Weight of the open task rows.
    open_bytes: usize,
    /// Runs with an urgent state not yet copied out.
    urgent: HashSet<ExecutionId, foldhash::fast::RandomState>,
    queue: VecDeque<Chunk>,
    queued_task_rows: usize,
    queued_bytes: usize,
    next_seal: u64,
    /// Task rows not yet durable, per run: a finished run leaves the registry only when this
    /// reaches zero and its final execution row is durable. Also what decides whether an urgent
    /// state may be copied whole.
    outstanding: HashMap<ExecutionId, usize, foldhash::fast::RandomState>,
    heartbeat: Option<Heartbeat>,
    /// The most a single row is charged against the senders' byte budget.
    charge_cap: usize,
}

impl Default for PendingWrites {
    fn default() -> Self {
        Self::new(usize::MAX)
    }
}

impl PendingWrites {
    /// An empty set. A replaced task row frees `min(weight, charge_cap)` bytes of the senders'
    /// budget: what its sender was charged.
    pub(crate) fn new(charge_cap: usize) -> Self {
        Self {
            open_executions: Map::default(),
            open_tasks: IndexSet::default(),
            open_bytes: 0,
            urgent: HashSet::default(),
            queue: VecDeque::new(),
            queued_task_rows: 0,
            queued_bytes: 0,
            next_seal: 0,
            outstanding: HashMap::default(),
            heartbeat: None,
            charge_cap,
        }
    }

    /// What a task row of this weight is charged against the senders' byte budget.
    pub(crate) fn charge(&self, weight: usize) -> usize {
        weight.min(self.charge_cap)
    }

    /// Adds a run's latest state and new task rows. Returns how many task rows replaced pending
    /// ones.
    pub(crate) fn push(
        &mut self,
        executions: impl IntoIterator<Item = ExecutionRow>,
        tasks: Vec<TaskRow>,
        urgent: bool,
    ) -> Pushed {
        let mut pushed = Pushed::default();
        for row in executions {
            if urgent {
                self.urgent.insert(row.id.clone());
            }
            coalesce_execution(&mut self.open_executions, row);
        }
        for row in tasks {
            let run = row.execution_id.clone();
            self.open_bytes += row.weight();
            // Replaces an open row of the same task in place (its position is kept).
            if let (_, Some(Keyed(old))) = self.open_tasks.replace_full(Keyed(row)) {
                let weight = old.weight();
                self.open_bytes -= weight;
                pushed.replaced += 1;
                pushed.replaced_bytes += self.charge(weight);
            } else {
                *self.outstanding.entry(run).or_insert(0) += 1;
            }
        }
        pushed
    }

    /// Weight of the task rows in the open set.
    #[cfg(test)]
    pub(crate) fn open_bytes(&self) -> usize {
        self.open_bytes
    }

    /// Whether the open task rows fill a chunk.
    pub(crate) fn open_full(&self, limits: ChunkLimits) -> bool {
        limits.reached(self.open_tasks.len(), self.open_bytes)
    }

    /// Rows (of both kinds) not yet handed to the store.
    pub(crate) fn pending_rows(&self) -> usize {
        self.open_tasks.len()
            + self.open_executions.len()
            + self.queued_task_rows
            + self
                .queue
                .iter()
                .map(|c| c.batch.executions.len())
                .sum::<usize>()
    }

    /// Bytes of rows not yet handed to the store (open task rows and queued chunks).
    pub(crate) fn pending_bytes(&self) -> usize {
        self.open_bytes + self.queued_bytes
    }

    /// Whether the open set has anything to seal.
    pub(crate) fn has_open(&self) -> bool {
        !self.open_tasks.is_empty() || !self.open_executions.is_empty() || self.heartbeat.is_some()
    }

    /// Asks the next seal to refresh these runs' heartbeat (replacing an unsealed one).
    pub(crate) fn set_heartbeat(&mut self, heartbeat: Heartbeat) {
        self.heartbeat = Some(heartbeat);
    }

    /// Whether an urgent state arrived since the last [`urgent_copy`](Self::urgent_copy).
    #[cfg(test)]
    fn is_urgent(&self) -> bool {
        !self.urgent.is_empty()
    }

    /// Whether nothing at all is pending.
    pub(crate) fn is_empty(&self) -> bool {
        !self.has_open() && self.queue.is_empty()
    }

    /// The highest seal handed out so far (0: none yet).
    pub(crate) fn last_seal(&self) -> u64 {
        self.next_seal
    }

    /// Seals the open set into queued chunks within `limits`. Each run's task rows stay
    /// together, in the order they arrived; its execution row goes into the chunk with its last
    /// task row (runs without task rows here go first), and the first chunk of a run whose
    /// tasks span several carries a placeholder. The heartbeat rides in the first chunk.
    /// Returns the seal's id, or `None` if nothing was open.
    pub(crate) fn seal(&mut self, limits: ChunkLimits) -> Option<u64> {
        if !self.has_open() {
            return None;
        }
        self.next_seal += 1;
        let seal = self.next_seal;
        let max_rows = limits.rows.max(1);
        let max_bytes = limits.bytes.max(1);

        // Each run's tasks together, runs in the order their first task arrived. Drained, not
        // taken: the open sets keep their capacity for the next rows.
        let mut run_of: HashMap<ExecutionId, usize, foldhash::fast::RandomState> =
            HashMap::default();
        let mut groups: Vec<Vec<TaskRow>> = Vec::new();
        for Keyed(row) in self.open_tasks.drain(..) {
            let next = groups.len();
            let at = *run_of.entry(row.execution_id.clone()).or_insert(next);
            if at == next {
                groups.push(Vec::new());
            }
            groups[at].push(row);
        }
        self.open_bytes = 0;
        let mut states: Vec<Option<ExecutionRow>> = (0..groups.len()).map(|_| None).collect();
        let mut first = Chunk {
            seal,
            batch: WriteBatch::default(),
            bytes: 0,
        };
        first.batch.heartbeat = self.heartbeat.take();
        let mut chunks = vec![first];
        for (id, row) in self.open_executions.drain(..) {
            match run_of.get(&id) {
                Some(&i) => states[i] = Some(row),
                // A run without task rows in this seal: at the front, within the byte bound.
                None => {
                    let weight = row.weight();
                    let current = chunks.len() - 1;
                    if !chunks[current].batch.executions.is_empty()
                        && chunks[current].bytes + weight > max_bytes
                    {
                        chunks.push(Chunk {
                            seal,
                            batch: WriteBatch::default(),
                            bytes: 0,
                        });
                    }
                    let at = chunks.len() - 1;
                    chunks[at].bytes += weight;
                    chunks[at].batch.executions.push(row);
                }
            }
        }
        for (tasks, execution) in groups.into_iter().zip(states) {
            let execution_weight = execution.as_ref().map_or(0, ExecutionRow::weight);
            // The chunks holding the run's first and (so far) last task rows.
            let mut first_at = None;
            let mut last_at = None;
            for row in tasks {
                let weight = row.weight();
                let current = chunks.len() - 1;
                // Each chunk with a run's task rows also carries a row of its execution (a
                // placeholder or its state): reserve its weight where the run enters a chunk.
                let enters = last_at != Some(current);
                let cost = weight + if enters { execution_weight } else { 0 };
                let chunk = &chunks[current];
                if !chunk.batch.tasks.is_empty()
                    && (chunk.batch.tasks.len() >= max_rows || chunk.bytes + cost > max_bytes)
                {
                    chunks.push(Chunk {
                        seal,
                        batch: WriteBatch::default(),
                        bytes: 0,
                    });
                }
                let at = chunks.len() - 1;
                let chunk = &mut chunks[at];
                if last_at != Some(at) {
                    chunk.bytes += execution_weight;
                }
                chunk.bytes += weight;
                chunk.batch.tasks.push(row);
                first_at.get_or_insert(at);
                last_at = Some(at);
            }
            if let (Some(execution), Some(first_at), Some(last_at)) = (execution, first_at, last_at)
            {
                if first_at != last_at {
                    chunks[first_at]
                        .batch
                        .executions
                        .push(execution.placeholder());
                }
                chunks[last_at].batch.executions.push(execution);
            }
        }
        for mut chunk in chunks {
            if chunk.batch.is_empty() {
                continue;
            }
            // Packing reserved an execution row's weight in every chunk a run entered; a chunk
            // in the middle of a long run has none, so count what is really there.
            chunk.bytes = chunk.batch.weight();
            self.queued_task_rows += chunk.batch.tasks.len();
            self.queued_bytes += chunk.bytes;
            self.queue.push_back(chunk);
        }
        // After a backlog (a database outage), give the memory back.
        if self.open_tasks.capacity() > max_rows.saturating_mul(4) {
            self.open_tasks.shrink_to(max_rows.min(4096));
        }
        Some(seal)
    }

    /// For each run with an urgent state since the last call, the write to send ahead of the
    /// queue: a whole copy of its newest pending state when none of its task rows is
    /// outstanding, else a status-only mark, and nothing for a final state whose tasks are not
    /// all settled (it must not be visible before them; it follows them in the queue). `None`
    /// if there is nothing to send.
    pub(crate) fn urgent_copy(&mut self) -> Option<WriteBatch> {
        let runs = std::mem::take(&mut self.urgent);
        let rows: Vec<ExecutionRow> = runs
            .iter()
            .filter_map(|id| {
                let open = self.open_executions.get(id).filter(|e| e.write.is_state());
                let newest = open.or_else(|| {
                    self.queue.iter().rev().find_map(|c| {
                        c.batch
                            .executions
                            .iter()
                            .find(|e| &e.id == id && e.write.is_state())
                    })
                })?;
                if !self.has_outstanding(id) {
                    let mut copy = newest.clone();
                    copy.link_plan = false;
                    Some(copy)
                } else if newest.end_time.is_some() {
                    None
                } else {
                    Some(newest.status_mark())
                }
            })
            .collect();
        (!rows.is_empty()).then(|| WriteBatch::new(rows, Vec::new()))
    }

    /// The next chunk to write, if any.
    pub(crate) fn next_chunk(&mut self) -> Option<Chunk> {
        let chunk = self.queue.pop_front()?;
        self.queued_task_rows -= chunk.batch.tasks.len();
        self.queued_bytes -= chunk.bytes;
        Some(chunk)
    }

    /// The chunk [`next_chunk`](Self::next_chunk) would take.
    pub(crate) fn front_chunk(&self) -> Option<&Chunk> {
        self.queue.front()
    }

    /// The smallest seal still queued (chunks queue in seal order).
    pub(crate) fn oldest_queued_seal(&self) -> Option<u64> {
        self.queue.front().map(|c| c.seal)
    }

    /// Records that these task rows are settled (written or rejected). Returns the runs that
    /// have no task rows outstanding any more.
    pub(crate) fn settle<'a>(
        &mut self,
        tasks: impl IntoIterator<Item = &'a TaskRow>,
    ) -> Vec<ExecutionId> {
        let mut drained = Vec::new();
        for row in tasks {
            if let Some(n) = self.outstanding.get_mut(&row.execution_id) {
                *n -= 1;
                if *n == 0 {
                    self.outstanding.remove(&row.execution_id);
                    drained.push(row.execution_id.clone());
                }
            }
        }
        drained
    }

    /// Whether any task row of this run is not yet settled.
    pub(crate) fn has_outstanding(&self, id: &ExecutionId) -> bool {
        self.outstanding.contains_key(id)
    }

    /// Takes every row not yet handed to the store (for a spill at shutdown), chunk order kept.
    /// A pending heartbeat is dropped: it means nothing once the process is gone.
    pub(crate) fn drain_all(&mut self) -> Vec<WriteBatch> {
        self.heartbeat = None;
        self.seal(ChunkLimits::UNBOUNDED);
        let out = self.queue.drain(..).map(|c| c.batch).collect();
        self.queued_task_rows = 0;
        self.queued_bytes = 0;
        out
    }
}

/// One batch holding these, in order: chunks of different lanes written as one transaction.
/// Each run's rows stay together and in order (a run belongs to one lane); the heartbeats
/// become one for all their runs, at the latest of their times.
pub(crate) fn combine(batches: impl IntoIterator<Item = WriteBatch>) -> WriteBatch {
    let mut out = WriteBatch::default();
    for batch in batches {
        if out.is_empty() {
            out = batch;
            continue;
        }
        out.executions.extend(batch.executions);
        out.tasks.extend(batch.tasks);
        out.heartbeat = match (out.heartbeat.take(), batch.heartbeat) {
            (Some(mut a), Some(b)) => {
                a.at = a.at.max(b.at);
                a.runs.extend(b.runs);
                Some(a)
            }
            (a, b) => a.or(b),
        };
    }
    out
}

/// Splits a batch the database refused into two smaller ones, by weight: the left half holds
/// the first task rows up to half the batch's bytes (at least one), the right half the rest.
/// A run's state goes with its last task row, and a run with task rows on both sides gets a
/// placeholder on the left, so neither half shows counters ahead of its tasks. A batch of
/// execution rows only is split by count. One execution state with one task row becomes the
/// task with a placeholder, then the state. Gives the batch back when it is a single row.
pub(crate) fn split(mut batch: WriteBatch) -> Result<(WriteBatch, WriteBatch), WriteBatch> {
    if batch.tasks.len() >= 2 {
        let total: usize = batch.tasks.iter().map(TaskRow::weight).sum();
        let mut at = 0;
        let mut left_bytes = 0;
        while at < batch.tasks.len() - 1 {
            let w = batch.tasks[at].weight();
            if at > 0 && left_bytes + w > total / 2 {
                break;
            }
            left_bytes += w;
            at += 1;
        }
        let right_tasks = batch.tasks.split_off(at.max(1));
        let mut left_executions = Vec::new();
        let mut right_executions = Vec::new();
        for e in batch.executions {
            let on_right = right_tasks.iter().any(|t| t.execution_id == e.id);
            let on_left = batch.tasks.iter().any(|t| t.execution_id == e.id);
            if on_right {
                if on_left {
                    left_executions.push(e.placeholder());
                }
                right_executions.push(e);
            } else {
                left_executions.push(e);
            }
        }
        let mut left = WriteBatch::new(left_executions, batch.tasks);
        left.heartbeat = batch.heartbeat;
        let right = WriteBatch::new(right_executions, right_tasks);
        return Ok((left, right));
    }
    if batch.executions.len() >= 2 {
        let right_executions = batch.executions.split_off(batch.executions.len() / 2);
        let (right_tasks, left_tasks) = batch
            .tasks
            .into_iter()
            .partition(|t| right_executions.iter().any(|e| e.id == t.execution_id));
        let mut left = WriteBatch::new(batch.executions, left_tasks);
        left.heartbeat = batch.heartbeat;
        let right = WriteBatch::new(right_executions, right_tasks);
        return Ok((left, right));
    }
    // One execution and one task. A state: the task with a placeholder first, so that a refused
    // task does not take its (perfectly good) run down with it, then the state. A placeholder:
    // alone first, then the task alone, which fails with its own error (or as orphaned if the
    // placeholder was the refused row).
    if batch.executions.len() == 1 && batch.tasks.len() == 1 {
        let execution = batch.executions.remove(0);
        if execution.write.is_state() {
            let mut left = WriteBatch::new(vec![execution.placeholder()], batch.tasks);
            left.heartbeat = batch.heartbeat;
            let right = WriteBatch::new(vec![execution], Vec::new());
            return Ok((left, right));
        }
        let mut left = WriteBatch::new(vec![execution], Vec::new());
        left.heartbeat = batch.heartbeat;
        let right = WriteBatch::new(Vec::new(), batch.tasks);
        return Ok((left, right));
    }
    Err(batch)
}

/// Rows given up at shutdown, merged as the writer would have: each run's newest state and each
/// task's latest row, once. (A run can be in several of them: in a chunk that was in flight, in
/// rows that arrived meanwhile, and in both halves of a split.)
pub(crate) fn coalesce(batches: Vec<WriteBatch>) -> Vec<WriteBatch> {
    if batches.len() < 2 {
        return batches;
    }
    let mut pending = PendingWrites::default();
    for batch in batches {
        pending.push(batch.executions, batch.tasks, false);
    }
    pending.drain_all()
}

/// Keeps the newer of two states of a run (by version; the later one when equal), and the plan
/// link if either asks for it (it is only asked for on first and final writes). A placeholder or
/// a status mark never replaces a state; a state replaces either.
fn coalesce_execution(rows: &mut Map<ExecutionId, ExecutionRow>, row: ExecutionRow) {
    match rows.get_mut(&row.id) {
        Some(slot) => {
            let link_plan = slot.link_plan || row.link_plan;
            let replaces = match (slot.write, row.write) {
                (ExecutionWrite::State, ExecutionWrite::State) => row.version >= slot.version,
                (ExecutionWrite::State, _) => false,
                (_, ExecutionWrite::State) => true,
                _ => row.version >= slot.version,
            };
            if replaces {
                *slot = row;
            }
            slot.link_plan = link_plan;
        }
        None => {
            rows.insert(row.id.clone(), row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PlanId, TaskDefinition, TaskId, TaskResult};
    use chrono::Utc;
    use proptest::prelude::*;

    fn exec(run: u8, version: i64) -> ExecutionRow {
        let mut row = ExecutionRow::started(
            ExecutionId::new(format!("run-{run}")).expect("id"),
            PlanId::new("p").expect("id"),
            10,
            Utc::now(),
            Utc::now(),
        )
        .expect("row");
        row.tool_calls = version;
        row.version = version as u64;
        row.link_plan = false;
        row
    }

    fn task(run: u8, task: u8, version: i64) -> TaskRow {
        let t = TaskId::new(format!("t{task}")).expect("id");
        TaskRow::new(
            &ExecutionId::new(format!("run-{run}")).expect("id"),
            &PlanId::new("p").expect("id"),
            TaskDefinition::new(t.clone()),
            TaskResult::success(t).with_tool_calls(version as u64),
            Utc::now(),
        )
        .expect("row")
    }

    fn rows(n: usize) -> ChunkLimits {
        ChunkLimits {
            rows: n,
            bytes: usize::MAX,
        }
    }

    fn task_of(run: u8, task: u8, version: i64, output: usize) -> TaskRow {
        let mut row = self::task(run, task, version);
        row.output = "x".repeat(output);
        row
    }

    fn drain(p: &mut PendingWrites) -> Vec<Chunk> {
        std::iter::from_fn(|| p.next_chunk()).collect()
    }

    #[test]
    fn rows_given_up_at_shutdown_keep_each_run_and_task_once_newest_first() {
        // A chunk in flight, rows that arrived meanwhile, and the two halves of a split.
        let in_flight = WriteBatch::new(vec![exec(1, 1), exec(2, 1)], vec![task(1, 1, 1)]);
        let arrived = WriteBatch::new(vec![exec(1, 3)], vec![task(1, 1, 3), task(1, 2, 3)]);
        let left = WriteBatch::new(vec![exec(2, 2)], vec![task(2, 1, 2)]);
        let right = WriteBatch::new(vec![exec(2, 2)], vec![task(2, 2, 2)]);
        let merged = coalesce(vec![in_flight, arrived, left, right]);
        let executions: Vec<_> = merged.iter().flat_map(|b| &b.executions).collect();
        let mut states: Vec<_> = executions
            .iter()
            .map(|e| (e.id.as_str().to_owned(), e.tool_calls))
            .collect();
        states.sort();
        assert_eq!(states, vec![("run-1".into(), 3), ("run-2".into(), 2)]);
        let mut tasks: Vec<_> = merged
            .iter()
            .flat_map(|b| &b.tasks)
            .map(|t| (t.id.as_str().to_owned(), t.tool_calls))
            .collect();
        tasks.sort();
        assert_eq!(
            tasks,
            vec![
                ("run-1-t1".into(), 3),
                ("run-1-t2".into(), 3),
                ("run-2-t1".into(), 2),
                ("run-2-t2".into(), 2)
            ]
        );
    }

    #[test]
    fn an_older_state_pushed_late_does_not_replace_a_newer_one() {
        let mut p = PendingWrites::default();
        p.push([exec(1, 5)], vec![], false);
        let mut older = exec(1, 4);
        older.link_plan = true;
        p.push([older], vec![], false);
        p.seal(rows(10));
        let chunk = p.next_chunk().expect("chunk");
        assert_eq!(chunk.batch.executions[0].tool_calls, 5);
        assert!(
            chunk.batch.executions[0].link_plan,
            "the link request is kept"
        );
    }

    #[test]
    fn a_thousand_tasks_of_one_run_cost_one_execution_row() {
        let mut p = PendingWrites::default();
        for i in 0..1000 {
            p.push([exec(1, i)], vec![task(1, (i % 250) as u8, i)], false);
        }
        p.seal(rows(10_000));
        let chunks = drain(&mut p);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].batch.executions.len(), 1);
        assert_eq!(chunks[0].batch.executions[0].tool_calls, 999);
        assert_eq!(chunks[0].batch.tasks.len(), 250, "latest row per task");
    }

    #[test]
    fn a_seal_keeps_each_runs_tasks_together_with_its_state_in_the_chunk_of_its_last_task() {
        let mut p = PendingWrites::default();
        // Runs 0 and 1 interleaved, 4 tasks each; run 2 has a state and no task.
        for i in 0..8u8 {
            p.push([exec(i % 2, i64::from(i))], vec![task(i % 2, i, 0)], false);
        }
        p.push([exec(2, 9)], vec![], false);
        assert_eq!(p.seal(rows(3)), Some(1));
        let chunks = drain(&mut p);
        type Shape = (Vec<String>, Vec<(String, ExecutionWrite)>);
        let shape: Vec<Shape> = chunks
            .iter()
            .map(|c| {
                (
                    c.batch.tasks.iter().map(|t| t.id.clone()).collect(),
                    c.batch
                        .executions
                        .iter()
                        .map(|e| (e.id.to_string(), e.write))
                        .collect(),
                )
            })
            .collect();
        use ExecutionWrite::{Placeholder, State};
        assert_eq!(
            shape,
            vec![
                (
                    vec!["run-0-t0".into(), "run-0-t2".into(), "run-0-t4".into()],
                    vec![("run-2".into(), State), ("run-0".into(), Placeholder)]
                ),
                (
                    vec!["run-0-t6".into(), "run-1-t1".into(), "run-1-t3".into()],
                    vec![("run-0".into(), State), ("run-1".into(), Placeholder)]
                ),
                (
                    vec!["run-1-t5".into(), "run-1-t7".into()],
                    vec![("run-1".into(), State)]
                ),
            ]
        );
    }

    #[test]
    fn chunks_close_at_the_byte_bound_and_a_heavier_row_goes_alone() {
        let mut p = PendingWrites::default();
        let light = task_of(1, 0, 0, 100).weight();
        p.push([exec(1, 0)], vec![task_of(1, 0, 0, 100)], false);
        p.push([], vec![task_of(1, 1, 0, 100)], false);
        p.push([], vec![task_of(1, 2, 0, 10_000)], false);
        p.push([], vec![task_of(1, 3, 0, 100)], false);
        assert_eq!(
            p.open_bytes(),
            3 * light + task_of(1, 2, 0, 10_000).weight()
        );
        let limits = ChunkLimits {
            rows: 100,
            bytes: 2 * light + exec(1, 0).weight(),
        };
        assert!(p.open_full(limits));
        p.seal(limits);
        let chunks = drain(&mut p);
        let tasks: Vec<usize> = chunks.iter().map(|c| c.batch.tasks.len()).collect();
        assert_eq!(tasks, vec![2, 1, 1]);
        assert!(chunks[0].bytes <= limits.bytes);
        assert!(chunks[1].bytes > limits.bytes, "the heavy row alone");
        assert_eq!(p.pending_bytes(), 0);
    }

    #[test]
    fn an_urgent_state_with_tasks_outstanding_goes_ahead_as_a_status_mark_only() {
        let mut p = PendingWrites::default();
        p.push([exec(1, 1)], vec![task(1, 1, 1)], false);
        p.seal(rows(100));
        p.push([exec(1, 2)], vec![task(1, 2, 2)], true);
        p.push([exec(2, 3)], vec![], false);
        assert!(p.is_urgent());
        let copy = p.urgent_copy().expect("a copy");
        assert!(!p.is_urgent());
        assert!(copy.tasks.is_empty());
        assert_eq!(copy.executions.len(), 1, "only the urgent run");
        assert_eq!(copy.executions[0].version, 2, "its newest state");
        assert_eq!(copy.executions[0].write, ExecutionWrite::Status);
        // The originals are still written in order.
        let queued = p.next_chunk().expect("queued chunk");
        assert_eq!(queued.batch.executions[0].tool_calls, 1);
        p.seal(rows(100));
        let open = p.next_chunk().expect("sealed open rows");
        assert_eq!(open.batch.executions.len(), 2);
        assert!(p.urgent_copy().is_none(), "nothing urgent left");
    }

    #[test]
    fn a_final_state_goes_ahead_only_once_its_tasks_are_settled() {
        let mut p = PendingWrites::default();
        p.push([exec(1, 1)], vec![task(1, 1, 1)], false);
        p.seal(rows(100));
        let mut done = exec(1, 2);
        done.end_time = Some(Utc::now());
        p.push([done.clone()], vec![], true);
        assert!(p.urgent_copy().is_none(), "its task is still queued");
        let chunk = p.next_chunk().expect("the task's chunk");
        p.settle(&chunk.batch.tasks);
        p.push([done], vec![], true);
        let copy = p.urgent_copy().expect("whole copy now");
        assert_eq!(copy.executions[0].write, ExecutionWrite::State);
        assert!(copy.executions[0].end_time.is_some());
    }

    #[test]
    fn an_urgent_run_already_sealed_is_copied_from_the_queue() {
        let mut p = PendingWrites::default();
        p.push([exec(1, 1)], vec![], true);
        p.seal(rows(100));
        let copy = p.urgent_copy().expect("a copy");
        assert_eq!(copy.executions[0].tool_calls, 1);
    }

    #[test]
    fn plan_links_survive_coalescing() {
        let mut p = PendingWrites::default();
        let mut first = exec(1, 0);
        first.link_plan = true;
        p.push([first], vec![], false);
        p.push([exec(1, 1)], vec![], false);
        p.seal(rows(10));
        let chunk = p.next_chunk().expect("chunk");
        assert!(chunk.batch.executions[0].link_plan);
    }

    #[test]
    fn a_heartbeat_rides_in_the_first_chunk_of_the_next_seal_and_is_never_spilled() {
        let mut p = PendingWrites::default();
        let heartbeat = Heartbeat {
            at: Utc::now(),
            runs: vec![ExecutionId::new("run-1").expect("id")],
        };
        p.set_heartbeat(heartbeat.clone());
        assert!(p.has_open());
        p.seal(rows(10));
        let chunk = p.next_chunk().expect("heartbeat-only chunk");
        assert_eq!(chunk.batch.heartbeat, Some(heartbeat.clone()));
        assert_eq!(chunk.batch.len(), 0);
        p.set_heartbeat(heartbeat);
        p.push([exec(1, 0)], vec![task(1, 1, 0)], false);
        let spilled = p.drain_all();
        assert!(spilled.iter().all(|b| b.heartbeat.is_none()));
        assert_eq!(spilled.iter().map(WriteBatch::len).sum::<usize>(), 2);
    }

    #[test]
    fn outstanding_task_rows_are_tracked_per_run() {
        let mut p = PendingWrites::default();
        let run = ExecutionId::new("run-1").expect("id");
        p.push([exec(1, 0)], vec![task(1, 1, 0), task(1, 2, 0)], false);
        p.push([], vec![task(1, 1, 1)], false);
        assert!(p.has_outstanding(&run));
        p.seal(rows(10));
        let chunk = p.next_chunk().expect("chunk");
        assert_eq!(p.settle(&chunk.batch.tasks), vec![run.clone()]);
        assert!(!p.has_outstanding(&run));
    }

    #[test]
    fn splitting_isolates_single_rows_and_keeps_each_state_with_its_last_task() {
        let batch = WriteBatch::new(
            vec![exec(1, 0), exec(2, 0)],
            vec![task(1, 1, 0), task(2, 1, 0), task(2, 2, 0)],
        );
        let (left, right) = split(batch).expect("splits");
        assert_eq!(left.tasks.len(), 1);
        assert_eq!(right.tasks.len(), 2);
        assert!(right
            .tasks
            .iter()
            .all(|t| right.executions.iter().any(|e| e.id == t.execution_id)));
        // Run 2's tasks are all on the right: its state goes there, nothing of it on the left.
        assert!(left.executions.iter().all(|e| e.id.as_str() == "run-1"));
        // A run with tasks on both sides: a placeholder left, its state right.
        let both = WriteBatch::new(vec![exec(1, 0)], vec![task(1, 1, 0), task(1, 2, 0)]);
        let (l, r) = split(both).expect("splits");
        assert_eq!(l.executions[0].write, ExecutionWrite::Placeholder);
        assert_eq!(r.executions[0].write, ExecutionWrite::State);
        // One state with a task: the task with a placeholder first, then the state alone.
        let pair = WriteBatch::new(vec![exec(1, 0)], vec![task(1, 1, 0)]);
        let (l, r) = split(pair).expect("splits");
        assert_eq!((l.executions.len(), l.tasks.len()), (1, 1));
        assert_eq!(l.executions[0].write, ExecutionWrite::Placeholder);
        assert_eq!((r.executions.len(), r.tasks.len()), (1, 0));
        assert_eq!(r.executions[0].write, ExecutionWrite::State);
        // ... and that first half splits into the placeholder and the task.
        let (l2, r2) = split(l).expect("splits");
        assert_eq!((l2.executions.len(), l2.tasks.len()), (1, 0));
        assert_eq!((r2.executions.len(), r2.tasks.len()), (0, 1));
        // A single row cannot be split.
        assert!(split(WriteBatch::new(vec![], vec![task(2, 1, 0)])).is_err());
        assert!(split(WriteBatch::new(vec![exec(2, 0)], vec![])).is_err());
    }

    #[test]
    fn splitting_halves_by_bytes() {
        let heavy = task_of(1, 0, 0, 10_000);
        let batch = WriteBatch::new(
            vec![exec(1, 0)],
            vec![heavy, task_of(1, 1, 0, 10), task_of(1, 2, 0, 10)],
        );
        let (l, r) = split(batch).expect("splits");
        assert_eq!(l.tasks.len(), 1, "the heavy row is half the bytes alone");
        assert_eq!(r.tasks.len(), 2);
    }

    proptest! {
        /// Splitting down to unsplittable pieces loses no row and ends at single rows.
        #[test]
        fn splitting_to_the_bottom_keeps_every_row(runs in proptest::collection::vec((0u8..5, 0u8..4), 1..40)) {
            let mut executions: IndexMap<ExecutionId, ExecutionRow> = IndexMap::new();
            let mut tasks: IndexMap<String, TaskRow> = IndexMap::new();
            for (run, t) in runs {
                let e = exec(run, 0);
                executions.insert(e.id.clone(), e);
                let row = task(run, t, 0);
                tasks.insert(row.id.clone(), row);
            }
            let batch = WriteBatch::new(executions.into_values().collect(), tasks.into_values().collect());
            let all_tasks: HashSet<String> = batch.tasks.iter().map(|t| t.id.clone()).collect();
            let all_execs: HashSet<String> = batch.executions.iter().map(|e| e.id.to_string()).collect();
            let mut stack = vec![batch];
            let mut leaves = Vec::new();
            while let Some(b) = stack.pop() {
                match split(b) {
                    Ok((l, r)) => { stack.push(r); stack.push(l); }
                    Err(leaf) => leaves.push(leaf),
                }
            }
            let leaf_tasks: HashSet<String> = leaves.iter().flat_map(|b| b.tasks.iter().map(|t| t.id.clone())).collect();
            let leaf_execs: HashSet<String> = leaves.iter().flat_map(|b| b.executions.iter().map(|e| e.id.to_string())).collect();
            prop_assert_eq!(leaf_tasks, all_tasks);
            prop_assert_eq!(leaf_execs, all_execs);
            for leaf in &leaves {
                prop_assert_eq!(leaf.len(), 1, "a leaf is a single row");
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push {
            run: u8,
            task: Option<(u8, usize)>,
            urgent: bool,
        },
        End {
            run: u8,
        },
        Seal(usize, usize),
        Urgent,
        Write,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..4, proptest::option::of((0u8..6, 0usize..3000)), any::<bool>())
                .prop_map(|(run, task, urgent)| Op::Push { run, task, urgent }),
            1 => (0u8..4).prop_map(|run| Op::End { run }),
            1 => (1usize..5, 600usize..8000).prop_map(|(r, b)| Op::Seal(r, b)),
            1 => Just(Op::Urgent),
            2 => Just(Op::Write),
        ]
    }

    /// The database as the property test sees it: per run, the version of the state applied
    /// (-1: created by a placeholder or mark only) and the node's version; per task, the
    /// version of its latest row.
    #[derive(Default)]
    struct Db {
        state: HashMap<String, i64>,
        node: HashMap<String, i64>,
        tasks: HashMap<String, i64>,
    }

    impl Db {
        fn apply(&mut self, rows: &[ExecutionRow]) {
            for e in rows {
                let id = e.id.to_string();
                let v = e.version as i64;
                let node = *self.node.entry(id.clone()).or_insert(-1);
                self.state.entry(id.clone()).or_insert(-1);
                match e.write {
                    ExecutionWrite::State if node <= v => {
                        self.node.insert(id.clone(), v);
                        self.state.insert(id, v);
                    }
                    ExecutionWrite::Status if node < v => {
                        self.node.insert(id, v);
                    }
                    _ => {}
                }
            }
        }
    }

    /// The latest task versions of `run` pushed so far: what a state pushed now counts.
    fn counted(latest_task: &HashMap<String, i64>, run: &str) -> Vec<(String, i64)> {
        let prefix = format!("{run}-");
        latest_task
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    proptest! {
        /// Writing chunks in queue order into a model database (which keeps the newest
        /// execution version), with urgent copies written the moment they are taken:
        /// - at every step, every state in the database counts only task rows already written
        ///   (a run's counters and end never precede its tasks), and no final state is ever
        ///   sent as a mark;
        /// - no chunk exceeds its bounds unless it holds a single task row;
        /// - it ends with exactly the latest value of every row pushed: nothing lost, nothing
        ///   stale, nothing duplicated, no task written before its run's node exists.
        #[test]
        fn chunks_written_in_order_never_show_a_state_before_its_tasks(ops in proptest::collection::vec(op(), 1..150)) {
            let mut p = PendingWrites::default();
            let mut version = 0i64;
            let mut latest_exec: HashMap<String, i64> = HashMap::new();
            let mut latest_task: HashMap<String, i64> = HashMap::new();
            // The task versions each pushed state counts.
            let mut counts: HashMap<(String, i64), Vec<(String, i64)>> = HashMap::new();
            let mut ended: HashSet<u8> = HashSet::new();
            let mut db = Db::default();
            let check = |db: &Db, counts: &HashMap<(String, i64), Vec<(String, i64)>>| -> Result<(), TestCaseError> {
                for (run, v) in &db.state {
                    if *v < 0 { continue; }
                    for (task, tv) in &counts[&(run.clone(), *v)] {
                        prop_assert!(
                            db.tasks.get(task).is_some_and(|w| w >= tv),
                            "state {v} of {run} counts {task}@{tv}, not yet written"
                        );
                    }
                }
                Ok(())
            };
            let write = |p: &mut PendingWrites, db: &mut Db| -> Result<(), TestCaseError> {
                if let Some(chunk) = p.next_chunk() {
                    db.apply(&chunk.batch.executions);
                    for t in &chunk.batch.tasks {
                        prop_assert!(db.node.contains_key(t.execution_id.as_str()), "orphan task {}", t.id);
                        db.tasks.insert(t.id.clone(), t.tool_calls);
                    }
                    p.settle(&chunk.batch.tasks);
                }
                Ok(())
            };
            for op in ops {
                match op {
                    Op::Push { run, task: t, urgent } => {
                        if ended.contains(&run) { continue; }
                        version += 1;
                        let id = format!("run-{run}");
                        latest_exec.insert(id.clone(), version);
                        let tasks = match t {
                            Some((t, out)) => {
                                latest_task.insert(format!("run-{run}-t{t}"), version);
                                vec![task_of(run, t, version, out)]
                            }
                            None => vec![],
                        };
                        let e = exec(run, version);
                        counts.insert((id.clone(), version), counted(&latest_task, &id));
                        p.push([e], tasks, urgent);
                    }
                    Op::End { run } => {
                        if !ended.insert(run) { continue; }
                        version += 1;
                        let id = format!("run-{run}");
                        latest_exec.insert(id.clone(), version);
                        let mut e = exec(run, version);
                        e.end_time = Some(Utc::now());
                        counts.insert((id.clone(), version), counted(&latest_task, &id));
                        p.push([e], vec![], true);
                    }
                    Op::Seal(max_rows, max_bytes) => {
                        let limits = ChunkLimits { rows: max_rows, bytes: max_bytes };
                        let before = p.queue.len();
                        p.seal(limits);
                        for chunk in p.queue.iter().skip(before) {
                            prop_assert!(chunk.batch.tasks.len() <= max_rows);
                            prop_assert!(
                                chunk.bytes <= max_bytes
                                    || chunk.batch.tasks.len() == 1
                                    || chunk.batch.len() == 1,
                                "{} bytes in {} task rows", chunk.bytes, chunk.batch.tasks.len()
                            );
                            prop_assert_eq!(chunk.bytes, chunk.batch.weight());
                        }
                    }
                    Op::Urgent => {
                        if let Some(copy) = p.urgent_copy() {
                            prop_assert!(copy.tasks.is_empty());
                            for e in &copy.executions {
                                prop_assert!(
                                    e.write != ExecutionWrite::Status || e.end_time.is_none(),
                                    "a final state sent as a mark"
                                );
                            }
                            db.apply(&copy.executions);
                        }
                    }
                    Op::Write => write(&mut p, &mut db)?,
                }
                check(&db, &counts)?;
            }
            p.seal(rows(3));
            while !p.is_empty() {
                write(&mut p, &mut db)?;
                check(&db, &counts)?;
            }
            let states: HashMap<String, i64> = db.state.clone().into_iter().filter(|(_, v)| *v >= 0).collect();
            prop_assert_eq!(states, latest_exec);
            prop_assert_eq!(db.tasks, latest_task);
            prop_assert_eq!(p.pending_rows(), 0);
            prop_assert_eq!(p.pending_bytes(), 0);
            prop_assert!(p.outstanding.is_empty());
        }
    }

    #[test]
    fn combined_chunks_keep_every_row_in_order_and_one_heartbeat_for_all_runs() {
        let at = Utc::now();
        let (a, b) = (exec(1, 2).id, exec(2, 3).id);
        let hb = |run: &ExecutionId, at| {
            Some(Heartbeat {
                at,
                runs: vec![run.clone()],
            })
        };
        let first = WriteBatch {
            heartbeat: hb(&a, at),
            ..WriteBatch::new(vec![exec(1, 2)], vec![task(1, 1, 1), task(1, 2, 2)])
        };
        let second = WriteBatch {
            heartbeat: hb(&b, at + chrono::Duration::seconds(1)),
            ..WriteBatch::new(vec![exec(2, 3)], vec![task(2, 1, 3)])
        };
        let combined = combine([WriteBatch::default(), first, second]);
        let tasks: Vec<_> = combined.tasks.iter().map(|t| t.tool_calls).collect();
        assert_eq!(tasks, [1, 2, 3]);
        let runs: Vec<_> = combined.executions.iter().map(|e| e.id.clone()).collect();
        assert_eq!(runs, vec![a.clone(), b.clone()]);
        let heartbeat = combined.heartbeat.expect("one heartbeat");
        assert_eq!(heartbeat.runs, vec![a, b]);
        assert_eq!(heartbeat.at, at + chrono::Duration::seconds(1));
    }
}
