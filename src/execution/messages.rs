//! Messages an [`ExecutionActor`](super::ExecutionActor) handles.

use actix::Message;
use chrono::{DateTime, Utc};

use super::RunSnapshot;
use crate::error::RecordError;
use crate::rows::TaskRow;

/// Sent by a [`RunHandle`](crate::RunHandle) when a result goes into its run's quiet
/// [queue](super::results): take and count everything queued. Reply: none (callers were told
/// `Ok` when their result was queued; refusals are counted and logged).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TakeResults;

/// Sent by a [`RunHandle`](crate::RunHandle) for a result whose sender waits for the answer:
/// its run's queue was full (backpressure), or a run total may pass Bolt's range (an exact
/// answer). The row is built and validated on the caller's thread.
///
/// The permit is the task row's slots under `max_pending_rows` and `max_pending_bytes`. If the actor refuses the row, or
/// stops before it handles the message, dropping the permit frees the slot; once the row is
/// accepted the writer frees it when the row is written, replaced or rejected.
///
/// Reply: `Ok(())` once counted, [`RecordError::RunFinished`] after `finish`/`cancel`,
/// [`RecordError::Invalid`] if a run total would overflow, [`RecordError::ShuttingDown`].
#[derive(Message)]
#[rtype(result = "Result<(), RecordError>")]
pub(crate) struct RecordTask {
    pub(crate) row: TaskRow,
    pub(crate) permit: crate::slots::Slot,
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
