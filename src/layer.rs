//! Zero-code capture: a [`tracing_subscriber::Layer`] that turns GenAI agent spans (rig's, or
//! any code following the OpenTelemetry GenAI conventions) into runs and tasks.
//!
//! ```no_run
//! # async fn demo(aggregator: runtally::Aggregator) {
//! use tracing_subscriber::layer::SubscriberExt;
//! let subscriber = tracing_subscriber::registry().with(runtally::layer(&aggregator));
//! tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
//! // … the agents run …
//! aggregator.shutdown(std::time::Duration::from_secs(10)).await;
//! # }
//! ```
//!
//! Install it as the global subscriber: the registry closes a span's parent through the thread's
//! current subscriber, so with a thread-local one (`set_default`) a run whose last task ends on
//! another thread never closes. The subscriber keeps a clone of the aggregator, so call
//! [`Aggregator::shutdown`](crate::Aggregator::shutdown) before the process exits. One runtally
//! layer per subscriber: a second one leaves the spans the first tracks alone.
//!
//! # Mapping
//!
//! The [GenAI mapping](crate::genai#mapping) (spans → runs, tasks, tokens, tool calls, errors,
//! QC), as for OTLP traces. What the layer adds: what a span is (run, task, model call, tool
//! call), a run's id, plan and `tasksTotal` and a generated task id are decided when the span
//! is created, from the fields given then; every other value counts when it is recorded later
//! (`Span::record`), up to the span's close. A run without `runtally.execution_id` is named
//! `<instance id>-<n>` (n counts the aggregator's such runs from 1). Duration: from the span's
//! creation to its close. An ERROR event fails the task it happens in, as an `exception` event
//! does in a trace. runtally's own events (targets `runtally` and `runtally::…`) never fail a
//! task.
//!
//! - rig 0.44 opens `invoke_agent` only when no span is current; inside a span of the host's it
//!   records its calls on that span. To make each agent call a task of a host's run, call it
//!   inside a span with `runtally.task_id` (or `gen_ai.operation.name = "invoke_agent"`). rig
//!   records no error on a run that fails (only on tool calls): such a run reads `completed`
//!   unless a span of the host's around it records `error.type`.
//! - Spans without `gen_ai.operation.name` or a `runtally.*` field are not looked at beyond
//!   their field names; events only when they are at ERROR or carry `error.type` or a score.
//!
//! # Never blocks, never panics
//!
//! The layer runs on the host's threads inside `tracing`'s calls, so it cannot wait: results go
//! in with [`RunHandle::try_task_finished`], and a run's end is queued for its actor behind
//! them (so it counts them, and a shutdown that begins later writes it). A result refused
//! because runtally is full or shutting down, a run id already live (nothing below that span is
//! recorded then), or an invalid value is dropped and counted (`MetricsSnapshot::tracing.dropped`;
//! a WARN line at most every 10 s); a field value of the wrong type or range (negative tokens,
//! text where a number belongs) is ignored and counted (`tracing.malformed_fields`). A run's
//! end its actor refuses (a shutdown racing it) is counted in `rejected_messages`. Spans still
//! open are counted (`tracing.open_runs`, `tracing.open_tasks`), and a run whose span never
//! closed is in [`ShutdownReport::unfinished_runs`](crate::ShutdownReport::unfinished_runs).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use chrono::Utc;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use crate::aggregator::{Aggregator, RunHandle, RunStart};
use crate::error::RecordError;
use crate::genai::mapping::{self, Operation, SpanFields};
use crate::genai::tally::{display_name, Helper, Tally};
pub use crate::genai::MAPPING_VERSION;
use crate::model::{ExecutionId, PlanId, TaskId};

/// The layer: add it to a `tracing_subscriber::registry()`; see the [module docs](self).
pub fn layer(aggregator: &Aggregator) -> RuntallyLayer {
    RuntallyLayer {
        aggregator: aggregator.clone(),
        last_warning: AtomicU64::new(0),
    }
}

/// A [`Layer`] that records GenAI agent spans as runs and tasks; made by [`layer()`].
pub struct RuntallyLayer {
    aggregator: Aggregator,
    /// When a drop was last logged (seconds since the layer's epoch, +1): at most one WARN line
    /// every [`WARN_EVERY_SECS`], so a full runtally does not flood the host's log.
    last_warning: AtomicU64,
}

/// The least time between two WARN lines about dropped spans.
const WARN_EVERY_SECS: u64 = 10;

/// A fixed instant to count the WARN lines' spacing from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

// The layer lives in the host's subscriber, shared by every thread.
const _: fn() = || {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<RuntallyLayer>();
    shared::<Tracked>();
};

impl std::fmt::Debug for RuntallyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntallyLayer")
            .field("aggregator", &self.aggregator)
            .finish_non_exhaustive()
    }
}

/// What runtally keeps in a span it tracks (the span's extensions).
struct Tracked {
    role: Role,
    tally: Tally,
    opened: Instant,
}

enum Role {
    Run(Arc<RunState>),
    Task {
        run: Arc<RunState>,
        id: TaskId,
    },
    /// A model call, tool call or nested agent: it counts for the tracked span above it.
    Helper(Helper),
    /// A run runtally refused (its id already live, shutting down…): the spans below it are
    /// not recorded either, rather than each becoming a run of its own.
    Refused,
}

/// A live run: its handle, the count that numbers its tasks, and the model calls its tasks
/// saw (so the run's own recorded usage, a total, is not counted again).
struct RunState {
    handle: RunHandle,
    tasks: AtomicU32,
    inferences: AtomicU64,
}

/// An event's fields: what a task takes from it, and its message.
#[derive(Default)]
struct EventFields {
    fields: SpanFields,
    message: Option<String>,
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields.record_str(field, value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.record_u64(field, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.record_i64(field, value);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.record_f64(field, value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.record_bool(field, value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        } else {
            self.fields.record_debug(field, value);
        }
    }
}

impl RuntallyLayer {
    fn metrics(&self) -> &crate::metrics::Metrics {
        self.aggregator.shared_metrics()
    }

    fn dropped(&self, what: &str, id: &str, error: &dyn std::fmt::Display) {
        let dropped = self
            .metrics()
            .tracing_dropped
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        let now = epoch().elapsed().as_secs() + 1;
        let last = self.last_warning.load(Ordering::Relaxed);
        if (last == 0 || now >= last + WARN_EVERY_SECS)
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                target: "runtally::layer",
                id,
                %error,
                dropped,
                "{what} from a span not recorded (dropped counts all of them; this line comes \
                 at most every {WARN_EVERY_SECS} s)"
            );
        }
    }

    fn count_malformed(&self, values: u32) {
        if values > 0 {
            self.metrics()
                .tracing_malformed
                .fetch_add(u64::from(values), Ordering::Relaxed);
        }
    }

    /// Begins a run for a span; `None` (counted) if runtally refuses it.
    fn begin(&self, fields: &SpanFields, span_name: &str) -> Option<Role> {
        let id = match &fields.execution_id {
            Some(id) => id.clone(),
            None => format!(
                "{}-{}",
                self.aggregator.instance_id(),
                self.aggregator.next_span_run()
            ),
        };
        let plan = fields
            .plan_id
            .clone()
            .unwrap_or_else(|| display_name(fields, span_name));
        let ids = ExecutionId::new(id.as_str()).and_then(|e| Ok((e, PlanId::new(plan)?)));
        let (execution, plan) = match ids {
            Ok(ids) => ids,
            Err(e) => {
                self.dropped("a run", &id, &e);
                return None;
            }
        };
        let start = RunStart::new(execution, plan, fields.total_tasks.unwrap_or(0));
        match self.aggregator.begin_run(start) {
            Ok(handle) => {
                let m = self.metrics();
                m.tracing_runs.fetch_add(1, Ordering::Relaxed);
                m.tracing_open_runs.fetch_add(1, Ordering::Relaxed);
                Some(Role::Run(Arc::new(RunState {
                    handle,
                    tasks: AtomicU32::new(0),
                    inferences: AtomicU64::new(0),
                })))
            }
            Err(e) => {
                self.dropped("a run", &id, &e);
                None
            }
        }
    }

    fn record(&self, handle: &RunHandle, id: TaskId, tracked: Tracked) {
        let elapsed = u64::try_from(tracked.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (task, result) = tracked.tally.into_result(id, elapsed);
        match handle.try_task_finished(task, result) {
            Ok(()) => {
                self.metrics().tracing_tasks.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.dropped_result(handle, &e),
        }
    }

    fn dropped_result(&self, handle: &RunHandle, error: &RecordError) {
        self.dropped("a task result", handle.execution_id().as_str(), error);
    }

    /// Ends a run: its own calls become a task, then its end is queued for its actor.
    fn end(&self, run: &RunState, mut tracked: Tracked, span_name: &str) {
        let own_work = tracked.tally.run_did_work(
            run.inferences.load(Ordering::Relaxed),
            run.tasks.load(Ordering::Relaxed),
        );
        if own_work {
            // `-0`: generated task ids count from 1, so the run's own work never takes one.
            match TaskId::new(format!(
                "{}-0",
                display_name(&tracked.tally.fields, span_name)
            )) {
                Ok(id) => self.record(&run.handle, id, tracked),
                Err(e) => self.dropped("a task result", run.handle.execution_id().as_str(), &e),
            }
        }
        self.metrics()
            .tracing_open_runs
            .fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = run.handle.finish_detached(Utc::now()) {
            self.dropped("the end of a run", run.handle.execution_id().as_str(), &e);
        }
    }
}

/// Where a span is: the nearest span above it that runtally tracks, and the run it is in.
enum Place<'a, S: for<'l> LookupSpan<'l>> {
    /// No run above (or only spans runtally does not track).
    Outside,
    /// Below a run runtally refused: not recorded.
    Refused,
    /// In a run.
    In {
        nearest: SpanRef<'a, S>,
        run: Arc<RunState>,
    },
}

/// Walks up from `span` (itself excluded) to the nearest tracked span and the run it is in.
fn place<'a, S>(span: &SpanRef<'a, S>) -> Place<'a, S>
where
    S: Subscriber + for<'l> LookupSpan<'l>,
{
    let mut nearest = None;
    for ancestor in span.scope().skip(1) {
        let ext = ancestor.extensions();
        let Some(tracked) = ext.get::<Tracked>() else {
            continue;
        };
        let run = match &tracked.role {
            Role::Run(run) | Role::Task { run, .. } => Some(Arc::clone(run)),
            Role::Refused => return Place::Refused,
            Role::Helper(_) => None,
        };
        drop(ext);
        if nearest.is_none() {
            nearest = Some(ancestor);
        }
        if let Some(run) = run {
            if let Some(nearest) = nearest.take() {
                return Place::In { nearest, run };
            }
        }
    }
    // Model, tool and nested spans are tracked only inside runs: no run above, no span above.
    Place::Outside
}

impl<S> Layer<S> for RuntallyLayer
where
    S: Subscriber + for<'l> LookupSpan<'l>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let metadata = attrs.metadata();
        if !mapping::is_candidate(metadata.fields().iter().map(|f| f.name())) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        // Another runtally layer in the same subscriber took this span: the first one owns it.
        if span.extensions().get::<Tracked>().is_some() {
            return;
        }
        let mut fields = SpanFields::default();
        attrs.record(&mut fields);
        self.count_malformed(std::mem::take(&mut fields.malformed));
        let operation = fields.operation.unwrap_or(Operation::Other);
        let role = match place(&span) {
            Place::Refused => return,
            Place::Outside => {
                if !(operation.is_agent_or_workflow()
                    || fields.execution_id.is_some()
                    || fields.plan_id.is_some())
                {
                    // A model call of its own, outside any run: not runtally's.
                    return;
                }
                self.begin(&fields, metadata.name())
                    .unwrap_or(Role::Refused)
            }
            Place::In { nearest, run } => {
                let under_run = matches!(
                    nearest.extensions().get::<Tracked>().map(|t| &t.role),
                    Some(Role::Run(_))
                );
                if fields.task_id.is_some() || (under_run && operation.is_agent_or_workflow()) {
                    let n = run.tasks.fetch_add(1, Ordering::Relaxed) + 1;
                    let id = match &fields.task_id {
                        Some(id) => id.clone(),
                        None => format!("{}-{n}", display_name(&fields, metadata.name())),
                    };
                    match TaskId::new(id.as_str()) {
                        Ok(id) => {
                            self.metrics()
                                .tracing_open_tasks
                                .fetch_add(1, Ordering::Relaxed);
                            Role::Task { run, id }
                        }
                        Err(e) => {
                            self.dropped("a task", &id, &e);
                            return;
                        }
                    }
                } else {
                    match Helper::of(operation) {
                        Some(helper) => Role::Helper(helper),
                        None => return,
                    }
                }
            }
        };
        span.extensions_mut().insert(Tracked {
            role,
            tally: Tally::new(fields),
            opened: Instant::now(),
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if !mapping::is_candidate(span.metadata().fields().iter().map(|f| f.name())) {
            return;
        }
        // Read the values before taking the span's lock: a `%value`'s Display is the host's
        // code, which may itself log inside this span.
        let mut fields = SpanFields::default();
        values.record(&mut fields);
        // The role was decided at creation; a late operation name does not change it.
        fields.operation = None;
        self.count_malformed(std::mem::take(&mut fields.malformed));
        let mut ext = span.extensions_mut();
        if let Some(tracked) = ext.get_mut::<Tracked>() {
            tracked.tally.fields.merge(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let is_error = *metadata.level() == Level::ERROR;
        if !is_error && !mapping::event_matters(metadata.fields().iter().map(|f| f.name())) {
            return;
        }
        // runtally's own errors (a database down) are not the task's.
        let target = metadata.target();
        if target == "runtally" || target.starts_with("runtally::") {
            return;
        }
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        // The event's own span first, then the spans above it.
        let Some(owner) = span
            .scope()
            .find(|s| s.extensions().get::<Tracked>().is_some())
        else {
            return;
        };
        let mut visit = EventFields::default();
        event.record(&mut visit);
        self.count_malformed(std::mem::take(&mut visit.fields.malformed));
        let error = visit.fields.error_type.clone().or_else(|| {
            is_error.then(|| {
                visit
                    .message
                    .clone()
                    .unwrap_or_else(|| metadata.name().to_owned())
            })
        });
        let mut ext = owner.extensions_mut();
        let Some(tracked) = ext.get_mut::<Tracked>() else {
            return;
        };
        tracked.tally.below.event(error, visit.fields);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(tracked) = span.extensions_mut().remove::<Tracked>() else {
            return;
        };
        match &tracked.role {
            Role::Run(run) => {
                let run = Arc::clone(run);
                self.end(&run, tracked, span.name());
            }
            Role::Task { run, id } => {
                let (run, id) = (Arc::clone(run), id.clone());
                run.inferences
                    .fetch_add(tracked.tally.below.inferences, Ordering::Relaxed);
                self.record(&run.handle, id, tracked);
                self.metrics()
                    .tracing_open_tasks
                    .fetch_sub(1, Ordering::Relaxed);
            }
            Role::Refused => {}
            Role::Helper(helper) => {
                let helper = *helper;
                let nearest = match place(&span) {
                    Place::In { nearest, .. } => nearest,
                    Place::Outside | Place::Refused => return,
                };
                let mut ext = nearest.extensions_mut();
                if let Some(above) = ext.get_mut::<Tracked>() {
                    above
                        .tally
                        .below
                        .add(tracked.tally.into_contribution(helper));
                }
            }
        }
    }
}
