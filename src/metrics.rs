//! Counters and histograms the actors update, and the [`MetricsSnapshot`] the host reads.
//!
//! The hot path only touches relaxed atomics (no locks); the flush-latency histogram is behind a
//! mutex because it is updated once per flush, not per message. With the `metrics` feature the
//! same figures are also published through the `metrics` facade under Prometheus-style names;
//! see the table in the [`facade`] module.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::model::RunStatus;
use crate::sync::lock;

#[cfg(feature = "metrics")]
pub mod facade;

/// Why the writer flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushReason {
    /// Pending task rows reached `max_batch_rows`.
    Size,
    /// `flush_interval` passed.
    Timer,
    /// A run failed (or finished) and its state went out ahead of the queue.
    Urgent,
    /// The host called `flush()`.
    Manual,
    /// The aggregator is shutting down.
    Shutdown,
}

impl FlushReason {
    const ALL: [FlushReason; 5] = [
        FlushReason::Size,
        FlushReason::Timer,
        FlushReason::Urgent,
        FlushReason::Manual,
        FlushReason::Shutdown,
    ];

    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Size => "size",
            FlushReason::Timer => "timer",
            FlushReason::Urgent => "urgent",
            FlushReason::Manual => "manual",
            FlushReason::Shutdown => "shutdown",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Padding between groups of counters written by different threads, so that a caller's
/// increment does not bounce the cache line a run actor or the writer is writing.
#[derive(Debug, Default)]
struct CacheLine {
    _pad: [u64; 16],
}

/// Live counters, shared by every actor of one aggregator.
///
/// `repr(C)` keeps the field order, so the padding really separates the groups: fields written
/// by the host's threads, by the run actors, and by the writer.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Metrics {
    // Written by the host's threads (handles, begin_run).
    pub(crate) runs_started: AtomicU64,
    pub(crate) run_sent: AtomicU64,
    pub(crate) full_rejections: AtomicU64,
    pub(crate) live_runs: AtomicI64,
    // Written by the tracing layer, on the host's threads.
    pub(crate) tracing_runs: AtomicU64,
    pub(crate) tracing_tasks: AtomicU64,
    pub(crate) tracing_dropped: AtomicU64,
    pub(crate) tracing_malformed: AtomicU64,
    pub(crate) tracing_open_runs: AtomicI64,
    pub(crate) tracing_open_tasks: AtomicI64,
    _callers: CacheLine,
    // Written by the run actors.
    pub(crate) run_handled: AtomicU64,
    runs_finished: [AtomicU64; 3],
    pub(crate) tasks_succeeded: AtomicU64,
    pub(crate) tasks_failed: AtomicU64,
    pub(crate) tasks_replaced: AtomicU64,
    pub(crate) tokens_input: AtomicU64,
    pub(crate) tokens_output: AtomicU64,
    pub(crate) tool_calls: AtomicU64,
    pub(crate) rejected_messages: AtomicU64,
    _runs: CacheLine,
    // Written by the writer.
    pub(crate) writer_messages: AtomicU64,
    pub(crate) pending_rows: AtomicI64,
    pub(crate) pending_bytes: AtomicI64,
    pub(crate) batches_written: AtomicU64,
    pub(crate) execution_rows_written: AtomicU64,
    pub(crate) task_rows_written: AtomicU64,
    flush_reasons: [AtomicU64; 5],
    pub(crate) retries: AtomicU64,
    pub(crate) write_errors: AtomicU64,
    pub(crate) rows_rejected: AtomicU64,
    pub(crate) rows_dropped: AtomicU64,
    pub(crate) rows_spilled: AtomicU64,
    pub(crate) oversize_splits: AtomicU64,
    /// Whether a follower's `NotALeader` refusal was logged at ERROR already (once per writer).
    pub(crate) not_a_leader_logged: AtomicBool,
    pub(crate) database_up: AtomicBool,
    /// Rows held on disk only (the backlog), by the writer.
    pub(crate) buffer_backlog_rows: AtomicI64,
    pub(crate) overflow_events: AtomicU64,
    // Written by the disk buffer's thread.
    pub(crate) buffer_bytes: AtomicU64,
    pub(crate) buffer_segments: AtomicU64,
    pub(crate) buffer_records_appended: AtomicU64,
    pub(crate) buffer_bytes_appended: AtomicU64,
    pub(crate) buffer_records_loaded: AtomicU64,
    pub(crate) buffer_records_skipped: AtomicU64,
    pub(crate) buffer_errors: AtomicU64,
    flush_latency_us: Mutex<Histogram<u64>>,
    batch_bytes: Mutex<Histogram<u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            runs_started: AtomicU64::new(0),
            run_sent: AtomicU64::new(0),
            full_rejections: AtomicU64::new(0),
            live_runs: AtomicI64::new(0),
            tracing_runs: AtomicU64::new(0),
            tracing_tasks: AtomicU64::new(0),
            tracing_dropped: AtomicU64::new(0),
            tracing_malformed: AtomicU64::new(0),
            tracing_open_runs: AtomicI64::new(0),
            tracing_open_tasks: AtomicI64::new(0),
            _callers: CacheLine::default(),
            run_handled: AtomicU64::new(0),
            runs_finished: Default::default(),
            tasks_succeeded: AtomicU64::new(0),
            tasks_failed: AtomicU64::new(0),
            tasks_replaced: AtomicU64::new(0),
            tokens_input: AtomicU64::new(0),
            tokens_output: AtomicU64::new(0),
            tool_calls: AtomicU64::new(0),
            rejected_messages: AtomicU64::new(0),
            _runs: CacheLine::default(),
            writer_messages: AtomicU64::new(0),
            pending_rows: AtomicI64::new(0),
            pending_bytes: AtomicI64::new(0),
            batches_written: AtomicU64::new(0),
            execution_rows_written: AtomicU64::new(0),
            task_rows_written: AtomicU64::new(0),
            flush_reasons: Default::default(),
            retries: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            rows_rejected: AtomicU64::new(0),
            rows_dropped: AtomicU64::new(0),
            rows_spilled: AtomicU64::new(0),
            oversize_splits: AtomicU64::new(0),
            not_a_leader_logged: AtomicBool::new(false),
            database_up: AtomicBool::new(false),
            buffer_backlog_rows: AtomicI64::new(0),
            overflow_events: AtomicU64::new(0),
            buffer_bytes: AtomicU64::new(0),
            buffer_segments: AtomicU64::new(0),
            buffer_records_appended: AtomicU64::new(0),
            buffer_bytes_appended: AtomicU64::new(0),
            buffer_records_loaded: AtomicU64::new(0),
            buffer_records_skipped: AtomicU64::new(0),
            buffer_errors: AtomicU64::new(0),
            // 1 µs to 10 min at 3 significant digits.
            flush_latency_us: Mutex::new(
                Histogram::new_with_bounds(1, 600_000_000, 3)
                    .expect("constant histogram bounds are valid"),
            ),
            // 1 byte to 4 GiB at 3 significant digits.
            batch_bytes: Mutex::new(
                Histogram::new_with_bounds(1, 1 << 32, 3)
                    .expect("constant histogram bounds are valid"),
            ),
        }
    }
}

impl Metrics {
    pub(crate) fn run_finished(&self, status: RunStatus) {
        let i = match status {
            RunStatus::Completed => 0,
            RunStatus::Failed => 1,
            RunStatus::Cancelled | RunStatus::Running => 2,
        };
        self.runs_finished[i].fetch_add(1, Relaxed);
    }

    pub(crate) fn flushed(&self, reason: FlushReason) {
        self.flush_reasons[reason.index()].fetch_add(1, Relaxed);
    }

    pub(crate) fn record_flush_latency(&self, latency: Duration) {
        #[cfg(feature = "metrics")]
        facade::record_flush(latency);
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, 600_000_000);
        let mut h = lock(&self.flush_latency_us);
        // Values are clamped into the histogram's bounds, so recording cannot fail.
        let _ = h.record(us);
    }

    /// Records the weight of one committed batch.
    pub(crate) fn record_batch_bytes(&self, bytes: usize) {
        #[cfg(feature = "metrics")]
        facade::record_batch_bytes(bytes);
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX).clamp(1, 1 << 32);
        // Clamped into the histogram's bounds, so recording cannot fail.
        let _ = lock(&self.batch_bytes).record(bytes);
    }

    pub(crate) fn snapshot(&self, writer_inbox: usize) -> MetricsSnapshot {
        let latency = {
            let h = lock(&self.flush_latency_us);
            LatencySummary {
                count: h.len(),
                p50_ms: h.value_at_quantile(0.50) as f64 / 1000.0,
                p90_ms: h.value_at_quantile(0.90) as f64 / 1000.0,
                p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
                max_ms: h.max() as f64 / 1000.0,
            }
        };
        let batch_bytes = {
            let h = lock(&self.batch_bytes);
            SizeSummary {
                count: h.len(),
                p50: h.value_at_quantile(0.50),
                p99: h.value_at_quantile(0.99),
                max: h.max(),
            }
        };
        let reasons = FlushReason::ALL.map(|r| self.flush_reasons[r.index()].load(Relaxed));
        MetricsSnapshot {
            runs_started: self.runs_started.load(Relaxed),
            runs_completed: self.runs_finished[0].load(Relaxed),
            runs_failed: self.runs_finished[1].load(Relaxed),
            runs_cancelled: self.runs_finished[2].load(Relaxed),
            live_runs: self.live_runs.load(Relaxed).max(0) as u64,
            run_actor: {
                let handled = self.run_handled.load(Relaxed);
                ActorMetrics {
                    messages: handled,
                    mailbox_depth: self.run_sent.load(Relaxed).saturating_sub(handled),
                }
            },
            // The writer's queue is its inbox, which only the inbox can measure.
            writer_actor: ActorMetrics {
                messages: self.writer_messages.load(Relaxed),
                mailbox_depth: writer_inbox as u64,
            },
            tasks_succeeded: self.tasks_succeeded.load(Relaxed),
            tasks_failed: self.tasks_failed.load(Relaxed),
            tasks_replaced: self.tasks_replaced.load(Relaxed),
            tokens_input: self.tokens_input.load(Relaxed),
            tokens_output: self.tokens_output.load(Relaxed),
            tool_calls: self.tool_calls.load(Relaxed),
            rejected_messages: self.rejected_messages.load(Relaxed),
            full_rejections: self.full_rejections.load(Relaxed),
            pending_rows: self.pending_rows.load(Relaxed).max(0) as u64,
            pending_bytes: self.pending_bytes.load(Relaxed).max(0) as u64,
            batch_bytes,
            oversize_splits: self.oversize_splits.load(Relaxed),
            batches_written: self.batches_written.load(Relaxed),
            execution_rows_written: self.execution_rows_written.load(Relaxed),
            task_rows_written: self.task_rows_written.load(Relaxed),
            flush_latency: latency,
            flush_reasons: FlushReasons {
                size: reasons[0],
                timer: reasons[1],
                urgent: reasons[2],
                manual: reasons[3],
                shutdown: reasons[4],
            },
            retries: self.retries.load(Relaxed),
            write_errors: self.write_errors.load(Relaxed),
            rows_rejected: self.rows_rejected.load(Relaxed),
            rows_dropped: self.rows_dropped.load(Relaxed),
            rows_spilled: self.rows_spilled.load(Relaxed),
            database_up: self.database_up.load(Relaxed),
            buffer: BufferMetrics {
                bytes: self.buffer_bytes.load(Relaxed),
                segments: self.buffer_segments.load(Relaxed),
                backlog_rows: self.buffer_backlog_rows.load(Relaxed).max(0) as u64,
                records_appended: self.buffer_records_appended.load(Relaxed),
                bytes_appended: self.buffer_bytes_appended.load(Relaxed),
                records_loaded: self.buffer_records_loaded.load(Relaxed),
                records_skipped: self.buffer_records_skipped.load(Relaxed),
                overflow_events: self.overflow_events.load(Relaxed),
                errors: self.buffer_errors.load(Relaxed),
            },
            tracing: TracingMetrics {
                runs: self.tracing_runs.load(Relaxed),
                tasks: self.tracing_tasks.load(Relaxed),
                dropped: self.tracing_dropped.load(Relaxed),
                malformed_fields: self.tracing_malformed.load(Relaxed),
                open_runs: self.tracing_open_runs.load(Relaxed).max(0) as u64,
                open_tasks: self.tracing_open_tasks.load(Relaxed).max(0) as u64,
            },
        }
    }
}

/// Messages handled by one kind of actor, and how much waits for it: task results (and other
/// messages) waiting for the run actors; deliveries in the writer's inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ActorMetrics {
    /// Messages handled so far.
    pub messages: u64,
    /// Messages sent and not yet handled.
    pub mailbox_depth: u64,
}

/// Flush latency (one store write, retries included) in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Flushes measured.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// Sizes of committed batches in bytes (by row weight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SizeSummary {
    /// Batches measured.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

/// The disk buffer (all zero without one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BufferMetrics {
    /// Bytes of the segment files on disk now.
    pub bytes: u64,
    /// Segment files on disk now.
    pub segments: u64,
    /// Rows held on disk only, waiting to be read back (an overflow, or a previous process's).
    pub backlog_rows: u64,
    /// Records appended (one per delivery of a run's rows).
    pub records_appended: u64,
    /// Bytes appended.
    pub bytes_appended: u64,
    /// Records read back from the backlog.
    pub records_loaded: u64,
    /// Records skipped as torn, corrupt or undecodable (each logged with its segment and
    /// offset).
    pub records_skipped: u64,
    /// Times memory filled and new rows started going to the disk buffer.
    pub overflow_events: u64,
    /// Failed appends, syncs, reads or deletions (a full disk among them).
    pub errors: u64,
}

/// How many flushes each reason started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FlushReasons {
    /// `max_batch_rows` or `max_batch_bytes` reached.
    pub size: u64,
    /// `flush_interval` passed.
    pub timer: u64,
    /// A failed or recovered run's state sent ahead, or a finished run's state sealed early.
    pub urgent: u64,
    /// `flush()` called.
    pub manual: u64,
    /// Shutdown.
    pub shutdown: u64,
}

/// A point-in-time copy of an aggregator's metrics. Serializes to JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Runs begun.
    pub runs_started: u64,
    /// Runs finished `completed`.
    pub runs_completed: u64,
    /// Runs finished `failed`.
    pub runs_failed: u64,
    /// Runs cancelled.
    pub runs_cancelled: u64,
    /// Runs in the registry now (live, or finished and not yet durable).
    pub live_runs: u64,
    /// The per-run actors, all together.
    pub run_actor: ActorMetrics,
    /// The writer actor.
    pub writer_actor: ActorMetrics,
    /// Task results accepted with status `success`.
    pub tasks_succeeded: u64,
    /// Task results accepted with status `failure`.
    pub tasks_failed: u64,
    /// Task results that replaced an earlier result for the same task.
    pub tasks_replaced: u64,
    /// Input tokens in accepted results.
    pub tokens_input: u64,
    /// Output tokens in accepted results.
    pub tokens_output: u64,
    /// Tool calls in accepted results.
    pub tool_calls: u64,
    /// Messages refused: invalid input, or a run already finished.
    pub rejected_messages: u64,
    /// `try_` calls refused because pending writes were at the bound.
    pub full_rejections: u64,
    /// Rows accepted and not yet written.
    pub pending_rows: u64,
    /// Bytes of rows accepted and not yet written (by row weight).
    pub pending_bytes: u64,
    /// Sizes of committed batches.
    pub batch_bytes: SizeSummary,
    /// Writes the server refused for their size, split by bytes.
    pub oversize_splits: u64,
    /// Transactions committed.
    pub batches_written: u64,
    /// Execution rows committed.
    pub execution_rows_written: u64,
    /// Task rows committed.
    pub task_rows_written: u64,
    /// Flush latency.
    pub flush_latency: LatencySummary,
    /// Flushes by reason.
    pub flush_reasons: FlushReasons,
    /// Writes sent again after a retriable error.
    pub retries: u64,
    /// Failed write attempts (retried or not).
    pub write_errors: u64,
    /// Rows the database refused permanently, reported to the host.
    pub rows_rejected: u64,
    /// Rows given up at shutdown and not spilled.
    pub rows_dropped: u64,
    /// Rows appended to the spill file at shutdown.
    pub rows_spilled: u64,
    /// Whether the last database call succeeded.
    pub database_up: bool,
    /// The disk buffer.
    pub buffer: BufferMetrics,
    /// The `tracing` layer (all 0 without the `tracing-layer` feature).
    pub tracing: TracingMetrics,
}

/// What the `tracing` layer recorded from spans, and what it could not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TracingMetrics {
    /// Runs begun from spans.
    pub runs: u64,
    /// Task results recorded from spans.
    pub tasks: u64,
    /// Runs, results or run ends from spans that runtally refused (full, shutting down, an id
    /// already live, an invalid value): not recorded, logged at WARN.
    pub dropped: u64,
    /// Field values ignored for their type or range (negative tokens, text for a number).
    pub malformed_fields: u64,
    /// Run spans open now (their runs are live).
    pub open_runs: u64,
    /// Task spans open now (their results are not recorded until they close).
    pub open_tasks: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reports_counters_and_latency_percentiles() {
        let m = Metrics::default();
        m.runs_started.fetch_add(2, Relaxed);
        m.run_finished(RunStatus::Failed);
        m.flushed(FlushReason::Urgent);
        m.flushed(FlushReason::Urgent);
        for ms in 1..=100 {
            m.record_flush_latency(Duration::from_millis(ms));
        }
        let s = m.snapshot(0);
        assert_eq!(s.runs_started, 2);
        assert_eq!(s.runs_failed, 1);
        assert_eq!(s.flush_reasons.urgent, 2);
        assert_eq!(s.flush_latency.count, 100);
        assert!((49.0..=51.0).contains(&s.flush_latency.p50_ms), "{s:?}");
        assert!((98.0..=100.1).contains(&s.flush_latency.p99_ms), "{s:?}");
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["flush_reasons"]["urgent"], 2);
        assert_eq!(json["runs_failed"], 1);
    }
}
