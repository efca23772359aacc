//! The writer: one [`DbWriterActor`] per aggregator batches every run's rows into store writes.
//!
//! Rows wait in [`PendingWrites`](batch::PendingWrites), where they coalesce. A flush seals them
//! into chunks, each written as one batch (a store commits a chunk's task rows no later than
//! its execution rows). Every run belongs to one of `write_lanes`
//! lanes (by a hash of its id, [`lanes`]); a lane writes one chunk at a time, in order, and lanes write in
//! parallel. That keeps each run's writes in sequence (a task never reaches the store before its
//! execution node, and versions keep a newer state from being overwritten) while several
//! transactions use the database at once.
//!
//! Flushes start when pending task rows reach `max_batch_rows` or `max_batch_bytes`, when
//! `flush_interval` passes, on `flush()` and at shutdown. A run's urgent status change (it
//! failed or recovered) does not wait for any of that, nor for its lane's queue: a status-only
//! mark of it (a whole copy once none of its task rows is outstanding) is the lane's next
//! transaction after the one in flight (unless urgent copies have kept a due queue waiting for a
//! whole `flush_interval`: then the queue goes once, so a stream of urgent states cannot starve
//! it). A final state never goes ahead of its run's task rows: it seals the open rows at once and
//! is written in the transaction with the run's last task rows.
//!
//! Lanes overlap only while every write in flight is a chunk of at least `min_overlap_bytes`
//! ([`lanes::may_overlap`]); smaller writes take turns, one at a time. Large outputs gain from
//! the overlap (the database parses one batch while the next is sent); small ones would only
//! conflict on ArcadeDB, whose retries stretch latency tails (see BENCHMARKS.md). A small chunk
//! takes the other idle lanes' chunks with it, sealed whether due or not, as far as they fit in
//! the batch bounds ([`lanes::Lane::join`]): small rows cost one transaction per flush however
//! many lanes there are, as with one lane.
//!
//! With a disk buffer ([`spool`], `crate::buffer`), every delivery is appended to the buffer
//! before its rows enter the pending writes, so nothing reaches the database that is not on
//! disk first; with `WhenFull::Overflow`, deliveries that would take memory past half the
//! senders' budget go to the buffer only and are read back in order as the lanes drain.
//!
//! A chunk that fails with a retriable error is sent again, with backoff, until it succeeds or a
//! shutdown deadline passes. One that fails permanently is split in halves until the rows the
//! database refuses are isolated; every other row is written and the refused ones are reported
//! (metrics, the host's rejection handler, an ERROR log). Nothing is dropped silently.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{oneshot, watch};

use crate::buffer::{DiskBuffer, Opened, Reply, Request};
use crate::error::{chain, BufferError, FlushError, StoreError, SyncBufferError};
use crate::metrics::{FlushReason, Metrics};
use crate::model::ExecutionId;
use crate::registry::LiveRuns;
use crate::rows::{ExecutionRow, Heartbeat, TaskRow, WriteBatch};
use crate::slots::Slots;
use crate::store::GraphStore;

pub(crate) mod batch;
pub(crate) mod lanes;
pub(crate) mod messages;
pub(crate) mod spool;

use crate::inbox::{Delivery, Inbox, Ring};
use crate::rejected::RejectedWrite;
use crate::retry::{decide, Decision, RetryPolicy};
use batch::{split, Chunk, ChunkLimits};
use lanes::{lane_of, may_overlap, Busy, Lane, Next, Schedule};
use messages::{BufferSynced, Connect, Drained, Flush, ReconcileStale, Shutdown, SyncBuffer};
use spool::{Charge, Spool};

/// The writer's settings (taken from `AggregatorConfig`).
#[derive(Clone)]
pub(crate) struct WriterSettings {
    pub(crate) max_batch_rows: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) write_lanes: usize,
    pub(crate) min_overlap_bytes: usize,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) flush_interval: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) on_rejected: Option<crate::rejected::RejectedHandler>,
    /// The senders' byte budget (`row_budget`) and row bound, which the disk buffer's
    /// overflow and read-back keep memory within.
    pub(crate) row_budget: usize,
    pub(crate) max_pending_rows: usize,
    /// `WhenFull::Overflow`: rows that do not fit go to the disk buffer only.
    pub(crate) overflow: bool,
}

/// How often the writer publishes through the `metrics` facade.
#[cfg(feature = "metrics")]
const METRICS_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

impl WriterSettings {
    fn limits(&self) -> ChunkLimits {
        ChunkLimits {
            rows: self.max_batch_rows,
            bytes: self.max_batch_bytes,
        }
    }
}

/// Outcome of writing one chunk.
#[derive(Default)]
struct ChunkOutcome {
    written: Vec<WriteBatch>,
    rejected: Vec<RejectedWrite>,
    unwritten: Vec<WriteBatch>,
}

/// One lane's chunk in a write: its lane and seal, and how many execution and task rows of
/// the write's batch are its (they follow the previous part's).
#[derive(Debug, Clone, Copy)]
struct Part {
    lane: usize,
    seal: u64,
    executions: usize,
    tasks: usize,
}

struct FlushWaiter {
    /// With a disk buffer: the last record the flush covers, until it is in the lanes (then
    /// the lanes are sealed and `seals` set).
    after_seq: Option<u64>,
    /// Per lane, the last seal the flush must see settled.
    seals: Vec<u64>,
    /// Rows refused since the flush began in the chunks it covers (its seals or earlier): a
    /// concurrent flush's refused rows are not this one's.
    rejected: u64,
    /// Rows given up (shutdown deadline) before the flush began.
    unwritten_before: u64,
    reply: oneshot::Sender<Result<(), FlushError>>,
}

/// The single writer of an aggregator. Runs on its own arbiter.
pub(crate) struct DbWriterActor {
    store: Arc<dyn GraphStore>,
    settings: WriterSettings,
    inbox: Arc<Inbox>,
    /// The inbox's previous buffer, swapped back in empty so neither side reallocates.
    spare: Vec<Delivery>,
    lanes: Vec<Lane>,
    /// The lane `pump` considers first: the one after the lane whose write finished last.
    next_lane: usize,
    schema_ready: bool,
    waiters: Vec<FlushWaiter>,
    /// Rows given up at the shutdown deadline, over the writer's life.
    rows_unwritten: u64,
    /// Finished runs whose final state is durable but whose task rows are not all settled.
    finished_durable: HashSet<ExecutionId>,
    permits: Arc<Slots>,
    registry: Arc<dyn LiveRuns>,
    metrics: Arc<Metrics>,
    /// Shutdown deadline, watched by the writes in flight so they stop retrying in time.
    deadline: watch::Sender<Option<Instant>>,
    /// Answered with what was not written, and the disk buffer's close (if it has one).
    shutdown: Option<oneshot::Sender<(Drained, Option<BufferClosing>)>>,
    unwritten: Vec<WriteBatch>,
    /// The disk buffer, if configured.
    buffer: Option<Buffering>,
}

/// The disk buffer thread's answer to `Close`.
type BufferClosing = oneshot::Receiver<Result<(), BufferError>>;

/// The disk buffer, from the writer's side.
struct Buffering {
    disk: DiskBuffer,
    spool: Spool,
    /// The buffer thread's replies, until `started` makes them a stream.
    replies: Option<tokio::sync::mpsc::UnboundedReceiver<Reply>>,
    /// `sync_buffer` callers: the last record each covers.
    syncs: Vec<(u64, oneshot::Sender<Result<BufferSynced, SyncBufferError>>)>,
}

impl DbWriterActor {
    pub(crate) fn new(
        store: Arc<dyn GraphStore>,
        settings: WriterSettings,
        inbox: Arc<Inbox>,
        permits: Arc<Slots>,
        registry: Arc<dyn LiveRuns>,
        metrics: Arc<Metrics>,
        buffer: Option<Opened>,
    ) -> Self {
        let buffer = buffer.map(|opened| {
            metrics
                .buffer_backlog_rows
                .store(opened.recovery.rows as i64, Relaxed);
            Buffering {
                disk: opened.buffer,
                spool: Spool::new(
                    opened.next_seq,
                    opened.settled,
                    opened.recovery.records > 0,
                    opened.recovery.rows,
                ),
                replies: Some(opened.replies),
                syncs: Vec::new(),
            }
        });
        let lanes = (0..settings.write_lanes.max(1))
            .map(|_| Lane::new(permits.cap()))
            .collect();
        Self {
            store,
            settings,
            inbox,
            spare: Vec::new(),
            lanes,
            next_lane: 0,
            schema_ready: false,
            waiters: Vec::new(),
            rows_unwritten: 0,
            finished_durable: HashSet::new(),
            permits,
            registry,
            metrics,
            deadline: watch::channel(None).0,
            shutdown: None,
            unwritten: Vec::new(),
            buffer,
        }
    }

    fn lane(&mut self, id: &ExecutionId) -> &mut Lane {
        let i = lane_of(id, self.lanes.len());
        &mut self.lanes[i]
    }

    /// Takes everything in the inbox: into the lanes' pending writes (where rows coalesce), or,
    /// with a disk buffer, to the buffer first. Returns whether anything urgent or a full batch
    /// arrived in the lanes.
    fn take_inbox(&mut self) -> bool {
        self.inbox.take_into(&mut self.spare);
        let mut deliveries = std::mem::take(&mut self.spare);
        let wake = if self.buffer.is_some() {
            self.spool_all(&mut deliveries);
            false
        } else {
            self.accept_all(deliveries.drain(..))
        };
        self.spare = deliveries;
        wake
    }

    /// Puts deliveries into the lanes' pending writes. Returns whether anything urgent or a full
    /// batch arrived.
    fn accept_all(&mut self, deliveries: impl IntoIterator<Item = Delivery>) -> bool {
        let mut wake = false;
        let mut replaced = 0;
        let mut replaced_bytes = 0;
        let limits = self.settings.limits();
        for delivery in deliveries {
            match delivery {
                Delivery::Run {
                    execution,
                    tasks,
                    urgent,
                } => {
                    let terminal = execution.is_terminal();
                    let lane = self.lane(&execution.id);
                    let pushed = lane.pending.push([execution], tasks, urgent);
                    replaced += pushed.replaced;
                    replaced_bytes += pushed.replaced_bytes;
                    if terminal {
                        lane.final_arrived();
                    }
                    wake |= urgent || lane.pending.open_full(limits);
                }
                Delivery::Restore(batch) => {
                    for execution in batch.executions {
                        let terminal = execution.is_terminal();
                        let lane = self.lane(&execution.id);
                        let pushed = lane.pending.push([execution], Vec::new(), false);
                        replaced += pushed.replaced;
                        replaced_bytes += pushed.replaced_bytes;
                        if terminal {
                            lane.final_arrived();
                        }
                    }
                    for task in batch.tasks {
                        let lane = self.lane(&task.execution_id);
                        let pushed = lane.pending.push([], vec![task], false);
                        replaced += pushed.replaced;
                        replaced_bytes += pushed.replaced_bytes;
                        wake |= lane.pending.open_full(limits);
                    }
                }
            }
        }
        // A replaced row will never be written: its slots are free now.
        self.permits.release(replaced, replaced_bytes);
        wake
    }

    /// What a delivery holds against the senders' budget.
    fn charge(&self, delivery: &Delivery) -> Charge {
        let (tasks, executions) = match delivery {
            Delivery::Run { tasks, .. } => (tasks.as_slice(), 1),
            Delivery::Restore(batch) => (batch.tasks.as_slice(), batch.executions.len()),
        };
        Charge {
            tasks: tasks.len(),
            bytes: tasks.iter().map(|t| self.permits.charge(t)).sum(),
            rows: tasks.len() + executions,
        }
    }

    /// Numbers deliveries and sends them to the disk buffer: kept ones come back to go into the
    /// lanes once on disk; backlog ones stay there until read back. A delivery goes to the
    /// backlog if one exists (order), or, with overflow, if memory would pass half the senders'
    /// budget.
    fn spool_all(&mut self, deliveries: &mut Vec<Delivery>) {
        if deliveries.is_empty() {
            return;
        }
        let charges: Vec<Charge> = deliveries.iter().map(|d| self.charge(d)).collect();
        let (mut rows, mut memory) = self.memory();
        let half = self.settings.row_budget / 2;
        let half_rows = self.settings.max_pending_rows / 2;
        let overflow = self.settings.overflow;
        let Some(buffer) = self.buffer.as_mut() else {
            return;
        };
        memory += buffer.spool.kept_bytes;
        rows += buffer.spool.kept_rows;
        let (mut kept, mut kept_first, mut kept_bytes) = (Vec::new(), 0, 0);
        let (mut backlog, mut backlog_first) = (Vec::new(), 0);
        let piece_bytes = self.settings.row_budget / 4;
        for (delivery, charge) in deliveries.drain(..).zip(charges) {
            let full = memory + charge.bytes > half || rows + charge.rows > half_rows;
            let to_disk = buffer.spool.backlog || (overflow && full);
            if to_disk {
                // Records small enough to be read back a few at a time (see `maybe_load`).
                for (piece, charge) in split_delivery(delivery, charge, piece_bytes, &self.permits)
                {
                    let seq = buffer.spool.assign();
                    let finishes = finished_runs(&piece);
                    if buffer.spool.backlog_record(seq, charge, finishes) {
                        self.metrics.overflow_events.fetch_add(1, Relaxed);
                        tracing::info!(
                            pending_bytes = memory,
                            "memory is half full; new rows go to the disk buffer until the \
                             database catches up"
                        );
                    }
                    if backlog.is_empty() {
                        backlog_first = seq;
                    }
                    backlog.push(piece);
                }
            } else {
                let seq = buffer.spool.assign();
                if kept.is_empty() {
                    kept_first = seq;
                }
                kept.push(delivery);
                memory += charge.bytes;
                rows += charge.rows;
                kept_bytes += charge.bytes;
            }
        }
        if !kept.is_empty() {
            self.send_kept(kept_first, kept, kept_bytes);
        }
        if !backlog.is_empty() {
            self.send_backlog(backlog_first, backlog);
        }
    }

    fn send_kept(&mut self, first: u64, deliveries: Vec<Delivery>, bytes: usize) {
        let rows: usize = deliveries.iter().map(|d| self.charge(d).rows).sum();
        let Some(buffer) = self.buffer.as_mut() else {
            return;
        };
        let request = Request::Append {
            first,
            deliveries,
            backlog: false,
        };
        match buffer.disk.send(request) {
            Ok(()) => {
                buffer.spool.kept_in_flight += 1;
                buffer.spool.kept_bytes += bytes;
                buffer.spool.kept_rows += rows;
            }
            Err(Request::Append { deliveries, .. }) => {
                // The buffer's thread is gone: the rows are written from memory only.
                let last = first + deliveries.len() as u64 - 1;
                buffer.spool.kept(last, rows as u64);
                self.accept_all(deliveries);
            }
            Err(_) => {}
        }
    }

    fn send_backlog(&mut self, first: u64, deliveries: Vec<Delivery>) {
        let rows: u64 = deliveries.iter().map(|d| self.charge(d).rows as u64).sum();
        let Some(buffer) = self.buffer.as_mut() else {
            return;
        };
        // One backlog append at a time, in record order: a failed one is sent again before
        // anything after it.
        buffer.spool.keep_for_retry(first, deliveries, rows);
        // After a failure, the timer resends (not every new delivery).
        if !buffer.spool.failed {
            self.send_queued_backlog();
        }
    }

    /// Sends every queued backlog delivery as one append, if none is in flight.
    fn send_queued_backlog(&mut self) {
        let Some(buffer) = self.buffer.as_mut() else {
            return;
        };
        if !buffer.spool.may_send_queue() {
            return;
        }
        let Some((first, deliveries)) = buffer.spool.take_retry() else {
            return;
        };
        let rows: u64 = deliveries.iter().map(|d| charge_rows(d) as u64).sum();
        let request = Request::Append {
            first,
            deliveries,
            backlog: true,
        };
        match buffer.disk.send(request) {
            Ok(()) => buffer.spool.backlog_sent(),
            Err(Request::Append { deliveries, .. }) => {
                buffer.spool.append_failed(first, deliveries, rows)
            }
            Err(_) => {}
        }
    }

    /// Handles the disk buffer's answer to an append or a read-back.
    fn buffer_replied(&mut self, reply: Reply, ctx: &mut Context<Self>) {
        let mut wake = false;
        let mut empty_load = false;
        match reply {
            Reply::Appended {
                last,
                backlog: false,
                deliveries,
                error,
                ..
            } => {
                let (bytes, rows) = deliveries.iter().fold((0, 0), |(b, r), d| {
                    let c = self.charge(d);
                    (b + c.bytes, r + c.rows)
                });
                if let Some(buffer) = self.buffer.as_mut() {
                    buffer.spool.kept_in_flight = buffer.spool.kept_in_flight.saturating_sub(1);
                    buffer.spool.kept_bytes = buffer.spool.kept_bytes.saturating_sub(bytes);
                    buffer.spool.kept_rows = buffer.spool.kept_rows.saturating_sub(rows);
                    // A failed append (logged and counted by the buffer): the rows are
                    // written from memory, and a crash before that would lose them.
                    let unlogged = if error.is_some() { rows as u64 } else { 0 };
                    buffer.spool.kept(last, unlogged);
                    buffer.spool.answered = buffer.spool.answered.max(last);
                }
                wake = self.accept_all(deliveries);
            }
            Reply::Appended {
                first,
                last,
                backlog: true,
                deliveries,
                error,
            } => {
                let rows: u64 = deliveries.iter().map(|d| self.charge(d).rows as u64).sum();
                let Some(buffer) = self.buffer.as_mut() else {
                    return;
                };
                buffer.spool.backlog_answered();
                buffer.spool.answered = buffer.spool.answered.max(last);
                match error {
                    None => {
                        // On disk: their slots are free for new results, and runs whose final
                        // state is there leave the registry (else a long backlog would keep
                        // every run it finishes in memory).
                        let (freed, finished) = buffer.spool.backlog_on_disk(last);
                        self.permits.release(freed.tasks, freed.bytes);
                        for run in &finished {
                            self.registry.remove_finished(run);
                        }
                        // What queued behind it goes next (a failed one waits for the timer).
                        self.send_queued_backlog();
                    }
                    Some(_) => buffer.spool.append_failed(first, deliveries, rows),
                }
            }
            Reply::Loaded { loaded, error } => {
                if let Some(error) = error {
                    tracing::warn!(error = %chain(&error), "disk buffer: read-back failed; retrying");
                }
                let mut tasks = 0;
                let mut bytes = 0;
                let mut rows = 0;
                for (_, batch) in &loaded.records {
                    tasks += batch.tasks.len();
                    bytes += batch
                        .tasks
                        .iter()
                        .map(|t| self.permits.charge(t))
                        .sum::<usize>();
                    rows += batch.len();
                }
                // In memory now: they hold slots like any pending row (taken, not waited for).
                self.permits.take(tasks, bytes);
                let last = loaded.records.last().map(|(seq, _)| *seq);
                empty_load = last.is_none();
                let mut from_memory = None;
                if let Some(buffer) = self.buffer.as_mut() {
                    if buffer.spool.loaded(last, rows as u64, loaded.caught_up) {
                        tracing::info!("disk buffer's backlog read back; new rows stay in memory");
                    }
                    from_memory = buffer.spool.give_up_on_disk(loaded.caught_up);
                }
                wake = self.accept_all(
                    loaded
                        .records
                        .into_iter()
                        .map(|(_, batch)| Delivery::Restore(batch)),
                ) || last.is_some();
                if let Some((_, deliveries)) = from_memory {
                    // After what the disk holds, in order: rows the disk refused to take.
                    tracing::warn!(
                        deliveries = deliveries.len(),
                        "the disk buffer refuses appends and its backlog is read back; rows \
                         waiting for disk space are written from memory"
                    );
                    wake |= self.accept_all(deliveries);
                }
            }
        }
        if let Some(buffer) = &self.buffer {
            self.metrics
                .buffer_backlog_rows
                .store(buffer.spool.backlog_rows as i64, Relaxed);
        }
        self.answer_syncs();
        if wake {
            self.pump(ctx);
        } else {
            // Not after a read-back that found nothing it could take: the next write done (or
            // the timer) asks again, once the lanes have room.
            if !empty_load {
                self.maybe_load();
            }
            self.finish_shutdown_if_done();
        }
        self.answer_waiters();
    }

    /// Answers `sync_buffer` callers whose records have all been appended (or failed to be):
    /// with the receiver of a sync of the buffer, or with the rows in memory only.
    fn answer_syncs(&mut self) {
        let Some(buffer) = self.buffer.as_mut() else {
            return;
        };
        let mut still = Vec::new();
        for (seq, reply) in buffer.syncs.drain(..) {
            match buffer.spool.synced_through(seq) {
                None => still.push((seq, reply)),
                Some(0) => {
                    let (done, synced) = oneshot::channel();
                    let answer = match buffer.disk.send(Request::Sync { done }) {
                        Ok(()) => Ok(synced),
                        Err(_) => Err(SyncBufferError::Buffer(BufferError::Stopped)),
                    };
                    let _ = reply.send(answer);
                }
                Some(rows) => {
                    let _ = reply.send(Err(SyncBufferError::NotOnDisk { rows }));
                }
            }
        }
        buffer.syncs = still;
    }

    /// Reads back the next backlog records once the lanes (with what is on its way into them)
    /// have drained to a quarter of the senders' budget, as many as fit in half of it and in
    /// the slots free now: the other half stays free for senders, whose rows go to the disk
    /// meanwhile. A record larger than that is read back alone, once the lanes are empty.
    /// Nothing is read back while the database is down: it would only fill memory.
    fn maybe_load(&mut self) {
        let (rows, bytes) = self.memory();
        let out_of_time = self.shutdown.is_some() && self.deadline_passed();
        let database_down = !self.schema_ready || !self.metrics.database_up.load(Relaxed);
        let budget = self.settings.row_budget;
        let (free_rows, free_bytes) = self.permits.free();
        let max_pending_rows = self.settings.max_pending_rows;
        let Some(buffer) = self.buffer.as_mut() else {
            return;
        };
        let memory = bytes + buffer.spool.kept_bytes;
        if !buffer.spool.backlog
            || buffer.spool.loading
            || out_of_time
            || database_down
            || memory > budget / 4
        {
            return;
        }
        let request = Request::Load {
            max_rows: (max_pending_rows / 2).saturating_sub(rows).min(free_rows),
            max_bytes: (budget / 2).saturating_sub(memory).min(free_bytes) as u64,
            oversize_ok: memory == 0 && buffer.spool.kept_in_flight == 0,
        };
        if buffer.disk.send(request).is_ok() {
            buffer.spool.loading = true;
        }
    }

    /// The buffer's timer work: resend failed backlog appends, note a checkpoint, tell the
    /// buffer what is durable, read back more.
    fn buffer_tick(&mut self) {
        let seals: Vec<u64> = self
            .lanes
            .iter()
            .map(|l| l.pending.last_seal() + u64::from(l.pending.has_open()))
            .collect();
        let Some(buffer) = self.buffer.as_mut() else {
            return;
        };
        // A failed backlog append is sent again once per tick (a full disk may have room now).
        if buffer.spool.failed {
            self.send_queued_backlog();
        }
        let Some(buffer) = self.buffer.as_mut() else {
            return;
        };
        buffer.spool.checkpoint(|| seals);
        self.settle_durable();
        self.maybe_load();
    }

    /// Tells the buffer which records are durable in the database (checkpoints whose chunks
    /// every lane has settled). Never after rows were given up: those stay on disk.
    fn settle_durable(&mut self) {
        if self.rows_unwritten > 0 {
            return;
        }
        let last_seal: Vec<u64> = self.lanes.iter().map(|l| l.pending.last_seal()).collect();
        let oldest = self.oldest_outstanding();
        let Some(buffer) = self.buffer.as_mut() else {
            return;
        };
        if let Some(through) = buffer.spool.durable(&last_seal, &oldest) {
            // A buffer thread gone is reported at shutdown; its records stay on disk.
            let _ = buffer.disk.send(Request::Settle { through });
        }
    }

    /// Rows and bytes in the lanes: pending, and in writes in flight.
    fn memory(&self) -> (usize, usize) {
        let (mut rows, mut bytes) = (0, 0);
        for lane in &self.lanes {
            if let Some(Busy::Chunk {
                rows: r, bytes: b, ..
            }) = lane.busy()
            {
                rows += r;
                bytes += b;
            }
            rows += lane.pending.pending_rows();
            bytes += lane.pending.pending_bytes();
        }
        (rows, bytes)
    }

    /// Publishes the aggregator's metrics through the `metrics` facade.
    #[cfg(feature = "metrics")]
    fn publish_metrics(&self) {
        crate::metrics::facade::publish(&self.metrics.snapshot(self.inbox.len()));
    }

    /// Keeps rows the store will not confirm (the shutdown deadline passed) for the report.
    fn give_up(&mut self, batches: impl IntoIterator<Item = WriteBatch>) {
        for batch in batches {
            self.rows_unwritten += batch.len() as u64;
            self.unwritten.push(batch);
        }
    }

    fn deadline_passed(&self) -> bool {
        matches!(*self.deadline.borrow(), Some(d) if Instant::now() >= d)
    }

    /// Lane `i`'s write finished: the lane is idle, and the next pump starts after it.
    fn lane_done(&mut self, i: usize) {
        self.lanes[i].done();
        self.next_lane = (i + 1) % self.lanes.len();
    }

    /// Starts the next write of idle lanes, as long as what is in flight may be overlapped
    /// (`lanes::may_overlap`), starting from the lane after the one whose write finished last:
    /// when writes go one at a time, the lanes take turns, so none waits behind the others for
    /// more than one write each. A chunk too small to overlap takes the other idle lanes' due
    /// chunks with it, as far as they fit in the batch bounds, into one transaction: small rows
    /// cost one write per flush however many lanes there are, as with one lane.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let (n, first) = (self.lanes.len(), self.next_lane);
        let mut group: Vec<(usize, Chunk)> = Vec::new();
        for i in (0..n).map(|k| (first + k) % n) {
            if group.is_empty() {
                let in_flight = self.lanes.iter().filter_map(Lane::busy);
                if !may_overlap(in_flight, self.settings.min_overlap_bytes) {
                    break;
                }
                if let Some(small) = self.pump_lane(i, ctx) {
                    group.push((i, small));
                }
            } else {
                self.join_lane(i, &mut group);
            }
        }
        if !group.is_empty() {
            self.write(group, ctx);
        }
        self.maybe_load();
        self.finish_shutdown_if_done();
        self.update_pending_gauge();
    }

    /// Starts the lane's next write if it is idle: urgent copies first, then its queue, sealing
    /// open rows when a flush is due. A chunk below `min_overlap_bytes` is returned instead (with
    /// more than one lane), for other lanes to join.
    fn pump_lane(&mut self, i: usize, ctx: &mut Context<Self>) -> Option<Chunk> {
        if self.lanes[i].busy().is_some() {
            return None;
        }
        if self.shutdown.is_some() && self.deadline_passed() {
            let rows = self.lanes[i].pending.drain_all();
            self.give_up(rows);
            return None;
        }
        // Writes wait for the first successful connection.
        if !self.schema_ready {
            return None;
        }
        let schedule = self.schedule();
        match self.lanes[i].next(Instant::now(), &schedule) {
            Next::Idle => None,
            Next::Urgent(batch) => {
                self.write_urgent(i, batch, ctx);
                None
            }
            Next::Chunk { chunk, sealed } => {
                if let Some(reason) = sealed {
                    self.metrics.flushed(reason);
                }
                if self.lanes.len() > 1 && chunk.bytes < self.settings.min_overlap_bytes {
                    return Some(chunk);
                }
                self.write(vec![(i, chunk)], ctx);
                None
            }
        }
    }

    /// Adds lane `i`'s due chunk to `group` if it fits in what the group leaves of the batch
    /// bounds (`Lane::join`).
    fn join_lane(&mut self, i: usize, group: &mut Vec<(usize, Chunk)>) {
        let limits = self.settings.limits();
        let (rows, bytes) = group.iter().fold((0, 0), |(r, b), (_, c)| {
            (r + c.batch.tasks.len(), b + c.bytes)
        });
        let room = ChunkLimits {
            rows: limits.rows.saturating_sub(rows),
            bytes: limits.bytes.saturating_sub(bytes),
        };
        let schedule = self.schedule();
        let (sealed, chunk) = self.lanes[i].join(&schedule, room);
        if let Some(reason) = sealed {
            self.metrics.flushed(reason);
        }
        if let Some(chunk) = chunk {
            group.push((i, chunk));
        }
    }

    fn schedule(&self) -> Schedule {
        Schedule {
            limits: self.settings.limits(),
            flush_interval: self.settings.flush_interval,
            shutting_down: self.shutdown.is_some(),
        }
    }

    /// Sends urgent runs' newest state as the lane's next transaction, ahead of its queue: a
    /// status-only mark while some of a run's task rows are outstanding, a whole copy once none
    /// is (see `PendingWrites::urgent_copy`). The originals are still written in order with the
    /// queue; versions make it irrelevant which of the two commits last. (A run's rows go only through its own lane, so
    /// a copy never races another of the run's writes to create its node.)
    fn write_urgent(&mut self, i: usize, batch: WriteBatch, ctx: &mut Context<Self>) {
        self.metrics.flushed(FlushReason::Urgent);
        let store = Arc::clone(&self.store);
        let settings = self.settings.clone();
        let metrics = Arc::clone(&self.metrics);
        let mut deadline = self.deadline.subscribe();
        let started = Instant::now();
        let span = tracing::debug_span!(
            "urgent",
            lane = i,
            runs = ?batch.executions.iter().map(|e| e.id.as_str()).collect::<Vec<_>>()
        );
        let work = async move {
            let outcome =
                write_with_retry(&*store, &batch, &settings, &metrics, &mut deadline).await;
            (outcome, batch.executions.len(), started.elapsed())
        };
        let work = tracing::Instrument::instrument(work, span);
        ctx.spawn(
            work.into_actor(self)
                .map(move |(outcome, runs, latency), act, ctx| {
                    act.lane_done(i);
                    act.metrics.record_flush_latency(latency);
                    match outcome {
                        Ok(()) => tracing::debug!(
                            lane = i,
                            runs,
                            latency_ms = latency.as_millis() as u64,
                            "urgent states written"
                        ),
                        // Only a copy: the original goes out with the queue and is handled there.
                        Err(Failure::Permanent(e)) => tracing::warn!(
                            error = %chain(&e),
                            runs,
                            "urgent copy refused; the queue will write the state"
                        ),
                        Err(Failure::OutOfTime) => {}
                    }
                    act.pump(ctx);
                }),
        );
    }

    /// Writes these chunks (of different lanes) as one transaction.
    fn write(&mut self, chunks: Vec<(usize, Chunk)>, ctx: &mut Context<Self>) {
        let parts: Vec<Part> = chunks
            .iter()
            .map(|(lane, c)| Part {
                lane: *lane,
                seal: c.seal,
                executions: c.batch.executions.len(),
                tasks: c.batch.tasks.len(),
            })
            .collect();
        let bytes: usize = chunks.iter().map(|(_, c)| c.bytes).sum();
        let batch = batch::combine(chunks.into_iter().map(|(_, c)| c.batch));
        let store = Arc::clone(&self.store);
        let settings = self.settings.clone();
        let metrics = Arc::clone(&self.metrics);
        let deadline = self.deadline.subscribe();
        let span = tracing::debug_span!(
            "flush",
            lanes_seals = ?parts,
            executions = batch.executions.len(),
            tasks = batch.tasks.len(),
            bytes
        );
        let started = Instant::now();
        let work = async move {
            let outcome = write_isolating(&*store, batch, &settings, &metrics, deadline).await;
            (outcome, started.elapsed())
        };
        let work = tracing::Instrument::instrument(work, span);
        ctx.spawn(
            work.into_actor(self)
                .map(move |(outcome, latency), act, ctx| {
                    for part in &parts {
                        act.lane_done(part.lane);
                    }
                    act.chunk_done(&parts, outcome, latency);
                    act.pump(ctx);
                }),
        );
    }

    /// Accounts for a write of the chunks `parts`.
    fn chunk_done(&mut self, parts: &[Part], outcome: ChunkOutcome, latency: Duration) {
        self.metrics.record_flush_latency(latency);
        // Written whole, the batch is the parts' rows in order.
        let whole = outcome.written.len() == 1
            && outcome.rejected.is_empty()
            && outcome.unwritten.is_empty();
        for batch in &outcome.written {
            self.metrics.batches_written.fetch_add(1, Relaxed);
            self.metrics.record_batch_bytes(batch.weight());
            self.metrics
                .execution_rows_written
                .fetch_add(batch.executions.len() as u64, Relaxed);
            self.metrics
                .task_rows_written
                .fetch_add(batch.tasks.len() as u64, Relaxed);
            tracing::debug!(
                lanes_seals = ?parts,
                executions = batch.executions.len(),
                tasks = batch.tasks.len(),
                latency_ms = latency.as_millis() as u64,
                runs = ?batch.executions.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
                "batch written"
            );
            if whole {
                self.settle_in_order(parts, batch);
            } else {
                self.settle(parts, &batch.executions, &batch.tasks);
            }
        }
        for rejected in outcome.rejected {
            let rows = (rejected.executions.len() + rejected.tasks.len()) as u64;
            self.metrics.rows_rejected.fetch_add(rows, Relaxed);
            // A flush still waiting for the disk buffer's records to reach the lanes covers
            // everything written meanwhile.
            for waiter in self.waiters.iter_mut().filter(|w| w.after_seq.is_some()) {
                waiter.rejected += rows;
            }
            let n = self.lanes.len();
            for &Part { lane: i, seal, .. } in parts {
                let in_lane = if parts.len() == 1 {
                    rows
                } else {
                    let runs = rejected.executions.iter().map(|e| &e.id);
                    let runs = runs.chain(rejected.tasks.iter().map(|t| &t.execution_id));
                    runs.filter(|id| lane_of(id, n) == i).count() as u64
                };
                if in_lane == 0 {
                    continue;
                }
                for waiter in &mut self.waiters {
                    if waiter.seals.get(i).is_some_and(|covered| seal <= *covered) {
                        waiter.rejected += in_lane;
                    }
                }
            }
            tracing::error!(
                error = %chain(&rejected.error),
                code = rejected.error.code().unwrap_or(""),
                executions = rejected.executions.len(),
                tasks = rejected.tasks.len(),
                task_ids = ?rejected.tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
                "database refused rows; reported and skipped"
            );
            self.settle(parts, &rejected.executions, &rejected.tasks);
            if let Some(handler) = &self.settings.on_rejected {
                handler(rejected);
            }
        }
        self.give_up(outcome.unwritten);
        self.answer_waiters();
    }

    /// Settles the rows of a write of the chunks `parts` that was written whole: each part's
    /// rows are the next ones of the batch (no hashing of ids on the hot path).
    fn settle_in_order(&mut self, parts: &[Part], batch: &WriteBatch) {
        let executions: usize = parts.iter().map(|p| p.executions).sum();
        let tasks: usize = parts.iter().map(|p| p.tasks).sum();
        if parts.len() == 1 || (executions, tasks) != (batch.executions.len(), batch.tasks.len()) {
            return self.settle(parts, &batch.executions, &batch.tasks);
        }
        let (mut e, mut t) = (0, 0);
        for part in parts {
            let executions = &batch.executions[e..e + part.executions];
            let tasks = &batch.tasks[t..t + part.tasks];
            self.settle_lane(part.lane, executions.iter(), tasks.iter());
            e += part.executions;
            t += part.tasks;
        }
    }

    /// Settles rows written (or refused) by a write of the chunks `parts`, each in its lane.
    fn settle(&mut self, parts: &[Part], executions: &[ExecutionRow], tasks: &[TaskRow]) {
        if let [part] = parts {
            self.settle_lane(part.lane, executions.iter(), tasks.iter());
            return;
        }
        let n = self.lanes.len();
        for &Part { lane: i, .. } in parts {
            self.settle_lane(
                i,
                executions.iter().filter(|e| lane_of(&e.id, n) == i),
                tasks.iter().filter(|t| lane_of(&t.execution_id, n) == i),
            );
        }
    }

    /// Frees the slots of lane `i`'s settled task rows, and lets finished runs leave the
    /// registry once their final state and every task row are settled.
    fn settle_lane<'a>(
        &mut self,
        i: usize,
        executions: impl Iterator<Item = &'a ExecutionRow>,
        tasks: impl Iterator<Item = &'a TaskRow> + Clone,
    ) {
        let (count, bytes) = tasks
            .clone()
            .fold((0, 0), |(n, b), t| (n + 1, b + self.permits.charge(t)));
        if count > 0 {
            self.permits.release(count, bytes);
        }
        for run in self.lanes[i].pending.settle(tasks) {
            if self.finished_durable.remove(&run) {
                self.registry.remove_finished(&run);
            }
        }
        for row in executions.filter(|e| e.is_terminal()) {
            if self.lanes[i].pending.has_outstanding(&row.id) {
                self.finished_durable.insert(row.id.clone());
            } else {
                self.registry.remove_finished(&row.id);
            }
        }
    }

    /// The oldest seal each lane has not settled (`None`: nothing outstanding).
    fn oldest_outstanding(&self) -> Vec<Option<u64>> {
        self.lanes
            .iter()
            .map(|lane| {
                [lane.seal_in_flight(), lane.pending.oldest_queued_seal()]
                    .into_iter()
                    .flatten()
                    .min()
            })
            .collect()
    }

    fn answer_waiters(&mut self) {
        // Waiters for records not yet in the lanes (a disk buffer's backlog): once they are,
        // seal the lanes and wait for those seals like any flush.
        let in_lanes = self.buffer.as_ref().map(|b| b.spool.in_lanes);
        if self.waiters.iter().any(|w| w.after_seq.is_some()) {
            let limits = self.settings.limits();
            let mut sealed = None;
            for i in 0..self.waiters.len() {
                let ready = matches!((self.waiters[i].after_seq, in_lanes), (Some(seq), Some(now)) if now >= seq);
                if !ready {
                    continue;
                }
                let seals = sealed.get_or_insert_with(|| {
                    self.lanes
                        .iter_mut()
                        .map(|lane| {
                            if lane.pending.seal(limits).is_some() {
                                self.metrics.flushed(FlushReason::Manual);
                            }
                            lane.pending.last_seal()
                        })
                        .collect::<Vec<u64>>()
                });
                self.waiters[i].seals = seals.clone();
                self.waiters[i].after_seq = None;
            }
        }
        let oldest = self.oldest_outstanding();
        let unwritten_now = self.rows_unwritten;
        let mut still = Vec::new();
        for waiter in self.waiters.drain(..) {
            // Done when, in every lane, every chunk of its seal or an earlier one is settled.
            let done = waiter.after_seq.is_none()
                && waiter
                    .seals
                    .iter()
                    .zip(&oldest)
                    .all(|(seal, oldest)| oldest.is_none_or(|oldest| *seal < oldest));
            if done {
                // Rows given up at shutdown are not written: the flush did not succeed.
                let result = if unwritten_now > waiter.unwritten_before {
                    Err(FlushError::ShuttingDown)
                } else {
                    match waiter.rejected {
                        0 => Ok(()),
                        rows => Err(FlushError::Rejected { rows }),
                    }
                };
                let _ = waiter.reply.send(result);
            } else {
                still.push(waiter);
            }
        }
        self.waiters = still;
        self.settle_durable();
    }

    fn update_pending_gauge(&self) {
        let (rows, bytes) = self.memory();
        self.metrics.pending_rows.store(rows as i64, Relaxed);
        self.metrics.pending_bytes.store(bytes as i64, Relaxed);
    }

    fn finish_shutdown_if_done(&mut self) {
        if self.shutdown.is_none() {
            return;
        }
        let out_of_time = self.deadline_passed();
        let idle = self.lanes.iter().all(|lane| {
            lane.seal_in_flight().is_none() && (lane.pending.is_empty() || out_of_time)
        });
        // With a disk buffer: nothing on its way to or from it, and its backlog written (or
        // out of time: it stays on disk for the next start).
        let buffer_idle = self
            .buffer
            .as_ref()
            .is_none_or(|b| b.spool.idle() && (!b.spool.backlog || out_of_time));
        if !idle || !buffer_idle {
            return;
        }
        if let Some(reply) = self.shutdown.take() {
            for i in 0..self.lanes.len() {
                let rows = self.lanes[i].pending.drain_all();
                self.give_up(rows);
            }
            let mut buffered_rows = 0;
            let mut closing = None;
            if self.buffer.is_some() {
                // The durable records first, so that the buffer keeps only what is not.
                let seals: Vec<u64> = self.lanes.iter().map(|l| l.pending.last_seal()).collect();
                if let Some(buffer) = self.buffer.as_mut() {
                    buffer.spool.checkpoint(|| seals);
                }
                self.settle_durable();
            }
            if let Some(mut buffer) = self.buffer.take() {
                // Backlog appends that never succeeded (a full disk): only in memory.
                let logged = buffer.spool.all_logged();
                let never_appended = buffer.spool.drain_retry();
                if !never_appended.is_empty() {
                    let batches = never_appended.into_iter().map(|d| match d {
                        Delivery::Run {
                            execution, tasks, ..
                        } => WriteBatch::new(vec![execution], tasks),
                        Delivery::Restore(batch) => batch,
                    });
                    self.give_up(batches.collect::<Vec<_>>());
                }
                buffered_rows = buffer.spool.backlog_rows;
                if logged {
                    // Every row given up is in the buffer, which writes it at the next start.
                    let rows: usize = self.unwritten.iter().map(WriteBatch::len).sum();
                    buffered_rows += rows as u64;
                    self.unwritten.clear();
                }
                let (done, closed) = oneshot::channel();
                if buffer.disk.send(Request::Close { done }).is_ok() {
                    closing = Some(closed);
                }
            }
            #[cfg(feature = "metrics")]
            self.publish_metrics();
            let unwritten = batch::coalesce(std::mem::take(&mut self.unwritten));
            self.answer_waiters();
            let drained = Drained {
                unwritten,
                buffered_rows,
                buffer_error: None,
            };
            let _ = reply.send((drained, closing));
        }
    }

    /// Pings the store and creates the schema; on failure tries again in the background until it
    /// works. Writes wait for it. Only the first attempt's caller (`Aggregator::start`) takes a
    /// permanent error as final; afterwards any error is logged and retried, since the server may
    /// be fixed while rows wait.
    fn connect(
        &mut self,
        ctx: &mut Context<Self>,
        reply: Option<oneshot::Sender<Result<(), StoreError>>>,
    ) {
        let store = Arc::clone(&self.store);
        let timeout = self.settings.write_timeout;
        let work = async move {
            let attempt = async {
                store.ping().await?;
                store.ensure_schema().await
            };
            match tokio::time::timeout(timeout, attempt).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::timeout(timeout)),
            }
        };
        ctx.spawn(work.into_actor(self).map(move |result, act, ctx| {
            match &result {
                Ok(()) => {
                    act.schema_ready = true;
                    act.metrics.database_up.store(true, Relaxed);
                    tracing::info!("database reachable; schema in place");
                    act.pump(ctx);
                }
                Err(e) if e.is_retriable() || reply.is_none() => {
                    act.metrics.database_up.store(false, Relaxed);
                    act.metrics.write_errors.fetch_add(1, Relaxed);
                    let delay = act.settings.retry.max();
                    if e.is_retriable() {
                        tracing::warn!(error = %chain(e), retry_in_ms = delay.as_millis() as u64, "database unreachable; retrying");
                    } else {
                        tracing::error!(error = %chain(e), code = e.code().unwrap_or(""), retry_in_ms = delay.as_millis() as u64, "database refused the connection; retrying");
                    }
                    ctx.run_later(delay, |act, ctx| act.connect(ctx, None));
                    // With a shutdown deadline and no database, give up in time.
                    act.pump(ctx);
                }
                Err(e) => {
                    // The first attempt: `Aggregator::start` reports it and stops.
                    act.metrics.database_up.store(false, Relaxed);
                    tracing::error!(error = %chain(e), "database refused the connection");
                }
            }
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        }));
    }
}

impl Actor for DbWriterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Rows arrive through the inbox; messages are a doorbell and a few commands.
        ctx.set_mailbox_capacity(4096);
        // Rows may have been pushed before the doorbell was connected.
        self.take_inbox();
        if let Some(replies) = self.buffer.as_mut().and_then(|b| b.replies.take()) {
            // In order: the buffer thread answers requests one after another.
            ctx.add_stream(futures_util::stream::unfold(replies, |mut rx| async move {
                rx.recv().await.map(|reply| (reply, rx))
            }));
        }
        ctx.run_interval(self.settings.flush_interval, |act, ctx| {
            act.take_inbox();
            for lane in &mut act.lanes {
                lane.timer_fired();
            }
            act.buffer_tick();
            act.pump(ctx);
            act.answer_waiters();
        });
        #[cfg(feature = "metrics")]
        ctx.run_interval(METRICS_PUBLISH_INTERVAL, |act, _| act.publish_metrics());
        ctx.run_interval(self.settings.heartbeat_interval, |act, ctx| {
            let runs = act.registry.live_ids();
            if runs.is_empty() || act.shutdown.is_some() {
                return;
            }
            // Each run's heartbeat rides in its own lane, so lanes never touch each other's
            // nodes (which would conflict on servers with optimistic locking).
            let at = chrono::Utc::now();
            let mut per_lane = vec![Vec::new(); act.lanes.len()];
            for run in runs {
                per_lane[lane_of(&run, act.lanes.len())].push(run);
            }
            for (lane, runs) in act.lanes.iter_mut().zip(per_lane) {
                if !runs.is_empty() {
                    lane.pending.set_heartbeat(Heartbeat { at, runs });
                    lane.due_now();
                }
            }
            act.pump(ctx);
        });
    }
}

impl StreamHandler<Reply> for DbWriterActor {
    fn handle(&mut self, reply: Reply, ctx: &mut Context<Self>) {
        self.buffer_replied(reply, ctx);
    }

    /// The buffer thread ended: closed at shutdown (the writer took the buffer out then), or
    /// gone unexpectedly. Then nothing it held in flight will come back: rows are written from
    /// memory from here on, and what is on disk stays there for the next start.
    fn finished(&mut self, ctx: &mut Context<Self>) {
        let Some(buffer) = self.buffer.as_mut() else {
            return;
        };
        self.metrics.buffer_errors.fetch_add(1, Relaxed);
        tracing::error!(
            "the disk buffer's thread stopped; rows are written from memory only until restart"
        );
        buffer.spool.thread_gone();
        let stranded = buffer.spool.drain_retry();
        for (_, reply) in buffer.syncs.drain(..) {
            let _ = reply.send(Err(SyncBufferError::Buffer(BufferError::Stopped)));
        }
        if let Some(buffer) = self.buffer.take() {
            // Sends to a gone thread fail; without it, deliveries go straight to the lanes.
            drop(buffer);
        }
        if self.accept_all(stranded) {
            self.pump(ctx);
        }
    }
}

impl Handler<Ring> for DbWriterActor {
    type Result = ();

    fn handle(&mut self, _: Ring, ctx: &mut Context<Self>) {
        self.metrics.writer_messages.fetch_add(1, Relaxed);
        if self.take_inbox() {
            self.pump(ctx);
        } else {
            self.update_pending_gauge();
        }
    }
}

impl Handler<Flush> for DbWriterActor {
    type Result = ResponseFuture<Result<(), FlushError>>;

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) -> Self::Result {
        self.metrics.writer_messages.fetch_add(1, Relaxed);
        self.take_inbox();
        let limits = self.settings.limits();
        let mut seals = Vec::with_capacity(self.lanes.len());
        // With a disk buffer, records not yet in the lanes (on their way to the disk, or a
        // backlog) first: the lanes are sealed once they are in (see `answer_waiters`).
        let after_seq = self
            .buffer
            .as_ref()
            .filter(|b| !b.spool.all_in_lanes())
            .map(|b| b.spool.last_seq());
        if after_seq.is_none() {
            for lane in &mut self.lanes {
                if lane.pending.seal(limits).is_some() {
                    self.metrics.flushed(FlushReason::Manual);
                }
                seals.push(lane.pending.last_seal());
            }
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push(FlushWaiter {
            after_seq,
            seals,
            rejected: 0,
            unwritten_before: self.rows_unwritten,
            reply: tx,
        });
        self.pump(ctx);
        self.answer_waiters();
        Box::pin(async move { rx.await.unwrap_or(Err(FlushError::ShuttingDown)) })
    }
}

impl Handler<SyncBuffer> for DbWriterActor {
    type Result = ResponseFuture<Result<BufferSynced, SyncBufferError>>;

    fn handle(&mut self, _: SyncBuffer, _: &mut Context<Self>) -> Self::Result {
        self.metrics.writer_messages.fetch_add(1, Relaxed);
        self.take_inbox();
        let (tx, rx) = oneshot::channel();
        match self.buffer.as_mut() {
            Some(buffer) => {
                let seq = buffer.spool.last_seq();
                buffer.syncs.push((seq, tx));
                self.answer_syncs();
            }
            None if self.inbox.is_closed() => {
                let _ = tx.send(Err(SyncBufferError::ShuttingDown));
            }
            None => {
                let _ = tx.send(Err(SyncBufferError::NoBuffer));
            }
        }
        Box::pin(async move { rx.await.unwrap_or(Err(SyncBufferError::ShuttingDown)) })
    }
}

impl Handler<Connect> for DbWriterActor {
    type Result = ResponseFuture<Option<Result<(), StoreError>>>;

    fn handle(&mut self, _: Connect, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.connect(ctx, Some(tx));
        // A dropped reply means the writer is gone, not that the database is slow.
        Box::pin(async move { rx.await.ok() })
    }
}

impl Handler<Shutdown> for DbWriterActor {
    type Result = ResponseFuture<Drained>;

    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        self.metrics.writer_messages.fetch_add(1, Relaxed);
        if self.inbox.is_closed() {
            // `Aggregator::shutdown` sends this once; a second one must not take the first
            // one's reply (and its rows) away.
            return Box::pin(async { Drained::default() });
        }
        // Nothing new is accepted from here; whatever was pushed before is taken now.
        self.inbox.close();
        self.take_inbox();
        let (tx, rx) = oneshot::channel();
        self.shutdown = Some(tx);
        // `send_replace`, not `send`: with no write in flight there is no receiver yet, and `send`
        // would then drop the value.
        self.deadline.send_replace(Some(msg.deadline));
        // Wake up at the deadline even if nothing else happens (a database that never answers).
        let wait = msg.deadline.saturating_duration_since(Instant::now());
        ctx.run_later(wait, |act, ctx| act.pump(ctx));
        self.pump(ctx);
        Box::pin(async move {
            let Ok((mut drained, closing)) = rx.await else {
                return Drained::default();
            };
            if let Some(closing) = closing {
                // The buffer syncs and keeps what is not durable, for the next start.
                drained.buffer_error = match closing.await {
                    Ok(result) => result.err(),
                    Err(_) => Some(BufferError::Stopped),
                };
            }
            drained
        })
    }
}

impl Handler<ReconcileStale> for DbWriterActor {
    type Result = ResponseFuture<Result<Vec<String>, StoreError>>;

    fn handle(&mut self, msg: ReconcileStale, _: &mut Context<Self>) -> Self::Result {
        let store = Arc::clone(&self.store);
        let timeout = self.settings.write_timeout;
        Box::pin(async move {
            let work = store.reconcile_stale(msg.cutoff, msg.except_owner.as_deref(), msg.now);
            match tokio::time::timeout(timeout, work).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::timeout(timeout)),
            }
        })
    }
}

/// The runs a delivery finishes (those whose final state it carries).
fn finished_runs(delivery: &Delivery) -> Vec<ExecutionId> {
    match delivery {
        Delivery::Run { execution, .. } if execution.is_terminal() => vec![execution.id.clone()],
        Delivery::Run { .. } => Vec::new(),
        Delivery::Restore(batch) => batch
            .executions
            .iter()
            .filter(|e| e.is_terminal())
            .map(|e| e.id.clone())
            .collect(),
    }
}

/// Rows of both kinds a delivery holds (what its record counts).
fn charge_rows(delivery: &Delivery) -> usize {
    match delivery {
        Delivery::Run { tasks, .. } => tasks.len() + 1,
        Delivery::Restore(batch) => batch.len(),
    }
}

/// Splits a delivery into pieces whose task rows weigh at most `max_bytes` (a heavier row
/// goes alone), as a spill is restored: the first piece carries a placeholder of the run (so its
/// task rows find their execution), the last one the run's state (so the state is written
/// after every task row it counts). A delivery within the bound stays whole.
fn split_delivery(
    delivery: Delivery,
    charge: Charge,
    max_bytes: usize,
    permits: &Slots,
) -> Vec<(Delivery, Charge)> {
    if charge.bytes <= max_bytes || charge.tasks <= 1 {
        return vec![(delivery, charge)];
    }
    let (executions, tasks) = match delivery {
        Delivery::Run {
            execution, tasks, ..
        } => (vec![execution], tasks),
        Delivery::Restore(batch) => (batch.executions, batch.tasks),
    };
    let mut pieces: Vec<(Vec<TaskRow>, Charge)> = Vec::new();
    for task in tasks {
        let bytes = permits.charge(&task);
        let open = pieces
            .last()
            .is_some_and(|(_, c)| c.bytes + bytes <= max_bytes);
        if !open {
            pieces.push((Vec::new(), Charge::default()));
        }
        if let Some((rows, c)) = pieces.last_mut() {
            rows.push(task);
            *c += Charge {
                tasks: 1,
                bytes,
                rows: 1,
            };
        }
    }
    let last = pieces.len() - 1;
    let placeholders: Vec<ExecutionRow> =
        executions.iter().map(ExecutionRow::placeholder).collect();
    let mut executions = Some(executions);
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, (tasks, mut charge))| {
            let rows = if i == last {
                executions.take().unwrap_or_default()
            } else if i == 0 {
                placeholders.clone()
            } else {
                Vec::new()
            };
            charge.rows += rows.len();
            (Delivery::Restore(WriteBatch::new(rows, tasks)), charge)
        })
        .collect()
}

/// Completes when the shutdown deadline (set now or later) passes; never if none is set.
async fn deadline_reached(deadline: &mut watch::Receiver<Option<Instant>>) {
    loop {
        let limit = *deadline.borrow_and_update();
        match limit {
            Some(at) => {
                tokio::time::sleep_until(at.into()).await;
                return;
            }
            None => {
                if deadline.changed().await.is_err() {
                    // The writer is gone; nothing will set a deadline any more.
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// Why a write stopped without success.
enum Failure {
    /// The database refused the batch; a retry would fail the same way.
    Permanent(StoreError),
    /// Retriable, but the shutdown deadline came first.
    OutOfTime,
}

/// Writes a chunk; on a permanent error splits it until the refused rows are isolated.
async fn write_isolating(
    store: &dyn GraphStore,
    batch: WriteBatch,
    settings: &WriterSettings,
    metrics: &Metrics,
    mut deadline: watch::Receiver<Option<Instant>>,
) -> ChunkOutcome {
    let mut outcome = ChunkOutcome::default();
    // Depth-first, left half first, so rows keep their order.
    let mut stack = vec![batch];
    while let Some(batch) = stack.pop() {
        match write_with_retry(store, &batch, settings, metrics, &mut deadline).await {
            Ok(()) => outcome.written.push(batch),
            Err(Failure::OutOfTime) => {
                outcome.unwritten.push(batch);
                outcome.unwritten.extend(stack.drain(..).rev());
            }
            Err(Failure::Permanent(error)) => {
                let bytes = batch.weight();
                match split(batch) {
                    Ok((left, right)) => {
                        if error.is_too_large() {
                            // Not the rows' fault: halve by bytes until each half fits.
                            metrics.oversize_splits.fetch_add(1, Relaxed);
                            tracing::warn!(
                                error = %chain(&error),
                                bytes,
                                rows = left.len() + right.len(),
                                "write too large for the server; splitting it by bytes"
                            );
                        } else {
                            tracing::warn!(
                                error = %chain(&error),
                                code = error.code().unwrap_or(""),
                                rows = left.len() + right.len(),
                                "write refused; splitting the batch to isolate the refused rows"
                            );
                        }
                        stack.push(right);
                        stack.push(left);
                    }
                    Err(single) => {
                        // Placeholders are copies of a state written (or refused) on its own.
                        let executions: Vec<ExecutionRow> = single
                            .executions
                            .into_iter()
                            .filter(|e| e.write.is_state())
                            .collect();
                        if executions.is_empty() && single.tasks.is_empty() {
                            tracing::warn!(
                                error = %chain(&error),
                                "placeholder refused; its run's state is written on its own"
                            );
                        } else {
                            outcome.rejected.push(RejectedWrite {
                                executions,
                                tasks: single.tasks,
                                error,
                            });
                        }
                    }
                }
            }
        }
    }
    outcome
}

/// Sends one batch until it is written, fails permanently, or the shutdown deadline passes.
async fn write_with_retry(
    store: &dyn GraphStore,
    batch: &WriteBatch,
    settings: &WriterSettings,
    metrics: &Metrics,
    deadline: &mut watch::Receiver<Option<Instant>>,
) -> Result<(), Failure> {
    let mut attempt = 0u32;
    loop {
        let limit = *deadline.borrow();
        let budget = match limit {
            Some(d) => settings
                .write_timeout
                .min(d.saturating_duration_since(Instant::now())),
            None => settings.write_timeout,
        };
        if budget.is_zero() {
            return Err(Failure::OutOfTime);
        }
        // The budget is fixed now, but a shutdown deadline may be set while the write is in
        // flight: stop at whichever comes first.
        let write = tokio::time::timeout(budget, store.write(batch));
        let result = tokio::select! {
            result = write => match result {
                Ok(result) => result,
                Err(_) => Err(StoreError::timeout(budget)),
            },
            () = deadline_reached(deadline) => return Err(Failure::OutOfTime),
        };
        let error = match result {
            Ok(()) => {
                metrics.database_up.store(true, Relaxed);
                return Ok(());
            }
            Err(error) => error,
        };
        metrics.write_errors.fetch_add(1, Relaxed);
        if error.is_retriable() {
            metrics.database_up.store(false, Relaxed);
        }
        let limit = *deadline.borrow();
        match decide(
            &settings.retry,
            &error,
            attempt,
            fastrand::f64(),
            Instant::now(),
            limit,
        ) {
            Decision::Retry(delay) => {
                metrics.retries.fetch_add(1, Relaxed);
                if error.is_not_a_leader()
                    && !error.was_rerouted()
                    && !metrics.not_a_leader_logged.swap(true, Relaxed)
                {
                    // Retried (the leader may move here), but an operator must know: every
                    // write waits until then.
                    tracing::error!(
                        error = %chain(&error),
                        "the database server is a cluster follower and refuses writes; point \
                         NEO4J_URI at the leader, or use a neo4j:// URI (a bolt:// URI reaches \
                         one server; a neo4j:// URI routes writes to the leader); retrying"
                    );
                }
                tracing::warn!(
                    error = %chain(&error),
                    code = error.code().unwrap_or(""),
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    "write failed; retrying"
                );
                // Sleep, but wake early if a shutdown deadline is set meanwhile.
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = deadline.changed() => {}
                }
                attempt = attempt.saturating_add(1);
            }
            Decision::GiveUp if error.is_retriable() => return Err(Failure::OutOfTime),
            Decision::GiveUp => return Err(Failure::Permanent(error)),
        }
    }
}
