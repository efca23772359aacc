//! Messages an [`ExecutionActor`](super::ExecutionActor) handles.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::Message;
use chrono::{DateTime, Utc};
use tokio::sync::OwnedSemaphorePermit;

use super::{RunShared, RunSnapshot};
use crate::error::RecordError;
use crate::rows::TaskRow;

/// Sent by a [`RunHandle`](crate::RunHandle) for each finished task, with the row already
/// built and validated on the caller's thread.
///
/// The permit is the task row's slot under `max_pending_rows`. If the actor refuses the row, or
/// stops before it handles the message, dropping the permit frees the slot; once the row is
/// accepted the writer frees it when the row is written, replaced or rejected.
///
/// Reply: `Ok(())` once counted, [`RecordError::RunFinished`] after `finish`/`cancel`,
/// [`RecordError::Invalid`] if a run total would overflow, [`RecordError::ShuttingDown`]. Most
/// results are sent without waiting for the reply (they carry an [`Unanswered`] receipt): a
/// refusal is then counted and logged, since no caller will read it.
#[derive(Message)]
#[rtype(result = "Result<(), RecordError>")]
pub(crate) struct RecordTask {
    pub(crate) row: TaskRow,
    pub(crate) permit: OwnedSemaphorePermit,
    /// Present while nobody waits for the reply.
    pub(crate) unanswered: Option<Unanswered>,
}

impl RecordTask {
    /// Someone will read the reply (or the send failed and the caller reports it): the receipt
    /// must not count the message again.
    pub(crate) fn disarm(&mut self) {
        if let Some(receipt) = self.unanswered.take() {
            receipt.settle();
        }
    }
}

/// The receipt of a result sent without waiting for the reply. A run actor stops as soon as
/// it has handled `finish`/`cancel` (and all of them stop with the aggregator), and messages
/// still in its mailbox are then dropped unhandled. The caller of such a result was told `Ok`,
/// so the receipt, dropped unsettled, is its only trace: it counts the result as rejected (and
/// as handled, for the mailbox-depth gauge) and logs it.
pub(crate) struct Unanswered(Option<Arc<RunShared>>);

impl Unanswered {
    pub(crate) fn new(run: Arc<RunShared>) -> Self {
        Self(Some(run))
    }

    /// The message reached its handler (or its sender took it back).
    pub(crate) fn settle(mut self) {
        self.0 = None;
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(run) = self.0.take() {
            run.metrics
                .rejected_messages
                .fetch_add(1, Ordering::Relaxed);
            run.metrics.run_handled.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                execution_id = %run.id,
                "a task result accepted for this run was dropped: the run ended (or runtally \
                 stopped) before its actor handled it"
            );
        }
    }
}

/// Sent by [`RunHandle::finish`](crate::RunHandle::finish) and
/// [`RunHandle::cancel`](crate::RunHandle::cancel).
///
/// Reply: the final snapshot; the final state is queued at the writer (ahead of the queue) and
/// the actor stops. [`RecordError::RunFinished`] if the run had already ended, [`RecordError::Invalid`] if
/// `end` is before the run's start.
#[derive(Message)]
#[rtype(result = "Result<RunSnapshot, RecordError>")]
pub(crate) struct FinishRun {
    pub(crate) end: DateTime<Utc>,
    pub(crate) cancelled: bool,
}

/// Sent by [`RunHandle::snapshot`](crate::RunHandle::snapshot). Reply: the counters and status
/// as the actor holds them now.
#[derive(Message)]
#[rtype(result = "RunSnapshot")]
pub(crate) struct GetSnapshot;

/// Sent by `Aggregator::flush` and `shutdown` to every live run. Reply: `()` once every message
/// sent to the actor before it is handled, so every row it accepted is at the writer.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Drain;
