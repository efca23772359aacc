//! The per-run actor: one [`ExecutionActor`] per live workflow run.
//!
//! It owns the run's counters, turns each accepted task result into a task row plus the run's
//! latest absolute state, and hands both to the writer. It keeps at most one `Enqueue` in flight
//! to the writer and gathers rows that arrive meanwhile into the next one, so under load a busy
//! run sends one message per writer round trip instead of one per task.
//!
//! A status change (the first failure, or a re-sent success clearing the last one) and the final
//! state are marked urgent: the writer puts them ahead of its queue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::error::{ModelError, RecordError};
use crate::metrics::Metrics;
use crate::model::{ExecutionId, PlanId, RunStatus};
use crate::rows::{ExecutionRow, TaskRow};
use crate::writer::messages::Enqueue;

pub(crate) mod counters;
pub(crate) mod messages;

pub use counters::Totals;
use counters::{Contribution, RunCounters};
use messages::{Drain, FinishRun, GetSnapshot, RecordTask};

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
    pub(crate) ended: AtomicBool,
    pub(crate) final_snapshot: OnceLock<RunSnapshot>,
}

/// The actor that keeps one run's counters. Started by `Aggregator::begin_run` on one of
/// runtally's arbiters; stops once its final state is queued at the writer.
pub(crate) struct ExecutionActor {
    run: Arc<RunShared>,
    counters: RunCounters,
    /// Accepted task rows not yet sent to the writer.
    outbox: Vec<TaskRow>,
    /// The run's state changed since the last `Enqueue`.
    dirty: bool,
    urgent: bool,
    /// The next execution row asks the store to link the plan (first and final writes).
    link_plan: bool,
    in_flight: bool,
    ended: Option<(RunStatus, DateTime<Utc>)>,
    finish_waiter: Option<oneshot::Sender<Result<RunSnapshot, RecordError>>>,
    drain_waiters: Vec<oneshot::Sender<()>>,
    writer: Recipient<Enqueue>,
    metrics: Arc<Metrics>,
    mailbox_capacity: usize,
}

impl ExecutionActor {
    pub(crate) fn new(
        run: Arc<RunShared>,
        writer: Recipient<Enqueue>,
        metrics: Arc<Metrics>,
        mailbox_capacity: usize,
    ) -> Self {
        Self {
            run,
            counters: RunCounters::default(),
            outbox: Vec::new(),
            dirty: true,
            urgent: false,
            link_plan: true,
            in_flight: false,
            ended: None,
            finish_waiter: None,
            drain_waiters: Vec::new(),
            writer,
            metrics,
            mailbox_capacity,
        }
    }

    fn snapshot(&self) -> RunSnapshot {
        let (status, end_time) = match self.ended {
            Some((status, end)) => (status, Some(end)),
            None => (self.counters.live_status(), None),
        };
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

    fn execution_row(&self) -> ExecutionRow {
        let snapshot = self.snapshot();
        let totals = snapshot.totals;
        let duration_ms = snapshot
            .end_time
            .map_or(0, |end| (end - self.run.start_time).num_milliseconds());
        ExecutionRow {
            id: self.run.id.clone(),
            plan_id: self.run.plan_id.clone(),
            status: snapshot.status,
            start_time: self.run.start_time,
            end_time: snapshot.end_time,
            duration_ms,
            tasks_total: self.run.tasks_total,
            tasks_successful: totals.tasks_successful,
            tasks_failed: totals.tasks_failed,
            tokens_input: totals.tokens_input,
            tokens_output: totals.tokens_output,
            tokens_total: totals.tokens_total(),
            tool_calls: totals.tool_calls,
            created: self.run.created,
            updated: Utc::now(),
            link_plan: self.link_plan,
            owner: self.run.owner.clone(),
        }
    }

    /// Sends pending state to the writer unless an `Enqueue` is already in flight; rows that
    /// arrive meanwhile go with the next one.
    fn send_if_idle(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight || (!self.dirty && self.outbox.is_empty()) {
            return;
        }
        let message = Enqueue {
            executions: vec![self.execution_row()],
            tasks: std::mem::take(&mut self.outbox),
            urgent: std::mem::take(&mut self.urgent),
        };
        let rows = message.tasks.len() + 1;
        self.dirty = false;
        self.link_plan = false;
        self.in_flight = true;
        self.metrics.writer_mailbox.fetch_add(1, Ordering::Relaxed);
        // `send`, not `do_send`: it honours the writer's mailbox bound.
        let request = self.writer.send(message);
        ctx.spawn(request.into_actor(self).map(move |outcome, act, ctx| {
            act.in_flight = false;
            if outcome.is_err() {
                // Only after shutdown has stopped the writer; counted, never silent.
                act.metrics.writer_mailbox.fetch_sub(1, Ordering::Relaxed);
                act.metrics
                    .rows_dropped
                    .fetch_add(rows as u64, Ordering::Relaxed);
                tracing::error!(execution_id = %act.run.id, rows, "writer gone; rows not written");
            }
            act.send_if_idle(ctx);
            act.settle_if_idle(ctx);
        }));
    }

    /// With nothing left to send: answers drains, and after the final state stops the actor.
    fn settle_if_idle(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight || self.dirty || !self.outbox.is_empty() {
            return;
        }
        for waiter in self.drain_waiters.drain(..) {
            let _ = waiter.send(());
        }
        if self.ended.is_some() {
            if let Some(waiter) = self.finish_waiter.take() {
                let _ = waiter.send(Ok(self.snapshot()));
            }
            ctx.stop();
        }
    }

    fn handled(&self) {
        self.metrics.run_messages.fetch_add(1, Ordering::Relaxed);
        self.metrics.run_mailbox.fetch_sub(1, Ordering::Relaxed);
    }

    fn reject<T>(&self, error: RecordError) -> Result<T, RecordError> {
        self.metrics
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
        self.send_if_idle(ctx);
    }
}

impl Handler<RecordTask> for ExecutionActor {
    type Result = Result<(), RecordError>;

    fn handle(&mut self, msg: RecordTask, ctx: &mut Context<Self>) -> Self::Result {
        self.handled();
        if self.ended.is_some() {
            return self.reject(RecordError::RunFinished(self.run.id.clone()));
        }
        let RecordTask { row, permit } = msg;
        let contribution = Contribution::of(&row);
        let recorded = match self.counters.record(&row.task_id, contribution) {
            Ok(recorded) => recorded,
            Err(e) => return self.reject(RecordError::Invalid(e)),
        };
        let m = &self.metrics;
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
        if recorded.status_before != recorded.status_after {
            self.urgent = true;
        }
        // From here the writer accounts for the row's slot.
        permit.forget();
        self.outbox.push(row);
        self.dirty = true;
        self.send_if_idle(ctx);
        Ok(())
    }
}

impl Handler<FinishRun> for ExecutionActor {
    type Result = ResponseFuture<Result<RunSnapshot, RecordError>>;

    fn handle(&mut self, msg: FinishRun, ctx: &mut Context<Self>) -> Self::Result {
        self.handled();
        if self.ended.is_some() {
            let error = self.reject(RecordError::RunFinished(self.run.id.clone()));
            return Box::pin(async move { error });
        }
        if msg.end < self.run.start_time {
            let error = self.reject(RecordError::Invalid(ModelError::EndBeforeStart {
                start: self.run.start_time,
                end: msg.end,
            }));
            return Box::pin(async move { error });
        }
        let status = self.counters.final_status(msg.cancelled);
        self.ended = Some((status, msg.end));
        self.dirty = true;
        self.urgent = true;
        self.link_plan = true;
        let snapshot = self.snapshot();
        let _ = self.run.final_snapshot.set(snapshot);
        self.run.ended.store(true, Ordering::Release);
        self.metrics.run_finished(status);
        tracing::debug!(execution_id = %self.run.id, status = %status, "run finished");
        let (tx, rx) = oneshot::channel();
        self.finish_waiter = Some(tx);
        self.send_if_idle(ctx);
        self.settle_if_idle(ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(RecordError::ShuttingDown)) })
    }
}

impl Handler<GetSnapshot> for ExecutionActor {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Context<Self>) -> Self::Result {
        self.handled();
        MessageResult(self.snapshot())
    }
}

impl Handler<Drain> for ExecutionActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) -> Self::Result {
        self.handled();
        let (tx, rx) = oneshot::channel();
        self.drain_waiters.push(tx);
        self.send_if_idle(ctx);
        self.settle_if_idle(ctx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
