//! The public handle: start an aggregator, begin runs, report tasks, flush, shut down.
//!
//! actix stays inside. [`Aggregator::start`] spawns runtally's own actix system on a thread of
//! its own, with a small pool of arbiters for the run actors and one for the writer, so a host
//! on `#[tokio::main]`, on another executor, or on plain threads needs nothing else. Every
//! future returned here is executor-agnostic.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};

use crate::buffer::{BufferSettings, DiskBuffer, Recovery};
use crate::config::{AggregatorConfig, WhenFull};
use crate::error::{
    BeginError, ConfigError, FlushError, ReconcileError, RecordError, StartError, SyncBufferError,
};
use crate::execution::messages::{Drain, FinishRun, GetSnapshot, RecordTask, TakeResults};
use crate::execution::results::{Closed, Pushed, ResultQueue};
use crate::execution::{ExecutionActor, RunShared, RunSnapshot};
use crate::inbox::{Delivery, Inbox};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::model::{check_count, ExecutionId, PlanId, TaskDefinition, TaskResult};
use crate::registry::{Live, Registry};
use crate::rows::{ExecutionRow, TaskRow, WriteBatch};
use crate::slots::{Slot, Slots};
use crate::store::{GraphStore, Neo4jStore};
use crate::sync::lock;
use crate::writer::messages::{Connect, Drained, Flush, ReconcileStale, Shutdown, SyncBuffer};
use crate::writer::{DbWriterActor, WriterSettings};

/// What the orchestrator knows when a workflow run starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    /// The run's id (the seed's `executionId`).
    pub execution_id: ExecutionId,
    /// The plan it executes; linked when an `orchestration_plan` node with this id exists.
    pub plan_id: PlanId,
    /// Planned task count (`tasksTotal`). At most `i64::MAX`.
    pub total_tasks: u64,
    /// When the run started.
    pub start_time: DateTime<Utc>,
}

impl RunStart {
    /// A run starting now.
    pub fn new(execution_id: ExecutionId, plan_id: PlanId, total_tasks: u64) -> Self {
        Self {
            execution_id,
            plan_id,
            total_tasks,
            start_time: Utc::now(),
        }
    }

    /// Sets the start time.
    pub fn with_start_time(mut self, start_time: DateTime<Utc>) -> Self {
        self.start_time = start_time;
        self
    }
}

/// What [`Aggregator::shutdown`] did.
#[derive(Debug)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Metrics at the end, including rows written over the aggregator's life.
    pub metrics: MetricsSnapshot,
    /// Rows the database never confirmed before the deadline, in write order. Empty when
    /// everything was written.
    pub unwritten: Vec<WriteBatch>,
    /// Runs begun and never finished or cancelled: their last state is written (or in
    /// `unwritten`), with status `running` or `failed` and no end time.
    pub unfinished_runs: Vec<ExecutionId>,
    /// Rows not written before the deadline that the disk buffer holds: the next
    /// [`Aggregator::start`] with the same `buffer_dir` (or `runtally drain`) writes them first.
    /// They are not in `unwritten`. 0 without a disk buffer.
    pub buffered_rows: u64,
    /// Why the disk buffer could not be closed cleanly (its records stay on disk).
    pub buffer_error: Option<crate::error::BufferError>,
    /// Whether every accepted row was written before the deadline: nothing `unwritten` or
    /// buffered, and no row dropped over the aggregator's life (`metrics.rows_dropped` is 0).
    pub complete: bool,
    /// Rows appended to the configured spill file (0 without one).
    pub spilled_rows: usize,
    /// Why the spill file could not be written, if it could not (the rows are then counted as
    /// dropped, and still listed in `unwritten`).
    pub spill_error: Option<std::io::Error>,
}

impl ShutdownReport {
    /// Whether a shutdown is complete: the writer answered, nothing is left unwritten, and no
    /// row was dropped over the aggregator's life (a row handed to the writer after it closed
    /// is counted in `rows_dropped` and nowhere else).
    fn is_complete(answered: bool, drained: &Drained, metrics: &MetricsSnapshot) -> bool {
        answered
            && drained.unwritten.is_empty()
            && drained.buffered_rows == 0
            && metrics.rows_dropped == 0
    }

    /// Rows in [`ShutdownReport::unwritten`].
    pub fn unwritten_rows(&self) -> usize {
        self.unwritten.iter().map(WriteBatch::len).sum()
    }
}

/// What [`RunHandle::enqueue`] did with a result.
// The row comes back unboxed for the caller's slow path: the hot path (`Done`) must not allocate.
#[allow(clippy::large_enum_variant)]
enum Enqueued {
    /// Queued for the run actor.
    Done,
    /// The run's queue is full: the row and its slot come back.
    Full(TaskRow, Slot),
}

/// State every handle of one aggregator shares. Kept apart from the registry so that handles
/// stored in the registry do not keep the registry alive.
#[derive(Debug)]
struct Shared {
    permits: Arc<Slots>,
    metrics: Arc<Metrics>,
    closing: AtomicBool,
    /// `WhenFull::Reject`: `task_finished` answers `Full` instead of waiting.
    reject_when_full: bool,
}

/// A live run: report its tasks, finish or cancel it, read its counters.
///
/// Cheap to clone; every clone talks to the same run actor. Obtained from
/// [`Aggregator::begin_run`] or [`Aggregator::run`].
#[derive(Clone)]
pub struct RunHandle {
    run: Arc<RunShared>,
    addr: Addr<ExecutionActor>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RunHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHandle")
            .field("execution_id", &self.run.id)
            .field("ended", &self.is_ended())
            .finish_non_exhaustive()
    }
}

impl RunHandle {
    /// The run's id.
    pub fn execution_id(&self) -> &ExecutionId {
        &self.run.id
    }

    /// The run's plan.
    pub fn plan_id(&self) -> &PlanId {
        &self.run.plan_id
    }

    /// Whether `finish` or `cancel` was accepted.
    pub fn is_ended(&self) -> bool {
        self.run.final_snapshot.get().is_some()
    }

    /// Reports a finished task. Waits while pending writes are at `max_pending_rows` or `max_pending_bytes`, or the
    /// run's queue is full (backpressure); otherwise returns as soon as the result is in the
    /// run's queue, without waiting for the run actor's turn. The actor counts results in
    /// the order they arrive, so a later [`snapshot`](RunHandle::snapshot),
    /// [`finish`](RunHandle::finish) or [`Aggregator::flush`] includes this one.
    ///
    /// A result re-sent for the same task id replaces the earlier one everywhere. A failure
    /// makes the run `failed` at once and its state is written ahead of the queue.
    ///
    /// # Errors
    ///
    /// - [`RecordError::Invalid`]: the definition and result name different tasks, a count is
    ///   above `i64::MAX`, or a run total would pass it.
    /// - [`RecordError::RunFinished`]: the run was finished or cancelled (counted).
    /// - [`RecordError::ShuttingDown`]: the aggregator is shutting down.
    /// - [`RecordError::Full`]: with [`WhenFull::Reject`], pending writes are at a bound
    ///   (counted; nothing was recorded).
    ///
    /// A result that races with `finish`/`cancel` from another task is either counted before
    /// the run ends or refused here with `RunFinished`. Only one racing a shutdown can be
    /// refused after `Ok`: it is then counted in `rejected_messages` and logged at WARN.
    pub async fn task_finished(
        &self,
        task: TaskDefinition,
        result: TaskResult,
    ) -> Result<(), RecordError> {
        let row = self.build_row(task, result)?;
        let charge = self.shared.permits.charge(&row);
        let permit = if self.shared.reject_when_full {
            match self.shared.permits.try_acquire(charge) {
                Ok(permit) => permit,
                Err(tokio::sync::TryAcquireError::NoPermits) => return Err(self.full()),
                Err(tokio::sync::TryAcquireError::Closed) => return Err(RecordError::ShuttingDown),
            }
        } else {
            self.shared
                .permits
                .acquire(charge)
                .await
                .map_err(|_| RecordError::ShuttingDown)?
        };
        // The wait for a slot can outlast the start of a shutdown; a result accepted now would
        // reach its actor after the writer closed.
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(RecordError::ShuttingDown);
        }
        // The common case: room in the run's queue and no run total anywhere near the Bolt
        // limit, so nothing the actor could refuse for a typed answer. Anything else waits for
        // the actor.
        let (row, permit) = if self.run.add_weight(&row) {
            match self.enqueue(row, permit)? {
                Enqueued::Done => return Ok(()),
                Enqueued::Full(row, permit) => (row, permit),
            }
        } else {
            (row, permit)
        };
        self.sending();
        match self.addr.send(RecordTask { row, permit }).await {
            Ok(result) => result,
            Err(_) => Err(self.undeliverable()),
        }
    }

    /// Reports a finished task without waiting: the non-blocking twin of
    /// [`RunHandle::task_finished`], for hosts that must never await.
    ///
    /// # Errors
    ///
    /// [`RecordError::Full`] when pending writes are at `max_pending_rows` or `max_pending_bytes`, or the run's queue
    /// is full (counted; nothing was recorded, so the caller may retry), and the errors of
    /// [`RunHandle::task_finished`], whose notes on races apply here too.
    pub fn try_task_finished(
        &self,
        task: TaskDefinition,
        result: TaskResult,
    ) -> Result<(), RecordError> {
        let row = self.build_row(task, result)?;
        let permit = match self
            .shared
            .permits
            .try_acquire(self.shared.permits.charge(&row))
        {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(self.full()),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(RecordError::ShuttingDown),
        };
        // Counted on the caller's side too, so a run near the limit is answered exactly by
        // `task_finished`; here the actor's refusal is counted and logged.
        let _fits = self.run.add_weight(&row);
        match self.enqueue(row, permit)? {
            Enqueued::Done => Ok(()),
            Enqueued::Full(..) => Err(self.full()),
        }
    }

    /// Finishes the run: `failed` if any task's latest result is a failure, else `completed`.
    /// Returns the final snapshot once the final state is queued for writing (ahead of the
    /// queue); the run actor then stops.
    ///
    /// # Errors
    ///
    /// [`RecordError::RunFinished`] if already finished or cancelled,
    /// [`RecordError::Invalid`] if `end_time` is before the start,
    /// [`RecordError::ShuttingDown`].
    pub async fn finish(&self, end_time: DateTime<Utc>) -> Result<RunSnapshot, RecordError> {
        self.end(end_time, false).await
    }

    /// Cancels the run: `cancelled`, whatever its tasks did. Otherwise as
    /// [`RunHandle::finish`].
    ///
    /// # Errors
    ///
    /// As [`RunHandle::finish`].
    pub async fn cancel(&self, end_time: DateTime<Utc>) -> Result<RunSnapshot, RecordError> {
        self.end(end_time, true).await
    }

    /// The run's counters and status as its actor holds them now (the final ones once ended).
    ///
    /// # Errors
    ///
    /// [`RecordError::ShuttingDown`] if the aggregator stopped before the run ended.
    pub async fn snapshot(&self) -> Result<RunSnapshot, RecordError> {
        if let Some(done) = self.run.final_snapshot.get() {
            return Ok(done.clone());
        }
        self.sending();
        match self.addr.send(GetSnapshot).await {
            Ok(snapshot) => Ok(snapshot),
            Err(_) => {
                self.not_sent();
                self.run
                    .final_snapshot
                    .get()
                    .cloned()
                    .ok_or(RecordError::ShuttingDown)
            }
        }
    }

    /// Whether the run still takes results and its end: not ended, and no shutdown begun.
    fn accepting(&self) -> Result<(), RecordError> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(RecordError::ShuttingDown);
        }
        if self.is_ended() {
            return Err(self.rejected(RecordError::RunFinished(self.run.id.clone())));
        }
        Ok(())
    }

    async fn end(&self, end: DateTime<Utc>, cancelled: bool) -> Result<RunSnapshot, RecordError> {
        self.accepting()?;
        self.sending();
        match self.addr.send(FinishRun { end, cancelled }).await {
            Ok(result) => result,
            Err(_) => Err(self.undeliverable()),
        }
    }

    /// Finishes the run without waiting for its actor: for callers that cannot wait (the
    /// `tracing` layer, on the host's thread inside `tracing`). The finish is queued behind
    /// everything this run accepted, so it counts all of it, and ahead of a shutdown that
    /// begins after this returns. A refusal by the actor (the run already ended) is counted
    /// in `rejected_messages`.
    #[cfg(feature = "tracing-layer")]
    pub(crate) fn finish_detached(&self, end: DateTime<Utc>) -> Result<(), RecordError> {
        self.accepting()?;
        // A wall clock stepped back since the start must not leave the run unfinished.
        let end = end.max(self.run.start_time);
        self.sending();
        match self.addr.try_send(FinishRun {
            end,
            cancelled: false,
        }) {
            Ok(()) => Ok(()),
            // The run's mailbox is at its bound: a finish is one message per run, so it goes
            // past the bound rather than wait.
            Err(SendError::Full(finish)) => {
                self.addr.do_send(finish);
                Ok(())
            }
            Err(SendError::Closed(_)) => Err(self.undeliverable()),
        }
    }

    /// Waits until every row this run accepted so far is at the writer.
    async fn drain(&self) {
        self.sending();
        if self.addr.send(Drain).await.is_err() {
            // The actor stopped: it only stops after its last rows reached the writer.
            self.not_sent();
        }
    }

    fn build_row(&self, task: TaskDefinition, result: TaskResult) -> Result<TaskRow, RecordError> {
        self.accepting()?;
        TaskRow::new(&self.run.id, &self.run.plan_id, task, result, Utc::now())
            .map_err(|e| self.rejected(RecordError::Invalid(e)))
    }

    fn rejected(&self, error: RecordError) -> RecordError {
        self.shared
            .metrics
            .rejected_messages
            .fetch_add(1, Ordering::Relaxed);
        error
    }

    fn full(&self) -> RecordError {
        self.shared
            .metrics
            .full_rejections
            .fetch_add(1, Ordering::Relaxed);
        RecordError::Full
    }

    fn sending(&self) {
        self.shared.metrics.run_sent.fetch_add(1, Ordering::Relaxed);
    }

    fn not_sent(&self) {
        self.shared.metrics.run_sent.fetch_sub(1, Ordering::Relaxed);
    }

    /// Queues a result for the run actor, waking it if the queue was quiet. A full queue gives
    /// the row back (the caller waits for the actor, or reports `Full`).
    fn enqueue(&self, row: TaskRow, permit: Slot) -> Result<Enqueued, RecordError> {
        // Counted before the push, so the actor never handles a result not yet counted sent.
        self.sending();
        match self.run.results.push(row, permit) {
            Pushed::Queued { wake: false } => Ok(Enqueued::Done),
            Pushed::Queued { wake: true } => match self.addr.try_send(TakeResults) {
                // A full mailbox holds messages whose handlers take the queue first.
                Ok(()) | Err(SendError::Full(_)) => Ok(Enqueued::Done),
                Err(SendError::Closed(_)) => {
                    match self.run.results.close_with_reason(Closed::Stopped) {
                        // The run finished between the push and the wake-up: its actor took the
                        // queue, this row with it, and counted it before it stopped.
                        (_, Closed::Finished) => Ok(Enqueued::Done),
                        // The actor is gone (or never started) without closing the queue. The queue
                        // was quiet, so it holds this row and whatever raced in since.
                        (taken, Closed::Stopped) => {
                            self.not_sent();
                            self.run
                                .count_stranded(taken.rows.len().saturating_sub(1) as u64);
                            Err(self.closed(Closed::Stopped))
                        }
                    }
                }
            },
            Pushed::Full(row, permit) => {
                self.not_sent();
                Ok(Enqueued::Full(row, permit))
            }
            Pushed::Closed(why) => {
                self.not_sent();
                Err(self.closed(why))
            }
        }
    }

    /// The run's queue is closed: the run ended, or runtally stopped.
    fn closed(&self, why: Closed) -> RecordError {
        match why {
            Closed::Finished => self.rejected(RecordError::RunFinished(self.run.id.clone())),
            Closed::Stopped => RecordError::ShuttingDown,
        }
    }

    /// The run actor is gone: it stopped after finishing, or the aggregator stopped.
    fn undeliverable(&self) -> RecordError {
        self.not_sent();
        if self.is_ended() {
            self.rejected(RecordError::RunFinished(self.run.id.clone()))
        } else {
            RecordError::ShuttingDown
        }
    }
}

/// runtally's actix system: its thread, the run-actor arbiters and the writer's arbiter.
struct ActorRuntime {
    system: System,
    workers: Vec<ArbiterHandle>,
    writer: ArbiterHandle,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl ActorRuntime {
    fn spawn(workers: usize) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("runtally-system".into())
            .spawn(move || {
                let runner = System::new();
                let arbiters = (0..=workers)
                    .map(|_| Arbiter::try_new())
                    .collect::<std::io::Result<Vec<Arbiter>>>();
                let ok = arbiters.is_ok();
                let handles = arbiters.map(|arbiters| {
                    let handles: Vec<ArbiterHandle> =
                        arbiters.iter().map(Arbiter::handle).collect();
                    (System::current(), handles)
                });
                let _ = tx.send(handles);
                if ok {
                    // Runs until `System::stop`; arbiters stop with it.
                    let _ = runner.run();
                }
            })?;
        let (system, mut handles) = rx
            .recv()
            .map_err(|_| std::io::Error::other("runtally's actor system did not start"))??;
        let writer = handles
            .pop()
            .ok_or_else(|| std::io::Error::other("no writer arbiter"))?;
        Ok(Self {
            system,
            workers: handles,
            writer,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn stop(&self) {
        self.system.stop();
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            // Joining from inside the system thread would deadlock; it ends on its own then.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// Everything an aggregator owns.
struct Inner {
    registry: Arc<Registry<RunHandle>>,
    writer: Addr<DbWriterActor>,
    inbox: Arc<Inbox>,
    runtime: ActorRuntime,
    next_worker: AtomicUsize,
    shared: Arc<Shared>,
    run_mailbox: usize,
    max_pending_rows: usize,
    spill_path: Option<std::path::PathBuf>,
    /// What the disk buffer found at start, if there is one.
    recovery: Option<Recovery>,
    /// The disk buffer's thread, joined once the writer is gone (so its directory is free when
    /// `shutdown` returns or the aggregator is dropped).
    buffer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    owner: Arc<str>,
    /// Numbers the runs the `tracing` layer begins for spans that give no execution id.
    #[cfg_attr(not(feature = "tracing-layer"), allow(dead_code))]
    span_runs: AtomicU64,
    stopped: AtomicBool,
    /// What the writer answered to the one `Shutdown` message (and whether it answered), until
    /// a `shutdown` call collects it.
    drained: Mutex<Option<(Drained, bool)>>,
    /// Set once `drained` is filled.
    drained_ready: tokio::sync::watch::Sender<bool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.stopped.swap(true, Ordering::AcqRel) {
            let pending = self.shared.metrics.pending_rows.load(Ordering::Relaxed);
            if pending > 0 && self.recovery.is_some() {
                // Appended before they reached the writer's lanes: the next start writes them.
                tracing::warn!(
                    pending_rows = pending,
                    "aggregator dropped without shutdown; pending rows stay in the disk buffer"
                );
            } else if pending > 0 {
                tracing::error!(
                    pending_rows = pending,
                    "aggregator dropped without shutdown; pending rows are lost"
                );
                self.shared
                    .metrics
                    .rows_dropped
                    .fetch_add(pending as u64, Ordering::Relaxed);
            }
            self.runtime.stop();
            self.join_buffer();
        }
    }
}

impl Inner {
    /// Waits for the disk buffer's thread to end (the writer, gone by now, dropped its handle).
    fn join_buffer(&self) {
        if let Some(thread) = lock(&self.buffer_thread).take() {
            let _ = thread.join();
        }
    }
}

/// runtally's entry point: one per process (or per database), shared by every run.
///
/// Cheap to clone; clones share the actors. See the [crate docs](crate) for the architecture
/// and delivery guarantees.
#[derive(Clone)]
pub struct Aggregator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregator")
            .field("owner", &self.inner.owner)
            .field("live_runs", &self.inner.registry.len())
            .finish_non_exhaustive()
    }
}

impl Aggregator {
    /// Starts runtally against the Neo4j database in `config`.
    ///
    /// An unreachable database is not an error: the aggregator starts, reports
    /// `database_up = false` in its metrics, keeps trying, and accepts results up to
    /// `max_pending_rows` meanwhile.
    ///
    /// # Errors
    ///
    /// - [`StartError::Config`]: no database settings, or invalid ones.
    /// - [`StartError::Store`]: the driver rejects the URI, or the server rejects the
    ///   credentials.
    /// - [`StartError::Runtime`]: runtally's threads could not be started.
    pub async fn start(config: AggregatorConfig) -> Result<Self, StartError> {
        let neo4j = config
            .neo4j
            .as_ref()
            .ok_or(ConfigError::Missing("database settings (with_neo4j)"))?;
        let store = Neo4jStore::new(neo4j)?;
        Self::start_with_store(config, Arc::new(store)).await
    }

    /// Starts runtally writing to any [`GraphStore`] (the database settings in `config` are
    /// ignored). Used for tests and for measuring runtally without a database.
    ///
    /// # Errors
    ///
    /// As [`Aggregator::start`].
    pub async fn start_with_store(
        config: AggregatorConfig,
        store: Arc<dyn GraphStore>,
    ) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::default());
        // The buffer directory first: another process holding it stops the start here.
        let buffer = match &config.buffer_dir {
            Some(dir) => {
                let settings = BufferSettings {
                    dir: dir.clone(),
                    segment_bytes: config.buffer_segment_bytes,
                    direct_io: config.buffer_direct_writes,
                    sync: config.buffer_sync,
                };
                let opened = DiskBuffer::open(settings, Arc::clone(&metrics)).await?;
                let recovery = &opened.recovery;
                crate::buffer::report_skipped(&metrics, &recovery.skipped);
                if recovery.records > 0 {
                    tracing::info!(
                        dir = %dir.display(),
                        records = recovery.records,
                        rows = recovery.rows,
                        bytes = recovery.bytes,
                        "disk buffer holds rows not yet in the database; writing them first"
                    );
                }
                Some(opened)
            }
            None => None,
        };
        let recovery = buffer.as_ref().map(|b| b.recovery.clone());
        let mut buffer = buffer;
        let buffer_thread = buffer.as_mut().and_then(|b| b.thread.take());
        let runtime = ActorRuntime::spawn(config.arbiters).map_err(StartError::Runtime)?;
        // The writes in flight hold copies of their rows beyond the senders' budget.
        let permits = Arc::new(Slots::new(config.max_pending_rows, config.row_budget()));
        let registry = Arc::new(Registry::new(Arc::clone(&metrics)));
        let inbox = Arc::new(Inbox::default());
        let settings = WriterSettings {
            max_batch_rows: config.max_batch_rows,
            max_batch_bytes: config.max_batch_bytes,
            write_lanes: config.write_lanes,
            min_overlap_bytes: config.min_overlap_bytes,
            heartbeat_interval: config.heartbeat_interval,
            flush_interval: config.flush_interval,
            write_timeout: config.write_timeout,
            retry: config.retry,
            on_rejected: config.on_rejected.clone(),
            row_budget: config.row_budget(),
            max_pending_rows: config.max_pending_rows,
            overflow: config.when_full == WhenFull::Overflow,
        };
        let writer = {
            let (registry, permits, metrics, inbox) = (
                Arc::clone(&registry),
                Arc::clone(&permits),
                Arc::clone(&metrics),
                Arc::clone(&inbox),
            );
            DbWriterActor::start_in_arbiter(&runtime.writer, move |_| {
                DbWriterActor::new(store, settings, inbox, permits, registry, metrics, buffer)
            })
        };
        inbox.connect(writer.clone().recipient());
        let owner: Arc<str> = match &config.instance_id {
            Some(id) => Arc::from(id.as_str()),
            None => Arc::from(default_instance_id()),
        };
        let aggregator = Aggregator {
            inner: Arc::new(Inner {
                registry,
                writer: writer.clone(),
                inbox,
                runtime,
                next_worker: AtomicUsize::new(0),
                shared: Arc::new(Shared {
                    permits,
                    metrics,
                    closing: AtomicBool::new(false),
                    reject_when_full: config.when_full == WhenFull::Reject,
                }),
                run_mailbox: config.run_mailbox,
                max_pending_rows: config.max_pending_rows,
                spill_path: config.spill_path.clone(),
                recovery,
                buffer_thread: Mutex::new(buffer_thread),
                owner,
                span_runs: AtomicU64::new(0),
                stopped: AtomicBool::new(false),
                drained: Mutex::new(None),
                drained_ready: tokio::sync::watch::channel(false).0,
            }),
        };
        match writer.send(Connect).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) if e.is_retriable() => {
                tracing::warn!(error = %e, "database unreachable at start; will keep trying");
            }
            Ok(Some(Err(e))) => return Err(StartError::Store(e)),
            // The writer is gone: not a database problem to retry.
            Ok(None) | Err(_) => {
                return Err(StartError::Runtime(std::io::Error::other(
                    "runtally's writer stopped before it connected",
                )))
            }
        }
        tracing::info!(owner = %aggregator.inner.owner, "runtally started");
        Ok(aggregator)
    }

    /// The live counters (the `tracing` layer counts into them on the host's threads).
    #[cfg(feature = "tracing-layer")]
    pub(crate) fn shared_metrics(&self) -> &Metrics {
        &self.inner.shared.metrics
    }

    /// The next number for a run the `tracing` layer begins without an execution id: 1, 2, …
    /// per aggregator, so ids stay unique however many layers share it.
    #[cfg(feature = "tracing-layer")]
    pub(crate) fn next_span_run(&self) -> u64 {
        self.inner.span_runs.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Begins a run: starts its actor and queues its first write (`running`, zero counters).
    ///
    /// # Errors
    ///
    /// [`BeginError::Duplicate`] if a run with this id is still live here (or finished and not
    /// yet written), [`BeginError::Invalid`] if `total_tasks` is above `i64::MAX`,
    /// [`BeginError::ShuttingDown`].
    pub fn begin_run(&self, start: RunStart) -> Result<RunHandle, BeginError> {
        let inner = &self.inner;
        if inner.shared.closing.load(Ordering::Acquire) {
            return Err(BeginError::ShuttingDown);
        }
        let tasks_total = check_count("totalTasks", start.total_tasks)?;
        let run = Arc::new(RunShared {
            id: start.execution_id.clone(),
            plan_id: start.plan_id,
            start_time: start.start_time,
            created: Utc::now(),
            tasks_total,
            owner: Some(Arc::clone(&inner.owner)),
            final_snapshot: OnceLock::new(),
            accepted_weight: AtomicU64::new(0),
            metrics: Arc::clone(&inner.shared.metrics),
            results: ResultQueue::new(inner.run_mailbox),
            slots: Arc::clone(&inner.shared.permits),
        });
        let handle = inner.registry.insert_new(start.execution_id, || {
            let worker =
                inner.next_worker.fetch_add(1, Ordering::Relaxed) % inner.runtime.workers.len();
            let inbox = Arc::clone(&inner.inbox);
            let mailbox = inner.run_mailbox;
            let actor_run = Arc::clone(&run);
            let addr =
                ExecutionActor::start_in_arbiter(&inner.runtime.workers[worker], move |_| {
                    ExecutionActor::new(actor_run, inbox, mailbox)
                });
            RunHandle {
                run,
                addr,
                shared: Arc::clone(&inner.shared),
            }
        })?;
        inner
            .shared
            .metrics
            .runs_started
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(execution_id = %handle.run.id, "run begun");
        Ok(handle)
    }

    /// The handle of a live run (or one finished whose final state is not yet in the database,
    /// nor in the disk buffer).
    pub fn run(&self, id: &ExecutionId) -> Option<RunHandle> {
        self.inner.registry.get(id)
    }

    /// Runs in the registry.
    pub fn live_runs(&self) -> usize {
        self.inner.registry.len()
    }

    /// What the disk buffer found when this aggregator started (records a previous process
    /// left, written first; records skipped as torn or corrupt), if it has one.
    pub fn buffer_recovery(&self) -> Option<&Recovery> {
        self.inner.recovery.as_ref()
    }

    /// This process's instance id, written as `runtallyOwner` on its runs.
    pub fn instance_id(&self) -> &str {
        &self.inner.owner
    }

    /// Writes everything accepted so far; returns when it is in the database.
    ///
    /// # Errors
    ///
    /// [`FlushError::Rejected`] if the database refused rows (reported to the rejection
    /// handler; the rest is written), [`FlushError::ShuttingDown`].
    pub async fn flush(&self) -> Result<(), FlushError> {
        if self.inner.stopped.load(Ordering::Acquire) {
            return Err(FlushError::ShuttingDown);
        }
        self.drain_runs().await;
        match self.inner.writer.send(Flush).await {
            Ok(result) => result,
            Err(_) => Err(FlushError::ShuttingDown),
        }
    }

    /// Waits until every result accepted so far is on disk in the buffer (appended and synced)
    /// or already in the database: from then on a crash of this process, or of the machine,
    /// loses none of them. Without it, rows reach the disk within milliseconds of being
    /// accepted, and a synced disk within the buffer's [`SyncPolicy`](crate::SyncPolicy).
    ///
    /// # Errors
    ///
    /// [`SyncBufferError::NoBuffer`] without a buffer directory;
    /// [`SyncBufferError::NotOnDisk`] if appends failed (a full disk: those rows are written
    /// from memory); [`SyncBufferError::Buffer`] if the sync failed;
    /// [`SyncBufferError::ShuttingDown`].
    pub async fn sync_buffer(&self) -> Result<(), SyncBufferError> {
        if self.inner.stopped.load(Ordering::Acquire) {
            return Err(SyncBufferError::ShuttingDown);
        }
        self.drain_runs().await;
        let synced = match self.inner.writer.send(SyncBuffer).await {
            Ok(answer) => answer?,
            Err(_) => return Err(SyncBufferError::ShuttingDown),
        };
        match synced.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(SyncBufferError::Buffer(crate::error::BufferError::Stopped)),
        }
    }

    /// Stops accepting work, writes everything accepted (until `timeout`), stops runtally's
    /// threads and reports what was and was not written. Runs not finished stay as they are in
    /// the database (`running` or `failed`); see [`Aggregator::reconcile_stale`].
    ///
    /// The first call (from any clone) starts the shutdown on runtally's own threads, with its
    /// `timeout`; it runs to the end even if that call's future is dropped. Every call waits for
    /// it, and one of them collects the rows and reports them: if the first call was cancelled,
    /// call `shutdown` again to get the report. Any other call returns `complete: false` with
    /// nothing in `unwritten`.
    pub async fn shutdown(self, timeout: Duration) -> ShutdownReport {
        let deadline = Instant::now() + timeout;
        let inner = &self.inner;
        if !inner.shared.closing.swap(true, Ordering::AcqRel) {
            self.start_shutdown(deadline);
        }
        let mut ready = inner.drained_ready.subscribe();
        // The sender lives in `inner`, which `self` holds: this cannot fail.
        let _ = ready.wait_for(|ready| *ready).await;
        let collected = lock(&inner.drained).take();
        let Some((drained, answered)) = collected else {
            tracing::warn!("shutdown called again; another call reports the rows");
            return ShutdownReport {
                metrics: self.metrics(),
                unwritten: Vec::new(),
                unfinished_runs: Vec::new(),
                buffered_rows: 0,
                buffer_error: None,
                complete: false,
                spilled_rows: 0,
                spill_error: None,
            };
        };
        let unfinished_runs = inner
            .registry
            .handles()
            .into_iter()
            .filter(|h| !h.is_ended())
            .map(|h| h.run.id.clone())
            .collect();
        let unwritten_rows: usize = drained.unwritten.iter().map(WriteBatch::len).sum();
        let (spilled_rows, spill_error) = match (&inner.spill_path, unwritten_rows) {
            (_, 0) | (None, _) => (0, None),
            (Some(path), _) => match crate::spill::append(path, &drained.unwritten) {
                Ok(rows) => {
                    tracing::warn!(rows, path = %path.display(), "shutdown deadline passed; rows spilled");
                    (rows, None)
                }
                Err(e) => {
                    tracing::error!(error = %e, path = %path.display(), "cannot write the spill file");
                    (0, Some(e))
                }
            },
        };
        let metrics = &inner.shared.metrics;
        metrics
            .rows_spilled
            .fetch_add(spilled_rows as u64, Ordering::Relaxed);
        let dropped = unwritten_rows - spilled_rows;
        if dropped > 0 {
            metrics
                .rows_dropped
                .fetch_add(dropped as u64, Ordering::Relaxed);
            tracing::error!(rows = dropped, "shutdown deadline passed; rows not written");
        }
        inner.shared.permits.close();
        inner.stopped.store(true, Ordering::Release);
        inner.runtime.stop();
        inner.join_buffer();
        let metrics = self.metrics();
        if let Some(error) = &drained.buffer_error {
            tracing::error!(error = %crate::error::chain(error), "disk buffer: cannot close");
        }
        ShutdownReport {
            complete: ShutdownReport::is_complete(answered, &drained, &metrics),
            metrics,
            unwritten: drained.unwritten,
            unfinished_runs,
            buffered_rows: drained.buffered_rows,
            buffer_error: drained.buffer_error,
            spilled_rows,
            spill_error,
        }
    }

    /// Queues rows exactly as given (a spill being restored): absolute values, written in order
    /// with everything else, subject to `max_pending_rows` and `max_pending_bytes` like any task
    /// result.
    ///
    /// # Errors
    ///
    /// [`RecordError::ShuttingDown`] if the aggregator is shutting down.
    pub async fn restore(&self, batch: WriteBatch) -> Result<(), RecordError> {
        let inner = &self.inner;
        if inner.shared.closing.load(Ordering::Acquire) {
            return Err(RecordError::ShuttingDown);
        }
        let WriteBatch {
            mut executions,
            mut tasks,
            ..
        } = batch;
        // Pieces within both bounds (at least one row each). Several pieces may be written in
        // several transactions, so the states go with the last piece (a run's state never
        // precedes its tasks) and placeholders with the first, so every task finds its run.
        let slots = &inner.shared.permits;
        let mut first = true;
        loop {
            let mut take = 0;
            let mut bytes = 0;
            while take < tasks.len() && take < inner.max_pending_rows {
                let charge = slots.charge(&tasks[take]);
                if take > 0 && bytes + charge > slots.cap() {
                    break;
                }
                bytes += charge;
                take += 1;
            }
            let piece: Vec<TaskRow> = tasks.drain(..take).collect();
            if !piece.is_empty() {
                let count = u32::try_from(piece.len()).unwrap_or(u32::MAX);
                let permits = slots
                    .acquire_many(count, bytes)
                    .await
                    .map_err(|_| RecordError::ShuttingDown)?;
                // The writer frees these slots when the rows are written.
                permits.forget();
            }
            let last = tasks.is_empty();
            let piece_executions = if last {
                std::mem::take(&mut executions)
            } else if first {
                executions.iter().map(ExecutionRow::placeholder).collect()
            } else {
                Vec::new()
            };
            first = false;
            let batch = WriteBatch::new(piece_executions, piece);
            if inner.inbox.push(Delivery::Restore(batch)).is_err() {
                return Err(RecordError::ShuttingDown);
            }
            if last {
                return Ok(());
            }
        }
    }

    /// Marks runs left `running` (or `failed` without an end) by a dead process as `failed`,
    /// with `error = 'interrupted'` and an end time: those whose heartbeat is older than
    /// `older_than` and whose owner is not this aggregator. Returns their ids.
    ///
    /// # Errors
    ///
    /// [`ReconcileError::OutOfRange`] if `now - older_than` is before the earliest time a
    /// timestamp can hold (nothing is marked); [`ReconcileError::Store`] if the database call
    /// fails; [`ReconcileError::ShuttingDown`] after shutdown.
    pub async fn reconcile_stale(
        &self,
        older_than: Duration,
    ) -> Result<Vec<String>, ReconcileError> {
        // As `flush`: once shutdown has run, the writer may still answer while actix stops.
        if self.inner.stopped.load(Ordering::Acquire) {
            return Err(ReconcileError::ShuttingDown);
        }
        let now = Utc::now();
        let cutoff = chrono::Duration::from_std(older_than)
            .ok()
            .and_then(|age| now.checked_sub_signed(age))
            .ok_or(ReconcileError::OutOfRange(older_than))?;
        let message = ReconcileStale {
            cutoff,
            except_owner: Some(self.inner.owner.to_string()),
            now,
        };
        match self.inner.writer.send(message).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ReconcileError::ShuttingDown),
        }
    }

    /// A snapshot of the aggregator's metrics.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.shared.metrics.snapshot(self.inner.inbox.len())
    }

    /// Drains the run actors and hands the writer its `Shutdown`, as a task of runtally's own
    /// system, so that dropping the `shutdown` future cannot lose the writer's answer.
    fn start_shutdown(&self, deadline: Instant) {
        let this = self.clone();
        let work = async move {
            this.drain_runs().await;
            // No reply means the writer is gone and nobody knows what it wrote: not complete.
            let outcome = match this.inner.writer.send(Shutdown { deadline }).await {
                Ok(drained) => (drained, true),
                Err(_) => (Drained::default(), false),
            };
            *lock(&this.inner.drained) = Some(outcome);
            this.inner.drained_ready.send_replace(true);
        };
        if !self.inner.runtime.system.arbiter().spawn(work) {
            // runtally's system is gone: nothing can be drained.
            *lock(&self.inner.drained) = Some((Drained::default(), false));
            self.inner.drained_ready.send_replace(true);
        }
    }

    async fn drain_runs(&self) {
        let handles = self.inner.registry.handles();
        futures_util::future::join_all(handles.iter().map(RunHandle::drain)).await;
    }
}

impl Live for RunHandle {
    fn is_ended(&self) -> bool {
        RunHandle::is_ended(self)
    }
}

fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}/{}/{:08x}", std::process::id(), fastrand::u32(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shutdown_that_dropped_a_row_is_not_complete() {
        let mut metrics = Metrics::default().snapshot(0);
        let nothing = Drained::default();
        assert!(ShutdownReport::is_complete(true, &nothing, &metrics));
        let buffered = Drained {
            buffered_rows: 3,
            ..Drained::default()
        };
        assert!(
            !ShutdownReport::is_complete(true, &buffered, &metrics),
            "rows left in the disk buffer are not written"
        );
        metrics.rows_dropped = 1;
        assert!(
            !ShutdownReport::is_complete(true, &nothing, &metrics),
            "a row dropped with nothing left unwritten"
        );
        assert!(!ShutdownReport::is_complete(
            false,
            &nothing,
            &Metrics::default().snapshot(0)
        ));
    }
}
