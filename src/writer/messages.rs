//! Messages the [`DbWriterActor`](super::DbWriterActor) handles.

use std::time::Instant;

use actix::Message;
use chrono::{DateTime, Utc};

use crate::error::{FlushError, StoreError};
use crate::rows::WriteBatch;

/// Sent by `Aggregator::flush` once every run actor has drained (rows themselves arrive through
/// the writer's [`Inbox`](super::inbox::Inbox), announced by a [`Ring`](super::inbox::Ring)).
///
/// Reply: `Ok(())` when every row pending at the time of the message is written in every lane;
/// [`FlushError::Rejected`] if some were refused by the database and reported instead;
/// [`FlushError::ShuttingDown`] if a shutdown deadline left rows unwritten meanwhile.
#[derive(Message)]
#[rtype(result = "Result<(), FlushError>")]
pub(crate) struct Flush;

/// Sent once by `Aggregator::start`: the first connection attempt and the schema.
///
/// Reply: the first attempt's outcome. A retriable failure (server unreachable) leaves the
/// writer retrying in the background; a permanent one (credentials, URI) is final.
/// `None`: the writer stopped before the first attempt ended (runtally is going away, the
/// database's state is unknown).
#[derive(Message)]
#[rtype(result = "Option<Result<(), StoreError>>")]
pub(crate) struct Connect;

/// Sent once by `Aggregator::shutdown` after every run actor has drained; closes the inbox.
///
/// Reply: once everything pending is written, or at `deadline` (writes in flight are abandoned
/// then) with what was not. A second `Shutdown` gets an empty reply at once.
#[derive(Message)]
#[rtype(result = "Drained")]
pub(crate) struct Shutdown {
    pub(crate) deadline: Instant,
}

/// Sent by `Aggregator::sync_buffer` once every run actor has drained.
///
/// Reply: once every delivery taken so far is appended to the disk buffer, the receiver of the
/// buffer thread's sync (awaited by the caller); an error if some are in memory only, or if
/// there is no buffer.
#[derive(Message)]
#[rtype(result = "Result<BufferSynced, crate::error::SyncBufferError>")]
pub(crate) struct SyncBuffer;

/// The buffer thread's answer to a sync, to await.
pub(crate) type BufferSynced =
    tokio::sync::oneshot::Receiver<Result<(), crate::error::BufferError>>;

/// What the writer did with its last rows.
#[derive(Debug, Default)]
pub(crate) struct Drained {
    /// Rows the store never confirmed and the disk buffer does not hold, in write order.
    pub(crate) unwritten: Vec<WriteBatch>,
    /// Rows the store never confirmed that the disk buffer holds for the next start.
    pub(crate) buffered_rows: u64,
    /// Why the disk buffer could not be closed cleanly, if it could not.
    pub(crate) buffer_error: Option<crate::error::BufferError>,
}

/// Sent by `Aggregator::reconcile_stale`; runs the reconciliation on the writer's connection.
///
/// Reply: the ids of the runs marked `failed` with `error = 'interrupted'`.
#[derive(Message)]
#[rtype(result = "Result<Vec<String>, StoreError>")]
pub(crate) struct ReconcileStale {
    pub(crate) cutoff: DateTime<Utc>,
    pub(crate) except_owner: Option<String>,
    pub(crate) now: DateTime<Utc>,
}
