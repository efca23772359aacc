//! The per-run actor: one [`ExecutionActor`] per live workflow run.
//!
//! It owns the run's counters. Callers queue task results beside its mailbox (see
//! [`results`]) and mostly do not wait; each turn the actor takes every queued result, counts
//! them, and hands the writer's inbox the task rows plus one row with the run's latest absolute
//! state. Every other message first takes the queue, so anything a caller sends after a result
//! (a snapshot, `finish`, a drain) sees that result counted.
//!
//! A status change (the first failure, or a re-sent success clearing the last one) and the final
//! state are marked urgent: the writer sends a status change ahead of its queue, and writes a
//! final state as soon as the run's task rows are written (never before them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{ModelError, RecordError};
use crate::inbox::{Delivery, Inbox};
use crate::metrics::Metrics;
use crate::model::{ExecutionId, PlanId, RunStatus};
use crate::rows::{ExecutionRow, TaskRow};

pub(crate) mod counters;
pub(crate) mod messages;
pub(crate) mod results;

pub use counters::Totals;
use counters::{Contribution, RunCounters};
use messages::{Drain, FinishRun, GetSnapshot, RecordTask, TakeResults};
use results::{Closed, ResultQueue, Taken};

/// A run's counters and status at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RunSnapshot {
    /// The run.
    pub execution_id: ExecutionId,
    /// Its plan.
    pub plan_id: PlanId,
    /// `running`/`failed` while live; `completed`/`failed`/`cancelled` once finished.
    pub status: RunStatus,
    /// Whether `finish` or `cancel` was accepted.
    pub finished: bool,
    /// Planned task count.
    pub tasks_total: i64,
    /// Sums over each task's latest result.
    pub totals: Totals,
    /// When the run started.
    pub start_time: DateTime<Utc>,
    /// When it ended, once finished.
    pub end_time: Option<DateTime<Utc>>,
}

/// What a run's handles and its actor share: fixed facts, and the final snapshot once the run
/// ended (the actor stops then, but `RunHandle::snapshot` keeps answering).
#[derive(Debug)]
pub(crate) struct RunShared {
    pub(crate) id: ExecutionId,
    pub(crate) plan_id: PlanId,
    pub(crate) start_time: DateTime<Utc>,
    pub(crate) created: DateTime<Utc>,
    pub(crate) tasks_total: i64,
    pub(crate) owner: Option<Arc<str>>,
    /// Set once, when `finish`/`cancel` is accepted: the run has ended exactly when it is set.
    pub(crate) final_snapshot: OnceLock<RunSnapshot>,
    /// Sum of the tokens and tool calls of every result accepted for this run (re-sent ones
    /// included): an upper bound of every run total, kept by the callers.
    pub(crate) accepted_weight: AtomicU64,
    /// The aggregator's metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// Results waiting for the actor's next turn.
    pub(crate) results: ResultQueue,
    /// The senders' bounds, for what a refused row gives back.
    pub(crate) slots: Arc<crate::slots::Slots>,
}

impl RunShared {
    /// Counts results whose callers were told `Ok` and that no actor will count: refused
    /// (and handled, for the mailbox-depth gauge), and logged. Their slots are freed by the
    /// caller dropping them.
    pub(crate) fn count_stranded(&self, rows: u64) {
        if rows == 0 {
            return;
        }
        self.metrics.run_handled.fetch_add(rows, Ordering::Relaxed);
        self.metrics
            .rejected_messages
            .fetch_add(rows, Ordering::Relaxed);
        tracing::warn!(
            execution_id = %self.id,
            rows,
            "task results accepted for this run were dropped: runtally stopped before its actor \
             counted them"
        );
    }

    /// Adds the row to the accepted weight. Returns true while that bound (so every run total)
    /// stays within Bolt's integer range: the actor cannot then refuse the row for overflow.
    pub(crate) fn add_weight(&self, row: &TaskRow) -> bool {
        let weight = [row.tokens_input, row.tokens_output, row.tool_calls]
            .into_iter()
            .map(|n| u64::try_from(n).unwrap_or(u64::MAX))
            .fold(0u64, u64::saturating_add);
        let before = self
            .accepted_weight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(w.saturating_add(weight))
            })
            .unwrap_or(u64::MAX);
        before.saturating_add(weight) <= i64::MAX as u64
    }
}

/// The actor that keeps one run's counters. Started by `Aggregator::begin_run` on one of
/// runtally's arbiters; stops once its final state is queued at the writer.
pub(crate) struct ExecutionActor {
    run: Arc<RunShared>,
    counters: RunCounters,
    /// The next execution row asks the store to link the plan (first and final writes).
    link_plan: bool,
    /// Version of the last execution row built (see `ExecutionRow::version`).
    version: u64,
    ended: Option<(RunStatus, DateTime<Utc>)>,
    inbox: Arc<Inbox>,
    mailbox_capacity: usize,
}

impl ExecutionActor {
    pub(crate) fn new(run: Arc<RunShared>, inbox: Arc<Inbox>, mailbox_capacity: usize) -> Self {
        Self {
            run,
            counters: RunCounters::default(),
            link_plan: true,
            version: 0,
            ended: None,
            inbox,
            mailbox_capacity,
        }
    }

    /// The run's status and end time: the final ones once ended, else the live status.
    fn status_and_end(&self) -> (RunStatus, Option<DateTime<Utc>>) {
        match self.ended {
            Some((status, end)) => (status, Some(end)),
            None => (self.counters.live_status(), None),
        }
    }

    fn snapshot(&self) -> RunSnapshot {
        let (status, end_time) = self.status_and_end();
        RunSnapshot {
            execution_id: self.run.id.clone(),
            plan_id: self.run.plan_id.clone(),
            status,
            finished: self.ended.is_some(),
            tasks_total: self.run.tasks_total,
            totals: self.counters.totals(),
            start_time: self.run.start_time,
            end_time,
        }
    }

    fn execution_row(&mut self) -> ExecutionRow {
        let (status, end_time) = self.status_and_end();
        let totals = self.counters.totals();
        let duration_ms = end_time.map_or(0, |end| (end - self.run.start_time).num_milliseconds());
        let updated = Utc::now();
        ExecutionRow {
            id: self.run.id.clone(),
            plan_id: self.run.plan_id.clone(),
            status,
            start_time: self.run.start_time,
            end_time,
            duration_ms,
            tasks_total: self.run.tasks_total,
            tasks_successful: totals.tasks_successful,
            tasks_failed: totals.tasks_failed,
            tokens_input: totals.tokens_input,
            tokens_output: totals.tokens_output,
            tokens_total: totals.tokens_total(),
            tool_calls: totals.tool_calls,
            created: self.run.created,
            updated,
            link_plan: std::mem::take(&mut self.link_plan),
            owner: self.run.owner.clone(),
            version: {
                self.version = next_version(self.version, updated);
                self.version
            },
            write: crate::rows::ExecutionWrite::State,
        }
    }

    /// Hands the run's latest state (and the task rows that changed it) to the writer. Returns
    /// false if the writer has shut down (the rows are counted as dropped).
    fn deliver(&mut self, tasks: Vec<TaskRow>, urgent: bool) -> bool {
        let delivery = Delivery::Run {
            execution: self.execution_row(),
            tasks,
            urgent,
        };
        if let Err(lost) = self.inbox.push(delivery) {
            // Only after shutdown stopped the writer; counted, never silent.
            let rows = match lost {
                Delivery::Run { tasks, .. } => 1 + tasks.len() as u64,
                Delivery::Restore(batch) => batch.len() as u64,
            };
            self.run
                .metrics
                .rows_dropped
                .fetch_add(rows, Ordering::Relaxed);
            tracing::error!(execution_id = %self.run.id, rows, "writer gone; rows not written");
            return false;
        }
        true
    }

    fn handled(&self) {
        self.run.metrics.run_handled.fetch_add(1, Ordering::Relaxed);
    }

    /// Why no result can be accepted now, if none can.
    fn closed_for_results(&self) -> Option<RecordError> {
        if self.ended.is_some() {
            Some(RecordError::RunFinished(self.run.id.clone()))
        } else if self.inbox.is_closed() {
            // Shutdown has taken its last rows: accepting one now would lose it.
            Some(RecordError::ShuttingDown)
        } else {
            None
        }
    }

    /// Counts one result. Returns whether it changed the run's status.
    fn count(&mut self, row: &TaskRow) -> Result<bool, RecordError> {
        let contribution = Contribution::of(row);
        let recorded = self
            .counters
            .record(&row.task_id, contribution)
            .map_err(RecordError::Invalid)?;
        let m = &self.run.metrics;
        if contribution.failed {
            m.tasks_failed.fetch_add(1, Ordering::Relaxed);
        } else {
            m.tasks_succeeded.fetch_add(1, Ordering::Relaxed);
        }
        if recorded.replaced {
            m.tasks_replaced.fetch_add(1, Ordering::Relaxed);
        }
        m.tokens_input
            .fetch_add(contribution.tokens_input as u64, Ordering::Relaxed);
        m.tokens_output
            .fetch_add(contribution.tokens_output as u64, Ordering::Relaxed);
        m.tool_calls
            .fetch_add(contribution.tool_calls as u64, Ordering::Relaxed);
        let changed = recorded.status_before != recorded.status_after;
        if changed {
            tracing::debug!(
                execution_id = %self.run.id,
                task_id = %row.task_id,
                status = %recorded.status_after,
                "run status changed"
            );
        }
        Ok(changed)
    }

    /// Counts queued results (their callers were told `Ok` already: a refusal is counted and
    /// logged) and hands their rows to the writer in one delivery.
    fn process(&mut self, taken: Taken) {
        let Taken { mut rows, permit } = taken;
        if rows.is_empty() {
            return;
        }
        let Some(mut permit) = permit else {
            // Every queued row brings its slot; a row without one is a bug, not an input.
            debug_assert!(false, "queued rows without their slots");
            return;
        };
        if self.closed_for_results().is_some() {
            // Only shutdown gets here (`finish` closes the queue before the run ends); the
            // slots are freed as the permit drops.
            self.run.count_stranded(rows.len() as u64);
            return;
        }
        self.run
            .metrics
            .run_handled
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        let mut changed = false;
        let mut refused = 0;
        let mut refused_bytes = 0;
        rows.retain(|row| match self.count(row) {
            Ok(flipped) => {
                changed |= flipped;
                true
            }
            Err(error) => {
                self.refuse_accepted(row, error);
                refused += 1;
                refused_bytes += self.run.slots.charge(row);
                false
            }
        });
        drop(permit.split(refused, refused_bytes));
        if rows.is_empty() {
            return;
        }
        if self.deliver(rows, changed) {
            // From here the writer accounts for the rows' slots.
            permit.forget();
        }
    }

    /// Takes and counts everything queued: called first by every handler, so a message sees
    /// every result queued before it was sent.
    fn process_queued(&mut self) {
        let taken = self.run.results.take();
        self.process(taken);
    }

    /// Refuses a queued result whose sender was already told `Ok`: counted and logged, since
    /// nobody reads an answer.
    fn refuse_accepted(&self, row: &TaskRow, error: RecordError) {
        tracing::warn!(
            execution_id = %self.run.id,
            task_id = %row.task_id,
            error = %crate::error::chain(&error),
            "task result refused after it was accepted"
        );
        let _ = self.reject::<()>(error);
    }

    fn reject<T>(&self, error: RecordError) -> Result<T, RecordError> {
        self.run
            .metrics
            .rejected_messages
            .fetch_add(1, Ordering::Relaxed);
        Err(error)
    }
}

impl Actor for ExecutionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        // The run's first write: `running`, zero counters, plan link.
        self.deliver(Vec::new(), false);
    }
}

impl Drop for ExecutionActor {
    /// An actor stops after `finish` (which closed its queue) or when runtally's system stops.
    /// Results still queued then were accepted (their callers were told `Ok`) and can no longer
    /// be counted: they are refused here, counted and logged, and their slots freed.
    fn drop(&mut self) {
        let leftovers = self.run.results.close(Closed::Stopped);
        self.run.count_stranded(leftovers.rows.len() as u64);
    }
}

impl Handler<TakeResults> for ExecutionActor {
    type Result = ();

    fn handle(&mut self, _: TakeResults, _: &mut Context<Self>) {
        self.process_queued();
    }
}

impl Handler<RecordTask> for ExecutionActor {
    type Result = Result<(), RecordError>;

    /// A result whose sender waits for the answer (its run's queue was full, or a run total
    /// may pass Bolt's range): counted after everything queued before it.
    fn handle(&mut self, msg: RecordTask, _: &mut Context<Self>) -> Self::Result {
        self.process_queued();
        self.handled();
        let RecordTask { row, permit } = msg;
        if let Some(error) = self.closed_for_results() {
            return self.reject(error);
        }
        let changed = match self.count(&row) {
            Ok(changed) => changed,
            Err(error) => return self.reject(error),
        };
        if !self.deliver(vec![row], changed) {
            // The writer is gone (counted as dropped by `deliver`); the permit is released as
            // it drops.
            return Err(RecordError::ShuttingDown);
        }
        // From here the writer accounts for the row's slot.
        permit.forget();
        Ok(())
    }
}

impl Handler<FinishRun> for ExecutionActor {
    type Result = Result<RunSnapshot, RecordError>;

    fn handle(&mut self, msg: FinishRun, ctx: &mut Context<Self>) -> Self::Result {
        self.handled();
        if self.ended.is_some() {
            return self.reject(RecordError::RunFinished(self.run.id.clone()));
        }
        if msg.end < self.run.start_time {
            return self.reject(RecordError::Invalid(ModelError::EndBeforeStart {
                start: self.run.start_time,
                end: msg.end,
            }));
        }
        // A finish that passed the caller's check before a shutdown began, handled after the
        // writer closed its inbox: its final state could not be written, so it is refused and
        // the run stays as it was (`running` or `failed`, for `reconcile_stale`).
        if self.inbox.is_closed() {
            return self.reject(RecordError::ShuttingDown);
        }
        // Everything queued before the finish counts; nothing can be queued after it.
        let taken = self.run.results.close(Closed::Finished);
        self.process(taken);
        let status = self.counters.final_status(msg.cancelled);
        self.ended = Some((status, msg.end));
        self.link_plan = true;
        let snapshot = self.snapshot();
        let _ = self.run.final_snapshot.set(snapshot.clone());
        self.run.metrics.run_finished(status);
        tracing::debug!(execution_id = %self.run.id, status = %status, "run finished");
        // Urgent: clients poll for it. The writer writes it with or after the run's last task
        // rows, never ahead of them.
        let delivered = self.deliver(Vec::new(), true);
        ctx.stop();
        if !delivered {
            // The inbox closed after the check above: the state is counted as dropped (so the
            // shutdown report is not complete) and the caller is told.
            return Err(RecordError::ShuttingDown);
        }
        Ok(snapshot)
    }
}

impl Handler<GetSnapshot> for ExecutionActor {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Context<Self>) -> Self::Result {
        self.process_queued();
        self.handled();
        MessageResult(self.snapshot())
    }
}

impl Handler<Drain> for ExecutionActor {
    type Result = ();

    /// Rows go to the writer's inbox as each message is handled, so taking the queue and
    /// reaching this message (after every earlier one, mailboxes being FIFO) is all a drain
    /// needs.
    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {
        self.process_queued();
        self.handled();
    }
}

/// The execution-row version after `last`: the wall clock in microseconds, strictly increasing.
/// From the clock, not from zero, so a run written again by a later actor (an id begun anew, or
/// a run resumed elsewhere) is never taken for an older state and ignored.
fn next_version(last: u64, at: DateTime<Utc>) -> u64 {
    let clock = u64::try_from(at.timestamp_micros()).unwrap_or(0);
    clock.max(last.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::Slots;

    fn shared(metrics: &Arc<Metrics>) -> Arc<RunShared> {
        let at = Utc::now();
        Arc::new(RunShared {
            id: ExecutionId::new("finish-after-close").expect("id"),
            plan_id: PlanId::new("p").expect("id"),
            start_time: at,
            created: at,
            tasks_total: 1,
            owner: None,
            final_snapshot: OnceLock::new(),
            accepted_weight: AtomicU64::new(0),
            metrics: Arc::clone(metrics),
            results: ResultQueue::new(8),
            slots: Arc::new(Slots::new(8, 1 << 20)),
        })
    }

    #[test]
    fn a_finish_after_the_writer_closed_is_refused_not_reported_ok() {
        let metrics = Arc::new(Metrics::default());
        let run = shared(&metrics);
        let inbox = Arc::new(Inbox::default());
        let outcome = actix::System::new().block_on({
            let (run, inbox) = (Arc::clone(&run), Arc::clone(&inbox));
            async move {
                let end = run.start_time + chrono::Duration::seconds(1);
                let addr = ExecutionActor::new(run, Arc::clone(&inbox), 8).start();
                // Started (its first state is in the inbox), then the writer closes the inbox.
                addr.send(GetSnapshot).await.expect("the actor answers");
                inbox.close();
                addr.send(FinishRun {
                    end,
                    cancelled: false,
                })
                .await
            }
        });
        assert!(
            matches!(outcome, Ok(Err(RecordError::ShuttingDown))),
            "{outcome:?}"
        );
        assert!(
            run.final_snapshot.get().is_none(),
            "the run is not ended: its final state was never queued"
        );
        assert_eq!(
            metrics.rows_dropped.load(Ordering::Relaxed),
            0,
            "nothing was handed to a closed inbox"
        );
    }

    #[test]
    fn versions_follow_the_clock_and_never_repeat() {
        let at = Utc::now();
        let first = next_version(0, at);
        assert_eq!(
            first,
            u64::try_from(at.timestamp_micros()).expect("after 1970")
        );
        // The same instant (a fast second write) still moves the version on.
        assert_eq!(next_version(first, at), first + 1);
        // A clock that steps back never takes the version back.
        let earlier = at - chrono::Duration::seconds(5);
        assert_eq!(next_version(first + 1, earlier), first + 2);
        // A later actor for the same id starts above anything an earlier one wrote before.
        let later = at + chrono::Duration::milliseconds(1);
        assert!(next_version(0, later) > first + 2);
    }
}
