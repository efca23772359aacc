//! runtally turns an orchestrator's task results into an execution graph in Neo4j: exact
//! per-run telemetry, a run that shows up as `failed` the moment a task fails, and batched
//! writes that never slow the orchestrator down or lose data.
//!
//! It writes the graph of the seed orchestrator's `persistence.ts` (same `:Node` label, `type`
//! values, property names and types, relationships), so that system's readers keep working, and
//! fixes its bugs: counters are absolute sums over each task's latest result, a re-sent result
//! replaces the earlier one, writes are retried and never silently dropped, plan links form,
//! durations are exact, and runs left behind by a crashed process can be reconciled.
//!
//! # Primary types
//!
//! - [`Aggregator`]: the entry point, one per process. [`Aggregator::start`] it, then
//!   [`begin_run`](Aggregator::begin_run), [`flush`](Aggregator::flush),
//!   [`shutdown`](Aggregator::shutdown), [`metrics`](Aggregator::metrics).
//! - [`RunHandle`]: one live run. [`task_finished`](RunHandle::task_finished),
//!   [`finish`](RunHandle::finish), [`cancel`](RunHandle::cancel),
//!   [`snapshot`](RunHandle::snapshot).
//! - [`TaskDefinition`] and [`TaskResult`]: the orchestrator's own types, deserialized from its
//!   camelCase JSON ([`model`]).
//! - [`AggregatorConfig`] and [`Neo4jConfig`]: builders with documented defaults ([`config`]).
//! - [`store::Neo4jStore`]: the Cypher, and typed reads answering what the seed's readers ask.
//! - The disk buffer ([`buffer`], [`AggregatorConfigBuilder::with_buffer_dir`]): a write-ahead
//!   log of everything accepted, so a killed process or a long outage loses nothing.
//! - With the `tracing-layer` feature, `runtally::layer(&aggregator)`: GenAI agent spans
//!   become runs, through the same handles.
//!
//! # Architecture
//!
//! ```text
//!  orchestrator threads            runtally's threads (actix arbiters)              database
//!  ────────────────────            ───────────────────────────────────              ────────
//!  (tracing spans ─► layer.rs:
//!   try_task_finished on close)
//!  RunHandle::task_finished ──► ExecutionActor (one per run, N arbiters)
//!    (row built and checked        counters: each task's latest result
//!     on the caller's thread;      status: failed the moment a task fails
//!     waits at max_pending_rows)        │ run state + the turn's task rows
//!                                       ▼
//!                               writer inbox (shared queue + doorbell)
//!                                       │
//!                                       ▼             disk buffer thread (optional)
//!                               DbWriterActor ◄─────► appends each delivery first,
//!                               (one, its own arbiter) reads back the backlog ──► DIR/*.seg
//!                                 pending rows coalesce: latest per task,
//!                                 latest absolute state per run
//!                                 batches by rows and bytes; a run's
//!                                 state with its last task rows;
//!                                 urgent status marks go first
//!                                 a chunk at a time per lane, retried ─► GraphStore ──► Neo4j
//!                                 refused rows isolated and reported     (Neo4jStore:   (Bolt)
//!                                                                          UNWIND $rows)
//! ```
//!
//! Task results queue beside their run's [`ExecutionActor`](RunHandle), which takes all of them
//! in one turn, updates the counters and hands the run's latest absolute state and the task
//! rows to the writer. The
//! writer batches rows from all runs: a run with 1,000 results between two flushes costs one
//! execution update. A batch closes at `max_batch_rows` task rows or `max_batch_bytes`,
//! whichever comes first; flushes start when the pending rows reach either, every
//! `flush_interval`, on [`flush`](Aggregator::flush) and at [`shutdown`](Aggregator::shutdown).
//! A run that just failed has its status written next, ahead of the queue; a run that finished
//! has its final state written with its last task rows (or, if they are already written, next).
//! A registry of live runs lets [`Aggregator::run`] find a handle by id.
//!
//! With a disk buffer, the writer hands every delivery to the buffer's thread, which appends
//! it as a checksummed record to a segment file, before its rows enter the pending writes; a
//! segment is deleted once its rows are settled in the database. Rows that do not fit in
//! memory (`WhenFull::Overflow`) stay on disk only and are read back in order.
//!
//! # Layout
//!
//! Modules depend one way, from the data up to the public handle; none names a module above it
//! (`scripts/layers` checks this in the test suite).
//!
//! ```text
//!  capture         layer.rs (the tracing layer)
//!                         │
//!  public handle   aggregator.rs (Aggregator, RunHandle)   registry.rs (live runs, generic)
//!                         │
//!  actors, store   execution.rs (ExecutionActor)  writer.rs (DbWriterActor)  store.rs (GraphStore)
//!                  + execution/messages.rs        + writer/messages.rs       + store/neo4j.rs
//!                                                 + writer/spool.rs          + store/driver.rs
//!                                                                              (routing)
//!                                                                            + store/memory.rs
//!                  buffer.rs (the disk buffer's thread) + buffer/segments.rs (files, recovery)
//!                         │
//!  pure cores      execution/counters.rs  execution/results.rs  writer/batch.rs (coalescing,
//!                  chunks by rows and bytes)  writer/lanes.rs (which write goes next)
//!                  retry.rs (backoff, retry decision)  inbox.rs (actor → writer queue)
//!                  buffer/record.rs (record format, checksums)
//!                  slots.rs (pending bounds)  config.rs (builders, defaults)
//!                  genai.rs (GenAI spans → runs: genai/mapping.rs fields, genai/tally.rs
//!                  counts, genai/trace.rs a finished trace)
//!                         │
//!  data            model.rs (ids, TaskResult, ModelError)  rows.rs (graph rows)
//!                  error.rs  rejected.rs  spill.rs  metrics.rs  sync.rs
//! ```
//!
//! # Quick start
//!
//! ```
//! use std::time::Duration;
//! use runtally::{Aggregator, AggregatorConfig, ExecutionId, PlanId, RunStart, TaskDefinition,
//!                TaskId, TaskResult};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! // NEO4J_URI, NEO4J_USER, NEO4J_PASSWORD, NEO4J_DATABASE; everything else at its default.
//! let aggregator = Aggregator::start(AggregatorConfig::from_env()?.build()?).await?;
//!
//! let execution_id = ExecutionId::new(format!("quickstart-{}", std::process::id()))?;
//! let run = aggregator.begin_run(RunStart::new(execution_id, PlanId::new("plan-1")?, 2))?;
//!
//! let task = TaskId::new("task-1")?;
//! run.task_finished(
//!     TaskDefinition::new(task.clone()).with_title("Fetch the data"),
//!     TaskResult::success(task).with_tokens(1200, 300).with_tool_calls(2),
//! )
//! .await?;
//! let task = TaskId::new("task-2")?;
//! run.task_finished(
//!     TaskDefinition::new(task.clone()),
//!     TaskResult::failure(task, "timed out"), // the run is `failed` from here on
//! )
//! .await?;
//!
//! let summary = run.finish(chrono::Utc::now()).await?;
//! assert_eq!(summary.status.as_str(), "failed");
//! assert_eq!(summary.totals.tokens_total(), 1500);
//!
//! let report = aggregator.shutdown(Duration::from_secs(10)).await;
//! assert!(report.complete);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! # Runtime requirements
//!
//! None beyond a way to poll futures. runtally runs its actors on an actix system of its own,
//! on threads of its own (a pool of arbiters for the run actors, one for the writer), so a host
//! on `#[tokio::main]`, another executor, or plain threads needs nothing else; the futures it
//! returns are executor-agnostic. A plain thread can use [`RunHandle::try_task_finished`], or
//! block on the async methods. The library never installs a `tracing` subscriber or a global
//! allocator.
//!
//! # Delivery guarantees
//!
//! - **Accepted means queued, in order.** When [`task_finished`](RunHandle::task_finished)
//!   returns `Ok`, the result is in its run's bounded queue (the call does not wait for the run
//!   actor's turn, so the orchestrator pays about a microsecond). The actor counts results in
//!   the order they arrive: a [`snapshot`](RunHandle::snapshot), [`finish`](RunHandle::finish),
//!   [`flush`](Aggregator::flush) or [`shutdown`](Aggregator::shutdown) issued afterwards
//!   includes it. Invalid input, including a result that would take a run total past Bolt's
//!   integer range, is a typed error and changes nothing. A result racing `finish`/`cancel`
//!   is either counted or refused with `RunFinished`; only one racing a shutdown can be refused
//!   after `Ok`, and it is counted in `rejected_messages` and logged at WARN.
//! - **Writes in order within a run, not across runs.** A run's rows always go through the same
//!   write lane, so its writes reach the database in the order they were made. Rows of
//!   different runs may go in other orders (lanes write in parallel, and a transaction that
//!   combines lanes holds them in lane order): a constraint of the host's that two runs' rows
//!   break refuses whichever of them the database writes second.
//! - **Exactly once in the graph.** Every write is an idempotent `MERGE` of absolute values, so a
//!   batch sent twice (a retry after a lost commit) changes nothing, and a result re-sent for
//!   the same task replaces the earlier one everywhere.
//! - **A run's node never shows more than its task nodes.** When an execution node shows an
//!   end time (completed, failed at finish, cancelled), every task result accepted before
//!   `finish`/`cancel` is already in the graph and the node's counters match its task nodes:
//!   the final state is written in a transaction that commits after the one carrying the run's
//!   last task rows (not in the same one: Neo4j's readers can see a committing transaction's
//!   node properties before its relationships). At any time the node's counters count only
//!   task nodes already in the graph. The urgent `failed` mark of a run whose task failed mid-run is
//!   written at once, but only its `status` (no counters, no end time). Rows the database
//!   refused for good (see below) are the one exception: the counters include them.
//! - **Backpressure, not loss.** At most `max_pending_rows` task rows, and at most
//!   `max_pending_bytes` of memory, wait for the database in memory. Part of the bytes is kept for the
//!   writes in flight (a write holds the driver's copy of its rows and their encoding: three
//!   times `max_batch_bytes` per write lane, [`AggregatorConfig::in_flight_reserve`]); the
//!   rest bounds accepted task rows by [`weight`](rows::TaskRow::weight). At either bound,
//!   as [`WhenFull`] says: `task_finished` waits (`Block`, the default; `try_task_finished`
//!   returns [`RecordError::Full`]), returns `Full` at once (`Reject`), or new rows go to the
//!   disk buffer only (`Overflow`: memory then holds at most half the budget, the rest is for
//!   rows on their way to the disk, and senders wait only if the disk cannot keep up);
//!   nothing is dropped to make room. So during an outage and while its backlog drains, the heap grows by
//!   at most `max_pending_bytes`, whatever the output size (measured: 64 MiB bound, 8 MiB
//!   batches, two lanes, 2,000 results of 200 KB: 49.9 MiB heap peak; the resident set, which
//!   adds what the allocator keeps, grew by 49 to 65 MiB).
//! - **Database outage.** Writes are retried with capped exponential backoff and jitter, without
//!   limit; meanwhile results are accepted up to the bound. An unreachable database does not
//!   stop [`Aggregator::start`]; rejected credentials or a bad URI do.
//! - **Refused rows.** A row the database refuses permanently is isolated (its batch is split
//!   until it stands alone), every other row is written, and the refused one is counted,
//!   logged at ERROR and passed to the
//!   [rejection handler](AggregatorConfigBuilder::with_rejected_handler). A write the server
//!   refuses for its size ([`StoreError::is_too_large`]) is split by bytes at once; a single
//!   row still too large is refused that way, never retried.
//! - **Shutdown.** [`shutdown`](Aggregator::shutdown) stops accepting, writes everything it can
//!   until its deadline, and reports the rest; with a disk buffer the rest stays there for the
//!   next start ([`ShutdownReport::buffered_rows`]); with a
//!   [spill file](AggregatorConfigBuilder::with_spill_path) what the buffer does not hold is
//!   appended there and `runtally replay FILE` restores it exactly.
//! - **Crash.** Without a disk buffer, rows accepted but not yet written are lost with the
//!   process. With one ([`with_buffer_dir`](AggregatorConfigBuilder::with_buffer_dir)),
//!   every delivery of a run's rows is appended before it can reach the database, so a killed
//!   process (`SIGKILL`, out of memory) loses only results accepted in its last few
//!   milliseconds (queued for their run actor, or on their way to the buffer's thread), and
//!   none once it has been idle that long or once [`Aggregator::sync_buffer`] returned; a
//!   power cut can also take what was appended within the [`SyncPolicy`] interval. The next
//!   [`Aggregator::start`] on the same directory (or `runtally drain`) writes what the log
//!   holds first, in order; torn or corrupt records are skipped and reported (segment, offset),
//!   and everything else is replayed. Unfinished runs stay `running` in the database until
//!   [`Aggregator::reconcile_stale`] (or `runtally reconcile`) marks them `failed` with
//!   `error = 'interrupted'`: every execution node records its owner and a heartbeat the
//!   writer refreshes.
//! - **Disk full.** A failed append is a [`BufferError`] in the log at ERROR and in
//!   `metrics.buffer.errors`, never a panic or a drop: those rows are written from memory
//!   ([`Aggregator::sync_buffer`] reports them as not on disk), and backlog rows the disk
//!   refuses wait in memory, under the same bounds, until it takes them or the database does.
//!
//! # Configuration
//!
//! | setting | default | meaning |
//! |---|---|---|
//! | `with_neo4j(Neo4jConfig::builder(uri, user, password))` | from `NEO4J_*` with [`AggregatorConfig::from_env`] | the database; `bolt+s://`/`neo4j+s://` for TLS |
//! | `Neo4jConfigBuilder::with_database` | server default | database name |
//! | `Neo4jConfigBuilder::with_max_connections` | 8 | connection pool size |
//! | `Neo4jConfigBuilder::with_tcp_nodelay` | `true` | `TCP_NODELAY` on the connections (Unix) |
//! | `with_max_batch_rows` | 500 | task rows per write transaction |
//! | `with_flush_interval` | 100 ms | longest wait before pending rows are flushed |
//! | `with_max_pending_rows` | 100,000 | bound on task rows waiting for the database |
//! | `with_max_batch_bytes` | 8 MiB | bytes of rows per write transaction (a larger row goes alone) |
//! | `with_max_pending_bytes` | 256 MiB | bound on the memory of rows waiting for the database, writes in flight included |
//! | `with_write_lanes` | 2 | write lanes, at most one transaction in flight each (each run keeps to one lane); small chunks of all lanes go out as one transaction |
//! | `with_min_overlap_bytes` | 1 MiB | lanes write at the same time only while every write in flight is a chunk this large; smaller writes take turns |
//! | `with_write_timeout` | 30 s | one write's time limit before it is retried |
//! | `with_retry` | 50 ms doubling to 2 s, jitter | backoff between retries |
//! | `with_arbiters` | half the CPUs, 1 to 4 | threads for the run actors |
//! | `with_run_mailbox` | 256 | results queued per run before senders wait |
//! | `with_heartbeat_interval` | 30 s | heartbeat of live runs, for reconciliation |
//! | `with_spill_path` | none | where shutdown appends rows it could not write (and the disk buffer does not hold) |
//! | `with_buffer_dir` | none | the disk buffer's directory: a write-ahead log of everything accepted |
//! | `with_when_full` | `Block` | at the memory bounds: wait, refuse (`Reject`), or go to the disk buffer (`Overflow`) |
//! | `with_buffer_sync` | every 100 ms | when the disk buffer forces its appends to the disk |
//! | `with_buffer_segment_bytes` | 64 MiB | size of one segment file of the disk buffer |
//! | `with_buffer_direct_writes` | `true` | write the disk buffer past the page cache (`O_DIRECT`) where the filesystem allows it |
//! | `with_rejected_handler` | none | receives rows the database refused |
//! | `with_instance_id` | host/pid/random | this process's `runtallyOwner` |
//!
//! # Feature flags
//!
//! None by default: the `runtally` command-line tool (demo, replay, loadgen, status, list,
//! reconcile) is the `runtally-cli` crate of the same workspace, so its dependencies (clap,
//! indicatif, a `tracing` subscriber, a Prometheus exporter, mimalloc) never reach an
//! embedder's build; `scripts/test` checks the library's dependency tree for them.
//!
//! - `metrics`: publishes the aggregator's metrics through the
//!   [`metrics`](https://docs.rs/metrics) facade under Prometheus-style names; see
//!   [`metrics::facade`](crate::metrics).
//! - `tracing-layer`: [`layer()`](crate::layer()), a `tracing_subscriber::Layer` that turns
//!   GenAI agent spans (rig's, or any following the OpenTelemetry GenAI conventions) into runs
//!   and tasks with no runtally call in the host's code. The mapping is in [`genai`], the
//!   layer's own notes in the `layer` module's docs. Adds `tracing-subscriber` with its
//!   `registry` only.
//!
//! # Minimum supported Rust version
//!
//! Rust 1.89.

pub mod aggregator;
#[doc(hidden)]
pub mod bench_support;
pub mod buffer;
pub mod config;
pub mod error;
mod execution;
pub mod genai;
mod inbox;
#[cfg(feature = "tracing-layer")]
pub mod layer;
pub mod metrics;
pub mod model;
mod registry;
mod rejected;
mod retry;
pub mod rows;
mod slots;
pub mod spill;
pub mod store;
mod sync;
mod writer;

pub use aggregator::{Aggregator, RunHandle, RunStart, ShutdownReport};
pub use config::{
    AggregatorConfig, AggregatorConfigBuilder, Neo4jConfig, Neo4jConfigBuilder, SyncPolicy,
    WhenFull,
};
pub use error::{
    BeginError, BufferError, ConfigError, FlushError, ModelError, ReconcileError, RecordError,
    StartError, StoreError, StoreErrorKind, SyncBufferError,
};
pub use execution::{RunSnapshot, Totals};
#[cfg(feature = "tracing-layer")]
pub use layer::{layer, RuntallyLayer};
pub use metrics::{BufferMetrics, FlushReason, MetricsSnapshot, TracingMetrics};
pub use model::{
    ExecutionId, PlanId, QcVerification, RunStatus, TaskDefinition, TaskId, TaskResult, TaskStatus,
    TokenUsage,
};
pub use rejected::{RejectedHandler, RejectedWrite};
pub use retry::RetryPolicy;
