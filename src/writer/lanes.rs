//! Lane scheduling: which write a lane sends next. Pure (no I/O, no clock of its own: the
//! caller passes `now`), so its rules are property-tested here rather than by timing.
//!
//! Every run belongs to one lane (a stable hash of its id), so a run's writes stay in order
//! while lanes write in parallel, each on a connection of its own. A lane sends one write at a
//! time: urgent copies of runs' newest states go ahead of its queue, unless they have kept a due
//! queue waiting for a whole flush interval; then the queue's next chunk goes first once, so a
//! stream of urgent states cannot starve it. Open rows are sealed into chunks only behind an
//! empty queue, so rows left open keep coalescing meanwhile.

use std::time::{Duration, Instant};

use crate::metrics::FlushReason;
use crate::model::ExecutionId;
use crate::rows::WriteBatch;

use super::batch::{Chunk, ChunkLimits, PendingWrites};

/// The lane a run's writes go through: a stable hash of its id (FNV-1a), so it never changes.
pub(crate) fn lane_of(id: &ExecutionId, lanes: usize) -> usize {
    let hash = id.as_str().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % lanes.max(1) as u64) as usize
}

/// What a lane is writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Busy {
    /// A chunk of this seal, with this many rows weighing this many bytes.
    Chunk {
        seal: u64,
        rows: usize,
        bytes: usize,
    },
    /// Urgent copies of runs' newest states.
    Urgent,
}

/// Whether another lane may start a write while these are in flight: yes when none is, or when
/// every one is a chunk of at least `min_overlap_bytes` (large writes gain from overlapping;
/// small ones would only conflict, so they go one at a time).
pub(crate) fn may_overlap(
    in_flight: impl IntoIterator<Item = Busy>,
    min_overlap_bytes: usize,
) -> bool {
    in_flight.into_iter().all(|busy| match busy {
        Busy::Chunk { bytes, .. } => bytes >= min_overlap_bytes,
        Busy::Urgent => min_overlap_bytes == 0,
    })
}

/// What the scheduler needs to know beyond the lane itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub(crate) limits: ChunkLimits,
    pub(crate) flush_interval: Duration,
    pub(crate) shutting_down: bool,
}

/// The write a lane sends next.
#[derive(Debug)]
pub(crate) enum Next {
    /// Nothing to send (or the lane is busy).
    Idle,
    /// Urgent copies of runs' newest states, ahead of the queue.
    Urgent(WriteBatch),
    /// The queue's next chunk; `sealed` says why open rows were sealed for it, if they were.
    Chunk {
        chunk: Chunk,
        sealed: Option<FlushReason>,
    },
}

/// One ordered stream of writes: its pending rows and what it is sending.
#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) pending: PendingWrites,
    busy: Option<Busy>,
    timer_due: bool,
    /// A run's final state arrived: seal as soon as the queue allows, so it follows its task
    /// rows without waiting for the timer.
    final_due: bool,
    /// Since when urgent copies have been going ahead of a queue that was due.
    queue_passed_over: Option<Instant>,
}

impl Lane {
    /// An idle lane; `charge_cap` as [`PendingWrites::new`].
    pub(crate) fn new(charge_cap: usize) -> Self {
        Self {
            pending: PendingWrites::new(charge_cap),
            busy: None,
            timer_due: false,
            final_due: false,
            queue_passed_over: None,
        }
    }

    /// What the lane is sending, if anything.
    pub(crate) fn busy(&self) -> Option<Busy> {
        self.busy
    }

    /// The seal of the chunk in flight, if a chunk is.
    pub(crate) fn seal_in_flight(&self) -> Option<u64> {
        match self.busy {
            Some(Busy::Chunk { seal, .. }) => Some(seal),
            _ => None,
        }
    }

    /// The write in flight finished (written, refused or given up).
    pub(crate) fn done(&mut self) {
        self.busy = None;
    }

    /// The flush timer fired: open rows are due.
    pub(crate) fn timer_fired(&mut self) {
        self.timer_due = self.pending.has_open();
    }

    /// Something that must go out by the next timer tick regardless of open rows (a heartbeat).
    pub(crate) fn due_now(&mut self) {
        self.timer_due = true;
    }

    /// A run's final state arrived.
    pub(crate) fn final_arrived(&mut self) {
        self.final_due = true;
    }

    /// Decides the lane's next write at `now` and marks the lane busy with it. `Idle` if the lane
    /// is busy already or has nothing to send.
    pub(crate) fn next(&mut self, now: Instant, schedule: &Schedule) -> Next {
        if self.busy.is_some() {
            return Next::Idle;
        }
        let reason = self.seal_reason(schedule);
        let queue_due = reason.is_some() || self.pending.oldest_queued_seal().is_some();
        let queue_overdue = queue_due
            && self.queue_passed_over.is_some_and(|since| {
                now.saturating_duration_since(since) >= schedule.flush_interval
            });
        if !queue_overdue {
            if let Some(batch) = self.pending.urgent_copy() {
                if queue_due {
                    self.queue_passed_over.get_or_insert(now);
                }
                self.busy = Some(Busy::Urgent);
                return Next::Urgent(batch);
            }
        }
        let sealed = self.seal_if(reason, schedule);
        match self.pending.next_chunk() {
            Some(chunk) => {
                self.mark_sending(&chunk);
                Next::Chunk { chunk, sealed }
            }
            None => Next::Idle,
        }
    }

    /// The lane's next chunk, to go in the same transaction as another lane's small chunk, if
    /// it fits in `room` (what the other chunks left of the batch bounds). Open rows are sealed
    /// whether due or not, as one lane would seal every run's rows for a flush: the write goes
    /// anyway, and rows that wait for their own lane's turn would cost a write of their own. They
    /// are sealed with the full limits, so a chunk that does not fit stays queued whole for the
    /// lane's own turn. Never an urgent copy (the run's state rides in the chunk, if open).
    /// Returns why the rows were due, if they were sealed and due, and the chunk if it joins.
    pub(crate) fn join(
        &mut self,
        schedule: &Schedule,
        room: ChunkLimits,
    ) -> (Option<FlushReason>, Option<Chunk>) {
        if self.busy.is_some() {
            return (None, None);
        }
        let reason = self.seal_reason(schedule);
        let mut sealed = None;
        if self.pending.oldest_queued_seal().is_none()
            && self.pending.seal(schedule.limits).is_some()
        {
            sealed = reason;
            self.timer_due = false;
            self.final_due = false;
        }
        let fits = self
            .pending
            .front_chunk()
            .is_some_and(|c| c.batch.tasks.len() <= room.rows && c.bytes <= room.bytes);
        let chunk = if fits {
            self.pending.next_chunk()
        } else {
            None
        };
        if let Some(chunk) = &chunk {
            self.mark_sending(chunk);
        }
        (sealed, chunk)
    }

    /// Why open rows are due now, if they are.
    fn seal_reason(&self, schedule: &Schedule) -> Option<FlushReason> {
        if schedule.shutting_down {
            Some(FlushReason::Shutdown)
        } else if self.pending.open_full(schedule.limits) {
            Some(FlushReason::Size)
        } else if self.final_due {
            Some(FlushReason::Urgent)
        } else if self.timer_due {
            Some(FlushReason::Timer)
        } else {
            None
        }
    }

    /// Seals open rows for `reason` once the queue is empty; returns the reason if it sealed.
    fn seal_if(&mut self, reason: Option<FlushReason>, schedule: &Schedule) -> Option<FlushReason> {
        let reason = reason?;
        if self.pending.oldest_queued_seal().is_some() {
            return None;
        }
        let sealed = self.pending.seal(schedule.limits).map(|_| reason);
        self.timer_due = false;
        self.final_due = false;
        sealed
    }

    fn mark_sending(&mut self, chunk: &Chunk) {
        self.busy = Some(Busy::Chunk {
            seal: chunk.seal,
            rows: chunk.batch.len(),
            bytes: chunk.bytes,
        });
        self.queue_passed_over = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PlanId, TaskDefinition, TaskId, TaskResult};
    use crate::rows::{ExecutionRow, TaskRow};
    use chrono::Utc;
    use proptest::prelude::*;

    const INTERVAL: Duration = Duration::from_millis(100);

    fn schedule() -> Schedule {
        Schedule {
            limits: ChunkLimits {
                rows: 4,
                bytes: usize::MAX,
            },
            flush_interval: INTERVAL,
            shutting_down: false,
        }
    }

    /// Run `run`'s state after its `n`-th result (`n` in `tool_calls`, so order is visible).
    fn state(run: u8, n: i64, failed: bool) -> ExecutionRow {
        let mut row = ExecutionRow::started(
            ExecutionId::new(format!("run-{run}")).expect("id"),
            PlanId::new("p").expect("id"),
            1000,
            Utc::now(),
            Utc::now(),
        )
        .expect("row");
        row.tool_calls = n;
        row.version = n as u64;
        row.link_plan = false;
        if failed {
            row.status = crate::model::RunStatus::Failed;
        }
        row
    }

    /// Run `run`'s `n`-th result.
    fn result(run: u8, n: i64) -> TaskRow {
        let t = TaskId::new(format!("t{n}")).expect("id");
        TaskRow::new(
            &ExecutionId::new(format!("run-{run}")).expect("id"),
            &PlanId::new("p").expect("id"),
            TaskDefinition::new(t.clone()),
            TaskResult::success(t).with_tool_calls(n as u64),
            Utc::now(),
        )
        .expect("row")
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// A result of this run; its state urgent (a status change) or not.
        Result { run: u8, urgent: bool },
        /// Time passes (milliseconds).
        Wait(u64),
        /// The flush timer fires.
        Timer,
        /// The write in flight finishes.
        Done,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            // Urgent states often, so that they compete with the queue.
            3 => (0u8..4).prop_map(|run| Step::Result { run, urgent: true }),
            2 => (0u8..4).prop_map(|run| Step::Result { run, urgent: false }),
            2 => (1u64..60).prop_map(Step::Wait),
            1 => Just(Step::Timer),
            3 => Just(Step::Done),
        ]
    }

    /// Drives a lane through `steps`, deciding after every step as the writer does, and checks
    /// both rules on every decision. Returns the writes sent, in order.
    fn drive(steps: &[Step]) -> Result<Vec<Next>, TestCaseError> {
        let start = Instant::now();
        let mut now = start;
        let mut lane = Lane::new(usize::MAX);
        let mut counts = [0i64; 4];
        let mut sent = Vec::new();
        // Since when the queue has been due with no chunk of it in flight, and the longest
        // write so far: a decision comes only when a write ends.
        let mut due_since: Option<Instant> = None;
        let mut write_started = now;
        let mut longest_write = Duration::ZERO;
        for step in steps {
            match *step {
                Step::Result { run, urgent } => {
                    counts[run as usize] += 1;
                    let n = counts[run as usize];
                    lane.pending.push(
                        [state(run, n, urgent && n % 2 == 1)],
                        vec![result(run, n)],
                        urgent,
                    );
                }
                Step::Wait(ms) => now += Duration::from_millis(ms),
                Step::Timer => lane.timer_fired(),
                Step::Done => {
                    if lane.busy().is_some() {
                        longest_write = longest_write.max(now - write_started);
                        lane.done();
                    }
                }
            }
            if lane.busy().is_none()
                && due_since.is_none()
                && (lane.timer_due || lane.pending.oldest_queued_seal().is_some())
            {
                due_since = Some(now);
            }
            let next = lane.next(now, &schedule());
            match &next {
                Next::Idle => continue,
                Next::Urgent(_) => {
                    // An urgent copy may pass a due queue only within one interval (plus the
                    // writes the lane could not interrupt).
                    if let Some(since) = due_since {
                        prop_assert!(
                            now - since
                                < INTERVAL + 2 * longest_write.max(Duration::from_millis(1)),
                            "urgent copy at {:?} ahead of a queue due since {:?}",
                            now - start,
                            since - start
                        );
                    }
                }
                Next::Chunk { .. } => due_since = None,
            }
            write_started = now;
            sent.push(next);
        }
        Ok(sent)
    }

    proptest! {
        /// Urgent copies never keep a due queue waiting longer than one flush interval (plus
        /// the writes in flight when it fell due), however many arrive.
        #[test]
        fn no_queue_waits_longer_than_an_interval_behind_urgent_work(
            steps in proptest::collection::vec(step(), 1..300)
        ) {
            drive(&steps)?;
        }

        /// Within a run, the queue writes results and states in the order they arrived, and an
        /// urgent copy is never older than a state the queue has already written.
        #[test]
        fn order_within_a_run_is_kept(steps in proptest::collection::vec(step(), 1..300)) {
            let sent = drive(&steps)?;
            let mut last_task = [0i64; 4];
            let mut last_state = [0i64; 4];
            for next in &sent {
                let (batch, urgent) = match next {
                    Next::Chunk { chunk, .. } => (&chunk.batch, false),
                    Next::Urgent(batch) => (batch, true),
                    Next::Idle => continue,
                };
                // Placeholders and status-only marks carry no counters of their own.
                for row in batch.executions.iter().filter(|e| e.write.is_state()) {
                    let run: usize = row.id.as_str()[4..].parse().expect("run-N");
                    if urgent {
                        // A whole copy of the newest state, never an older one.
                        prop_assert!(row.tool_calls >= last_state[run], "{row:?}");
                    } else {
                        prop_assert!(row.tool_calls > last_state[run], "{row:?}");
                        last_state[run] = row.tool_calls;
                    }
                }
                for row in &batch.tasks {
                    let run: usize = row.execution_id.as_str()[4..].parse().expect("run-N");
                    prop_assert!(!urgent, "urgent copies carry no task rows");
                    prop_assert!(row.tool_calls > last_task[run], "{row:?}");
                    last_task[run] = row.tool_calls;
                }
            }
        }
    }

    #[test]
    fn only_large_chunks_overlap() {
        let chunk = |bytes| Busy::Chunk {
            seal: 1,
            rows: 1,
            bytes,
        };
        let min = 1 << 20;
        assert!(may_overlap([], min), "nothing in flight");
        assert!(may_overlap([chunk(min)], min));
        assert!(may_overlap([chunk(min), chunk(8 << 20)], min));
        assert!(
            !may_overlap([chunk(min - 1)], min),
            "a small chunk goes alone"
        );
        assert!(!may_overlap([chunk(8 << 20), chunk(10)], min));
        assert!(!may_overlap([Busy::Urgent], min), "urgent copies are small");
        assert!(
            may_overlap([chunk(0), Busy::Urgent], 0),
            "0: lanes always overlap"
        );
    }

    #[test]
    fn a_queue_passed_over_for_an_interval_goes_before_the_next_urgent_copy() {
        let relaxed = Schedule {
            limits: ChunkLimits {
                rows: 100,
                bytes: usize::MAX,
            },
            ..schedule()
        };
        let mut lane = Lane::new(usize::MAX);
        let t0 = Instant::now();
        lane.pending
            .push([state(0, 1, false)], vec![result(0, 1)], false);
        lane.timer_fired();
        lane.pending
            .push([state(1, 1, true)], vec![result(1, 1)], true);
        assert!(matches!(lane.next(t0, &relaxed), Next::Urgent(_)));
        lane.done();
        lane.pending
            .push([state(1, 2, true)], vec![result(1, 2)], true);
        let just_before = t0 + INTERVAL - Duration::from_millis(1);
        assert!(matches!(lane.next(just_before, &relaxed), Next::Urgent(_)));
        lane.done();
        lane.pending
            .push([state(1, 3, true)], vec![result(1, 3)], true);
        assert!(matches!(
            lane.next(t0 + INTERVAL, &relaxed),
            Next::Chunk {
                sealed: Some(FlushReason::Timer),
                ..
            }
        ));
    }

    #[test]
    fn a_lane_joins_with_every_open_row_if_they_fit() {
        let limits = ChunkLimits {
            rows: 100,
            bytes: usize::MAX,
        };
        let schedule = Schedule {
            limits,
            ..schedule()
        };
        let mut lane = Lane::new(usize::MAX);
        lane.pending
            .push([state(0, 2, true)], vec![result(0, 1), result(0, 2)], true);
        // Not due (no timer, no final state, far from full): sealed all the same, with the
        // full limits, and kept queued whole when it does not fit.
        let one_row = ChunkLimits { rows: 1, ..limits };
        assert_eq!(lane.join(&schedule, one_row), (None, None));
        assert!(
            lane.busy().is_none(),
            "a chunk that does not join leaves the lane idle"
        );

        let (sealed, chunk) = lane.join(&schedule, limits);
        assert_eq!(
            sealed, None,
            "sealed already, and not for a reason of its own"
        );
        let chunk = chunk.expect("the queued chunk joins once it fits");
        assert_eq!(
            chunk.batch.tasks.len(),
            2,
            "sealed whole, not cut to the room"
        );
        assert_eq!(
            chunk.batch.executions.len(),
            1,
            "the urgent state rides in the chunk"
        );
        assert!(matches!(lane.busy(), Some(Busy::Chunk { rows: 3, .. })));
        lane.done();
        assert!(
            matches!(lane.next(Instant::now(), &schedule), Next::Idle),
            "no urgent copy is left to send: the state was written with the chunk"
        );

        lane.pending
            .push([state(1, 1, false)], vec![result(1, 1)], false);
        lane.timer_fired();
        let (sealed, chunk) = lane.join(&schedule, limits);
        assert_eq!(sealed, Some(FlushReason::Timer), "a due lane says why");
        assert!(chunk.is_some());
    }
}
