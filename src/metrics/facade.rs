//! Publishing through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`).
//!
//! The writer publishes every second (and once more at shutdown): counters as absolute values
//! read from runtally's own atomics, so the hot path never touches the facade. Flush latency is
//! recorded into a histogram once per flush. Install any recorder (e.g.
//! `metrics-exporter-prometheus`) to collect them; without one, publishing is a no-op.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `runtally_runs_started_total` | counter | | runs begun |
//! | `runtally_runs_finished_total` | counter | `status` = `completed`, `failed`, `cancelled` | runs ended |
//! | `runtally_live_runs` | gauge | | runs in the registry |
//! | `runtally_tasks_total` | counter | `status` = `success`, `failure` | task results accepted |
//! | `runtally_tasks_replaced_total` | counter | | results that replaced an earlier one for the same task |
//! | `runtally_tokens_total` | counter | `direction` = `input`, `output` | tokens in accepted results |
//! | `runtally_tool_calls_total` | counter | | tool calls in accepted results |
//! | `runtally_actor_messages_total` | counter | `actor` = `run`, `writer` | messages handled (for run actors: task results and other messages) |
//! | `runtally_actor_mailbox_depth` | gauge | `actor` = `run`, `writer` | task results and messages (run actors) or deliveries (writer inbox) waiting |
//! | `runtally_pending_rows` | gauge | | rows accepted and not yet written |
//! | `runtally_pending_bytes` | gauge | | bytes of rows accepted and not yet written (by row weight) |
//! | `runtally_batch_bytes` | histogram | | bytes of one committed batch (by row weight) |
//! | `runtally_oversize_splits_total` | counter | | writes the server refused for their size, split by bytes |
//! | `runtally_batches_written_total` | counter | | transactions committed |
//! | `runtally_rows_written_total` | counter | `kind` = `execution`, `task` | rows committed |
//! | `runtally_flush_duration_seconds` | histogram | | one chunk's write, retries included |
//! | `runtally_flushes_total` | counter | `reason` = `size`, `timer`, `urgent`, `manual`, `shutdown` | flushes started |
//! | `runtally_write_retries_total` | counter | | writes sent again after a retriable error |
//! | `runtally_write_errors_total` | counter | | failed write attempts |
//! | `runtally_rows_rejected_total` | counter | | rows the database refused permanently |
//! | `runtally_rows_dropped_total` | counter | | rows given up (shutdown deadline, no spill file) |
//! | `runtally_rows_spilled_total` | counter | | rows appended to the spill file |
//! | `runtally_rejected_messages_total` | counter | | results refused (invalid, or run finished) |
//! | `runtally_full_rejections_total` | counter | | `try_` calls refused at the pending bound |
//! | `runtally_database_up` | gauge | | 1 if the last database call succeeded, else 0 |
//! | `runtally_buffer_bytes` | gauge | | bytes of the disk buffer's segment files |
//! | `runtally_buffer_segments` | gauge | | the disk buffer's segment files |
//! | `runtally_buffer_backlog_rows` | gauge | | rows held on disk only, waiting to be read back |
//! | `runtally_buffer_records_total` | counter | `op` = `appended`, `loaded`, `skipped` | records appended, read back, skipped as torn or corrupt |
//! | `runtally_buffer_appended_bytes_total` | counter | | bytes appended to the disk buffer |
//! | `runtally_buffer_overflows_total` | counter | | times memory filled and rows went to the disk buffer |
//! | `runtally_buffer_errors_total` | counter | | failed disk-buffer appends, syncs, reads (a full disk among them) |
//! | `runtally_spans_total` | counter | `kind` = `run`, `task` | runs begun and task results recorded from spans (the `tracing` layer) |
//! | `runtally_spans_dropped_total` | counter | | runs, results or run ends from spans that runtally refused |
//! | `runtally_span_fields_malformed_total` | counter | | span field values ignored for their type or range |
//! | `runtally_spans_open` | gauge | `kind` = `run`, `task` | run and task spans open now |

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use super::MetricsSnapshot;

/// Publishes a snapshot: counters as absolute values, gauges as current values.
pub(crate) fn publish(s: &MetricsSnapshot) {
    counter!("runtally_runs_started_total").absolute(s.runs_started);
    counter!("runtally_runs_finished_total", "status" => "completed").absolute(s.runs_completed);
    counter!("runtally_runs_finished_total", "status" => "failed").absolute(s.runs_failed);
    counter!("runtally_runs_finished_total", "status" => "cancelled").absolute(s.runs_cancelled);
    gauge!("runtally_live_runs").set(s.live_runs as f64);
    counter!("runtally_tasks_total", "status" => "success").absolute(s.tasks_succeeded);
    counter!("runtally_tasks_total", "status" => "failure").absolute(s.tasks_failed);
    counter!("runtally_tasks_replaced_total").absolute(s.tasks_replaced);
    counter!("runtally_tokens_total", "direction" => "input").absolute(s.tokens_input);
    counter!("runtally_tokens_total", "direction" => "output").absolute(s.tokens_output);
    counter!("runtally_tool_calls_total").absolute(s.tool_calls);
    counter!("runtally_actor_messages_total", "actor" => "run").absolute(s.run_actor.messages);
    counter!("runtally_actor_messages_total", "actor" => "writer")
        .absolute(s.writer_actor.messages);
    gauge!("runtally_actor_mailbox_depth", "actor" => "run").set(s.run_actor.mailbox_depth as f64);
    gauge!("runtally_actor_mailbox_depth", "actor" => "writer")
        .set(s.writer_actor.mailbox_depth as f64);
    gauge!("runtally_pending_rows").set(s.pending_rows as f64);
    gauge!("runtally_pending_bytes").set(s.pending_bytes as f64);
    counter!("runtally_oversize_splits_total").absolute(s.oversize_splits);
    counter!("runtally_batches_written_total").absolute(s.batches_written);
    counter!("runtally_rows_written_total", "kind" => "execution")
        .absolute(s.execution_rows_written);
    counter!("runtally_rows_written_total", "kind" => "task").absolute(s.task_rows_written);
    let r = &s.flush_reasons;
    for (reason, n) in [
        ("size", r.size),
        ("timer", r.timer),
        ("urgent", r.urgent),
        ("manual", r.manual),
        ("shutdown", r.shutdown),
    ] {
        counter!("runtally_flushes_total", "reason" => reason).absolute(n);
    }
    counter!("runtally_write_retries_total").absolute(s.retries);
    counter!("runtally_write_errors_total").absolute(s.write_errors);
    counter!("runtally_rows_rejected_total").absolute(s.rows_rejected);
    counter!("runtally_rows_dropped_total").absolute(s.rows_dropped);
    counter!("runtally_rows_spilled_total").absolute(s.rows_spilled);
    counter!("runtally_rejected_messages_total").absolute(s.rejected_messages);
    counter!("runtally_full_rejections_total").absolute(s.full_rejections);
    gauge!("runtally_database_up").set(if s.database_up { 1.0 } else { 0.0 });
    let b = &s.buffer;
    gauge!("runtally_buffer_bytes").set(b.bytes as f64);
    gauge!("runtally_buffer_segments").set(b.segments as f64);
    gauge!("runtally_buffer_backlog_rows").set(b.backlog_rows as f64);
    counter!("runtally_buffer_records_total", "op" => "appended").absolute(b.records_appended);
    counter!("runtally_buffer_records_total", "op" => "loaded").absolute(b.records_loaded);
    counter!("runtally_buffer_records_total", "op" => "skipped").absolute(b.records_skipped);
    counter!("runtally_buffer_appended_bytes_total").absolute(b.bytes_appended);
    counter!("runtally_buffer_overflows_total").absolute(b.overflow_events);
    counter!("runtally_buffer_errors_total").absolute(b.errors);
    let t = &s.tracing;
    counter!("runtally_spans_total", "kind" => "run").absolute(t.runs);
    counter!("runtally_spans_total", "kind" => "task").absolute(t.tasks);
    counter!("runtally_spans_dropped_total").absolute(t.dropped);
    counter!("runtally_span_fields_malformed_total").absolute(t.malformed_fields);
    gauge!("runtally_spans_open", "kind" => "run").set(t.open_runs as f64);
    gauge!("runtally_spans_open", "kind" => "task").set(t.open_tasks as f64);
}

/// Records one flush's latency.
pub(crate) fn record_flush(latency: Duration) {
    histogram!("runtally_flush_duration_seconds").record(latency.as_secs_f64());
}

/// Records one committed batch's weight.
pub(crate) fn record_batch_bytes(bytes: usize) {
    histogram!("runtally_batch_bytes").record(bytes as f64);
}
