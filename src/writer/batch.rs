//! Pending writes: pure state, no actor, property-tested against a simple model.
//!
//! Rows arrive into an *open* set where they coalesce: task rows keyed by task-execution id
//! (the latest result wins), execution rows keyed by run (the latest absolute values win), so a
//! run with 1,000 tasks between two flushes costs one execution update. A flush *seals* the open
//! set into chunks of at most `max_task_rows` task rows, queued in order; the writer writes one
//! chunk at a time. Each chunk holds the execution rows of its runs before their tasks.
//!
//! An urgent state (a run that just failed, recovered or finished) must not wait behind queued
//! chunks: [`urgent_copy`] hands out a copy of the newest execution row of each urgent run, for
//! the writer to send at once on its own lane. The originals stay where they are and are
//! written in order later; execution rows carry a version and stores keep the newest, so the
//! copy and the original may commit in either order.
//!
//! [`urgent_copy`]: PendingWrites::urgent_copy

use std::collections::{HashMap, HashSet, VecDeque};

use std::hash::{Hash, Hasher};

use indexmap::{Equivalent, IndexMap, IndexSet};

use crate::model::ExecutionId;
use crate::rows::{ExecutionRow, Heartbeat, TaskRow, WriteBatch};

/// A chunk ready to be written, tagged with the seal that produced it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chunk {
    pub(crate) seal: u64,
    pub(crate) batch: WriteBatch,
}

/// What [`PendingWrites::push`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pushed {
    /// Task rows that replaced a pending row for the same task (their slot is freed).
    pub(crate) replaced: usize,
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
#[derive(Debug, Default)]
pub(crate) struct PendingWrites {
    open_executions: Map<ExecutionId, ExecutionRow>,
    open_tasks: IndexSet<Keyed, foldhash::fast::RandomState>,
    /// Runs with an urgent state not yet copied out.
    urgent: HashSet<ExecutionId, foldhash::fast::RandomState>,
    queue: VecDeque<Chunk>,
    next_seal: u64,
    /// Task rows not yet durable, per run: a finished run leaves the registry only when this
    /// reaches zero and its final execution row is durable.
    outstanding: HashMap<ExecutionId, usize, foldhash::fast::RandomState>,
    queued_task_rows: usize,
    heartbeat: Option<Heartbeat>,
}

impl PendingWrites {
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
            // Replaces an open row of the same task in place (its position is kept).
            if self.open_tasks.replace_full(Keyed(row)).1.is_some() {
                pushed.replaced += 1;
            } else {
                *self.outstanding.entry(run).or_insert(0) += 1;
            }
        }
        pushed
    }

    /// Task rows in the open set.
    pub(crate) fn open_task_rows(&self) -> usize {
        self.open_tasks.len()
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

    /// Seals the open set into queued chunks of at most `max_task_rows` task rows (at least
    /// one). The first chunk carries every execution row of the seal. Returns the seal's id, or
    /// `None` if nothing was open.
    pub(crate) fn seal(&mut self, max_task_rows: usize) -> Option<u64> {
        if !self.has_open() {
            return None;
        }
        self.next_seal += 1;
        let seal = self.next_seal;
        let max = max_task_rows.max(1);
        // Drained, not taken: the open sets keep their capacity for the next rows.
        let mut executions: Vec<ExecutionRow> =
            self.open_executions.drain(..).map(|(_, row)| row).collect();
        let tasks = self.open_tasks.drain(..);
        let mut heartbeat = self.heartbeat.take();
        self.queued_task_rows += tasks.len();
        let mut current = Vec::with_capacity(max.min(tasks.len()));
        for Keyed(row) in tasks {
            current.push(row);
            if current.len() == max {
                let mut batch = WriteBatch::new(
                    std::mem::take(&mut executions),
                    std::mem::replace(&mut current, Vec::with_capacity(max)),
                );
                batch.heartbeat = heartbeat.take();
                self.queue.push_back(Chunk { seal, batch });
            }
        }
        if !current.is_empty() || !executions.is_empty() || heartbeat.is_some() {
            let mut batch = WriteBatch::new(executions, current);
            batch.heartbeat = heartbeat.take();
            self.queue.push_back(Chunk { seal, batch });
        }
        // After a backlog (a database outage), give the memory back.
        if self.open_tasks.capacity() > max.saturating_mul(4) {
            self.open_tasks.shrink_to(max);
        }
        Some(seal)
    }

    /// Copies of the newest pending execution row of every run with an urgent state (open rows
    /// first, else the latest queued chunk that has one). `None` if there is nothing to copy:
    /// the states are already being written.
    pub(crate) fn urgent_copy(&mut self) -> Option<WriteBatch> {
        let runs = std::mem::take(&mut self.urgent);
        let rows: Vec<ExecutionRow> = runs
            .iter()
            .filter_map(|id| {
                self.open_executions.get(id).or_else(|| {
                    self.queue
                        .iter()
                        .rev()
                        .find_map(|c| c.batch.executions.iter().find(|e| &e.id == id))
                })
            })
            .cloned()
            .collect();
        (!rows.is_empty()).then(|| WriteBatch::new(rows, Vec::new()))
    }

    /// The next chunk to write, if any.
    pub(crate) fn next_chunk(&mut self) -> Option<Chunk> {
        let chunk = self.queue.pop_front()?;
        self.queued_task_rows -= chunk.batch.tasks.len();
        Some(chunk)
    }

    /// The smallest seal still queued (chunks queue in seal order).
    pub(crate) fn oldest_queued_seal(&self) -> Option<u64> {
        self.queue.front().map(|c| c.seal)
    }

    /// Records that these task rows are settled (written or rejected). Returns the runs that
    /// have no task rows outstanding any more.
    pub(crate) fn settle(&mut self, tasks: &[TaskRow]) -> Vec<ExecutionId> {
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
        self.seal(usize::MAX);
        let out = self.queue.drain(..).map(|c| c.batch).collect();
        self.queued_task_rows = 0;
        out
    }
}

/// Splits a batch the database refused into two smaller ones, each keeping the execution rows
/// of its tasks' runs (written twice is harmless: rows are absolute). Gives the batch back when
/// it is a single row.
pub(crate) fn split(mut batch: WriteBatch) -> Result<(WriteBatch, WriteBatch), WriteBatch> {
    if batch.tasks.len() >= 2 {
        let right_tasks = batch.tasks.split_off(batch.tasks.len() / 2);
        let right_executions = batch
            .executions
            .iter()
            .filter(|e| right_tasks.iter().any(|t| t.execution_id == e.id))
            .cloned()
            .collect();
        let right = WriteBatch::new(right_executions, right_tasks);
        return Ok((batch, right));
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
    // One execution and one task: the execution alone first, so that a refused task does not
    // take its (perfectly good) run down with it. Alone, the task then fails with its own
    // error, or as orphaned if its execution was the refused row.
    if batch.executions.len() == 1 && batch.tasks.len() == 1 {
        let mut left = WriteBatch::new(batch.executions, Vec::new());
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
/// link if either asks for it (it is only asked for on first and final writes).
fn coalesce_execution(rows: &mut Map<ExecutionId, ExecutionRow>, row: ExecutionRow) {
    match rows.get_mut(&row.id) {
        Some(slot) => {
            let link_plan = slot.link_plan || row.link_plan;
            if row.version >= slot.version {
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
        p.seal(10);
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
        p.seal(10_000);
        let chunks = drain(&mut p);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].batch.executions.len(), 1);
        assert_eq!(chunks[0].batch.executions[0].tool_calls, 999);
        assert_eq!(chunks[0].batch.tasks.len(), 250, "latest row per task");
    }

    #[test]
    fn sealing_chunks_by_size_and_puts_executions_in_the_first_chunk() {
        let mut p = PendingWrites::default();
        for i in 0..7 {
            p.push([exec(i % 2, 0)], vec![task(i % 2, i, 0)], false);
        }
        assert_eq!(p.seal(3), Some(1));
        let chunks = drain(&mut p);
        assert_eq!(
            chunks
                .iter()
                .map(|c| c.batch.tasks.len())
                .collect::<Vec<_>>(),
            vec![3, 3, 1]
        );
        assert_eq!(chunks[0].batch.executions.len(), 2);
        assert!(chunks[1..].iter().all(|c| c.batch.executions.is_empty()));
    }

    #[test]
    fn an_urgent_copy_holds_the_newest_state_and_leaves_the_originals_in_place() {
        let mut p = PendingWrites::default();
        p.push([exec(1, 1)], vec![task(1, 1, 1)], false);
        p.seal(100);
        p.push([exec(1, 2)], vec![task(1, 2, 2)], true);
        p.push([exec(2, 3)], vec![], false);
        assert!(p.is_urgent());
        let copy = p.urgent_copy().expect("a copy");
        assert!(!p.is_urgent());
        assert!(copy.tasks.is_empty());
        assert_eq!(copy.executions.len(), 1, "only the urgent run");
        assert_eq!(copy.executions[0].tool_calls, 2, "its newest state");
        // The originals are still written in order.
        let queued = p.next_chunk().expect("queued chunk");
        assert_eq!(queued.batch.executions[0].tool_calls, 1);
        p.seal(100);
        let open = p.next_chunk().expect("sealed open rows");
        assert_eq!(open.batch.executions.len(), 2);
        assert!(p.urgent_copy().is_none(), "nothing urgent left");
    }

    #[test]
    fn an_urgent_run_already_sealed_is_copied_from_the_queue() {
        let mut p = PendingWrites::default();
        p.push([exec(1, 1)], vec![], true);
        p.seal(100);
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
        p.seal(10);
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
        p.seal(10);
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
        p.seal(10);
        let chunk = p.next_chunk().expect("chunk");
        assert_eq!(p.settle(&chunk.batch.tasks), vec![run.clone()]);
        assert!(!p.has_outstanding(&run));
    }

    #[test]
    fn splitting_isolates_single_rows_and_keeps_executions_with_their_tasks() {
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
        // One execution with a task splits into the two rows, execution first.
        let pair = WriteBatch::new(vec![exec(1, 0)], vec![task(1, 1, 0)]);
        let (l, r) = split(pair).expect("splits");
        assert_eq!((l.executions.len(), l.tasks.len()), (1, 0));
        assert_eq!((r.executions.len(), r.tasks.len()), (0, 1));
        // A single row cannot be split.
        assert!(split(WriteBatch::new(vec![], vec![task(2, 1, 0)])).is_err());
        assert!(split(WriteBatch::new(vec![exec(2, 0)], vec![])).is_err());
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
            task: Option<u8>,
            urgent: bool,
        },
        Seal(usize),
        Urgent,
        Write,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..4, proptest::option::of(0u8..6), any::<bool>())
                .prop_map(|(run, task, urgent)| Op::Push { run, task, urgent }),
            1 => (1usize..5).prop_map(Op::Seal),
            1 => Just(Op::Urgent),
            2 => Just(Op::Write),
        ]
    }

    proptest! {
        /// Writing chunks in queue order into a map (the database, which keeps the newest
        /// execution version), with urgent copies written the moment they are taken, ends with
        /// exactly the latest value of every row pushed: nothing lost, nothing stale, nothing
        /// duplicated, no task written before its run's execution row.
        #[test]
        fn chunks_written_in_order_leave_the_latest_value_of_every_row(ops in proptest::collection::vec(op(), 1..120)) {
            let mut p = PendingWrites::default();
            let mut version = 0i64;
            let mut latest_exec: HashMap<String, i64> = HashMap::new();
            let mut latest_task: HashMap<String, i64> = HashMap::new();
            let mut db_exec: HashMap<String, i64> = HashMap::new();
            let mut db_task: HashMap<String, i64> = HashMap::new();
            let apply = |db_exec: &mut HashMap<String, i64>, rows: &[ExecutionRow]| {
                for e in rows {
                    let stored = db_exec.entry(e.id.to_string()).or_insert(e.tool_calls);
                    // The store keeps the newest version (tool_calls doubles as the version).
                    *stored = (*stored).max(e.tool_calls);
                }
            };
            let write = |p: &mut PendingWrites, db_exec: &mut HashMap<String, i64>, db_task: &mut HashMap<String, i64>| -> Result<(), TestCaseError> {
                if let Some(chunk) = p.next_chunk() {
                    apply(db_exec, &chunk.batch.executions);
                    for t in &chunk.batch.tasks {
                        prop_assert!(db_exec.contains_key(t.execution_id.as_str()), "orphan task {}", t.id);
                        db_task.insert(t.id.clone(), t.tool_calls);
                    }
                    p.settle(&chunk.batch.tasks);
                }
                Ok(())
            };
            for op in ops {
                match op {
                    Op::Push { run, task: t, urgent } => {
                        version += 1;
                        latest_exec.insert(format!("run-{run}"), version);
                        let tasks = match t {
                            Some(t) => {
                                latest_task.insert(format!("run-{run}-t{t}"), version);
                                vec![task(run, t, version)]
                            }
                            None => vec![],
                        };
                        p.push([exec(run, version)], tasks, urgent);
                    }
                    Op::Seal(max) => { p.seal(max); }
                    Op::Urgent => {
                        if let Some(copy) = p.urgent_copy() {
                            prop_assert!(copy.tasks.is_empty());
                            apply(&mut db_exec, &copy.executions);
                        }
                    }
                    Op::Write => write(&mut p, &mut db_exec, &mut db_task)?,
                }
            }
            p.seal(3);
            while !p.is_empty() {
                write(&mut p, &mut db_exec, &mut db_task)?;
            }
            prop_assert_eq!(db_exec, latest_exec);
            prop_assert_eq!(db_task, latest_task);
            prop_assert_eq!(p.pending_rows(), 0);
            prop_assert!(p.outstanding.is_empty());
        }
    }
}
