//! Results waiting for their run actor: a short queue per run, beside the actor's mailbox.
//!
//! One actix message per result cost an envelope allocation, a mailbox node, a handler call, a
//! fresh execution row and a writer-inbox push each. Callers now push results here (a mutex
//! hold, no allocation in the steady state) and wake the actor only when the queue goes from
//! quiet to busy; the actor takes everything queued in one turn, counts it, and hands the
//! writer one execution row with all the task rows. A busy run so pays per *turn*, not per
//! result, which is what keeps `task_finished` cheap when thousands of runs report at once.
//!
//! Order is kept: every other message the actor handles (a snapshot, `finish`, a drain, a
//! result sent the slow way) first takes this queue, so it sees every result queued before it
//! was sent. The queue closes when the run finishes or the actor stops; a push then gets its
//! row back, and whatever a stopping actor finds still queued is counted and logged, never
//! lost silently.
//!
//! Each queued row holds its slots under `max_pending_rows` and `max_pending_bytes`; the slots
//! of the whole queue are merged into one, so taking the queue moves one slot, not one per row.

use std::sync::Mutex;

use crate::rows::TaskRow;
use crate::slots::Slot;
use crate::sync::lock;

/// What [`ResultQueue::push`] did with a row.
// `Full` gives the row back for the caller's slow path rather than boxing it: the hot path
// (`Queued`) must not allocate.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Pushed {
    /// Queued. `wake`: the queue was quiet, so the caller must wake the actor.
    Queued { wake: bool },
    /// The queue is at its bound: the caller waits for the actor (or reports `Full`).
    Full(TaskRow, Slot),
    /// The queue is closed, for this reason (the row is dropped and its slot freed).
    Closed(Closed),
}

/// Why a queue stopped taking results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// The run was finished or cancelled.
    Finished,
    /// Its actor stopped without finishing it (runtally stopped).
    Stopped,
}

/// Rows taken from the queue, with the slots they hold.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    pub(crate) rows: Vec<TaskRow>,
    /// One permit for all the rows (`None` when there are none).
    pub(crate) permit: Option<Slot>,
}

#[derive(Debug, Default)]
struct Queue {
    rows: Vec<TaskRow>,
    permit: Option<Slot>,
    /// Rows in the last take: the next turn's first push reserves this much at once.
    hint: usize,
    /// A wake-up is on its way to the actor (or the actor is about to take the queue). False
    /// exactly when no row is queued.
    scheduled: bool,
    closed: Option<Closed>,
}

/// One run's queued results.
#[derive(Debug)]
pub(crate) struct ResultQueue {
    queue: Mutex<Queue>,
    capacity: usize,
}

impl ResultQueue {
    /// A queue holding at most `capacity` rows (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            capacity: capacity.max(1),
        }
    }

    /// Queues a row with its slot.
    pub(crate) fn push(&self, row: TaskRow, permit: Slot) -> Pushed {
        let mut queue = lock(&self.queue);
        if let Some(why) = queue.closed {
            return Pushed::Closed(why);
        }
        if queue.rows.len() >= self.capacity {
            return Pushed::Full(row, permit);
        }
        if queue.rows.capacity() == 0 {
            // Taken rows go on to the writer with their vector, so each turn starts empty;
            // sizing it like the last turn saves the regrowth. An idle run holds nothing.
            let hint = queue.hint.max(4).min(self.capacity);
            queue.rows.reserve_exact(hint);
        }
        queue.rows.push(row);
        match &mut queue.permit {
            Some(held) => held.merge(permit),
            none => *none = Some(permit),
        }
        let wake = !std::mem::replace(&mut queue.scheduled, true);
        Pushed::Queued { wake }
    }

    /// Takes everything queued; the next push wakes the actor again.
    pub(crate) fn take(&self) -> Taken {
        let mut queue = lock(&self.queue);
        queue.scheduled = false;
        Self::take_locked(&mut queue)
    }

    /// Refuses further pushes (the first reason given sticks) and takes what is queued.
    pub(crate) fn close(&self, why: Closed) -> Taken {
        self.close_with_reason(why).0
    }

    /// As [`close`](Self::close), and says which reason stuck: an earlier close's, if any.
    pub(crate) fn close_with_reason(&self, why: Closed) -> (Taken, Closed) {
        let mut queue = lock(&self.queue);
        let why = *queue.closed.get_or_insert(why);
        queue.scheduled = false;
        (Self::take_locked(&mut queue), why)
    }

    fn take_locked(queue: &mut Queue) -> Taken {
        if !queue.rows.is_empty() {
            queue.hint = queue.rows.len();
        }
        Taken {
            rows: std::mem::take(&mut queue.rows),
            permit: queue.permit.take(),
        }
    }

    /// Rows queued now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.queue).rows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ExecutionId, PlanId, TaskDefinition, TaskId, TaskResult};
    use crate::slots::Slots;

    fn row(task: &str) -> TaskRow {
        let id = TaskId::new(task).expect("id");
        TaskRow::new(
            &ExecutionId::new("e").expect("id"),
            &PlanId::new("p").expect("id"),
            TaskDefinition::new(id.clone()),
            TaskResult::success(id),
            chrono::Utc::now(),
        )
        .expect("row")
    }

    fn permit(slots: &Slots) -> Slot {
        slots.try_acquire(100).expect("slot")
    }

    #[test]
    fn only_the_push_into_a_quiet_queue_wakes_the_actor() {
        let slots = Slots::new(10, 1 << 20);
        let queue = ResultQueue::new(8);
        assert!(matches!(
            queue.push(row("a"), permit(&slots)),
            Pushed::Queued { wake: true }
        ));
        assert!(matches!(
            queue.push(row("b"), permit(&slots)),
            Pushed::Queued { wake: false }
        ));
        let taken = queue.take();
        let ids: Vec<&str> = taken.rows.iter().map(|r| r.task_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(
            taken.permit.as_ref().map(|p| (p.rows(), p.bytes())),
            Some((2, 200))
        );
        // Taken: the next push must wake the actor again.
        assert!(matches!(
            queue.push(row("c"), permit(&slots)),
            Pushed::Queued { wake: true }
        ));
    }

    #[test]
    fn a_finished_run_is_what_a_late_stop_sees() {
        // A result pushed just before `finish` took the queue, whose wake-up then finds the
        // actor gone: the sender must learn that the run finished (its row was counted), not
        // that runtally stopped.
        let slots = Slots::new(10, 1 << 20);
        let queue = ResultQueue::new(8);
        assert!(matches!(
            queue.push(row("a"), permit(&slots)),
            Pushed::Queued { wake: true }
        ));
        let at_finish = queue.close(Closed::Finished);
        assert_eq!(at_finish.rows.len(), 1, "finish takes the row");
        let (late, why) = queue.close_with_reason(Closed::Stopped);
        assert_eq!(why, Closed::Finished, "the first reason sticks");
        assert!(late.rows.is_empty());
    }

    #[test]
    fn a_full_queue_gives_the_row_and_its_slot_back() {
        let slots = Slots::new(10, 1 << 20);
        let queue = ResultQueue::new(1);
        assert!(matches!(
            queue.push(row("a"), permit(&slots)),
            Pushed::Queued { .. }
        ));
        match queue.push(row("b"), permit(&slots)) {
            Pushed::Full(back, slot) => {
                assert_eq!(back.task_id.as_str(), "b");
                drop(slot);
            }
            other => panic!("expected Full, got {other:?}"),
        }
        assert_eq!(queue.len(), 1);
        assert_eq!(slots.free_rows(), 9);
    }

    #[test]
    fn a_closed_queue_refuses_pushes_and_frees_the_taken_slots_when_dropped() {
        let slots = Slots::new(10, 1 << 20);
        let queue = ResultQueue::new(8);
        for task in ["a", "b", "c"] {
            let _ = queue.push(row(task), permit(&slots));
        }
        let leftovers = queue.close(Closed::Finished);
        assert_eq!(leftovers.rows.len(), 3);
        assert_eq!(slots.free_rows(), 7);
        drop(leftovers);
        assert_eq!(slots.free_rows(), 10);
        assert!(matches!(
            queue.push(row("d"), permit(&slots)),
            Pushed::Closed(Closed::Finished)
        ));
        // The first reason sticks.
        assert!(queue.close(Closed::Stopped).rows.is_empty());
        assert!(matches!(
            queue.push(row("e"), permit(&slots)),
            Pushed::Closed(Closed::Finished)
        ));
        assert_eq!(queue.len(), 0);
    }
}
