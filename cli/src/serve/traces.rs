//! Held traces: OTLP exporters send spans as they end — children before their parent, one
//! trace over many requests, and (Node's SDK) several requests at once, so a root can arrive
//! before some of its children. A trace is held until its root span (no parent) has arrived
//! and no span of it has arrived for `trace_settle`, or until it was first seen `trace_hold`
//! ago (then it is assembled from what arrived, each span whose parent never came taken as a
//! root). It is then assembled ([`runtally::genai::assemble`]) and its runs applied in the
//! background; a span arriving for a trace already assembled is answered as rejected.
//!
//! Bounds: at most `max_held_spans` spans are held or being applied; a request that would pass
//! it is refused whole with 429 (OTLP exporters retry it). Memory: a held span keeps only what
//! runtally reads (ids, name, times, the mapped attributes).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use runtally::genai::{assemble, AssembledRun, SpanRecord};
use runtally::{Aggregator, BeginError, RunStart};

use super::edge::EdgeError;
use super::ended::EndedRuns;

/// A trace's 16-byte id.
pub(crate) type TraceId = [u8; 16];

/// What [`Traces::offer`] took.
pub(crate) struct Offer {
    /// Spans of traces already assembled (not taken).
    pub(crate) late: u64,
}

/// What the held traces did, for the metrics and the shutdown report.
#[derive(Debug, Default)]
pub(crate) struct TraceCounts {
    pub(crate) runs_applied: AtomicU64,
    pub(crate) runs_refused: AtomicU64,
    /// Runs whose trace came again after they ended (not recorded twice).
    pub(crate) runs_repeated: AtomicU64,
    pub(crate) tasks_applied: AtomicU64,
    pub(crate) traces_expired: AtomicU64,
    pub(crate) spans_unmapped: AtomicU64,
}

struct Held {
    traces: HashMap<TraceId, HeldTrace>,
    /// Spans held or on their way through the assembler.
    spans: usize,
    /// Traces assembled lately (bounded, oldest forgotten first).
    assembled: HashSet<TraceId>,
    assembled_order: VecDeque<TraceId>,
}

struct HeldTrace {
    spans: Vec<SpanRecord>,
    first: Instant,
    last: Instant,
    root: bool,
}

/// The held traces and the assembler behind them.
pub(crate) struct Traces {
    held: Mutex<Held>,
    max_spans: usize,
    remember: usize,
    settle: Duration,
    hold: Duration,
    pub(crate) counts: Arc<TraceCounts>,
}

/// A trace on its way to the assembler, with the held spans it accounts for.
struct Ready {
    id: TraceId,
    spans: Vec<SpanRecord>,
}

impl Traces {
    pub(crate) fn new(max_spans: usize, remember: usize, settle: Duration, hold: Duration) -> Self {
        Self {
            held: Mutex::new(Held {
                traces: HashMap::new(),
                spans: 0,
                assembled: HashSet::new(),
                assembled_order: VecDeque::new(),
            }),
            max_spans,
            remember,
            settle,
            hold,
            counts: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Spans held now (including those being applied).
    pub(crate) fn held_spans(&self) -> usize {
        self.lock().spans
    }

    /// Takes a request's spans, all or none: refused with [`EdgeError::Full`] when they would
    /// pass `max_held_spans`.
    pub(crate) fn offer(&self, spans: Vec<(TraceId, SpanRecord)>) -> Result<Offer, EdgeError> {
        self.offer_at(Instant::now(), spans)
    }

    fn offer_at(
        &self,
        now: Instant,
        spans: Vec<(TraceId, SpanRecord)>,
    ) -> Result<Offer, EdgeError> {
        let mut held = self.lock();
        if held.spans + spans.len() > self.max_spans {
            return Err(EdgeError::Full(1));
        }
        let mut late = 0;
        for (trace, span) in spans {
            if held.assembled.contains(&trace) {
                late += 1;
                continue;
            }
            held.spans += 1;
            let entry = held.traces.entry(trace).or_insert_with(|| HeldTrace {
                spans: Vec::new(),
                first: now,
                last: now,
                root: false,
            });
            entry.root |= span.parent_span_id().is_none();
            entry.last = now;
            entry.spans.push(span);
        }
        Ok(Offer { late })
    }

    /// Takes the traces that are ready (or, with `all`, every held trace) out of the held set.
    fn take_ready(&self, now: Instant, all: bool) -> Vec<Ready> {
        let mut held = self.lock();
        let ready: Vec<TraceId> = held
            .traces
            .iter()
            .filter(|(_, t)| {
                all || (t.root && now.duration_since(t.last) >= self.settle)
                    || now.duration_since(t.first) >= self.hold
            })
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::with_capacity(ready.len());
        for id in ready {
            let Some(trace) = held.traces.remove(&id) else {
                continue;
            };
            if !trace.root {
                self.counts.traces_expired.fetch_add(1, Ordering::Relaxed);
            }
            held.assembled.insert(id);
            held.assembled_order.push_back(id);
            while held.assembled_order.len() > self.remember {
                if let Some(old) = held.assembled_order.pop_front() {
                    held.assembled.remove(&old);
                }
            }
            out.push(Ready {
                id,
                spans: trace.spans,
            });
        }
        out
    }

    fn release(&self, spans: usize) {
        let mut held = self.lock();
        held.spans = held.spans.saturating_sub(spans);
    }
}

/// Runs the held traces' clock and assembler until `stop` fires, then assembles every trace
/// still held (nothing accepted is dropped at shutdown) and returns once all were applied.
pub(crate) async fn run(
    traces: Arc<Traces>,
    aggregator: Aggregator,
    ended: Arc<EndedRuns>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let (tx, mut rx) = mpsc::channel::<Ready>(64);
    let assembler = {
        let traces = Arc::clone(&traces);
        tokio::spawn(async move {
            while let Some(ready) = rx.recv().await {
                let count = ready.spans.len();
                apply_trace(&traces, &aggregator, &ended, ready).await;
                traces.release(count);
            }
        })
    };
    let tick = (traces.settle / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => break,
        }
        for ready in traces.take_ready(Instant::now(), false) {
            if tx.send(ready).await.is_err() {
                return;
            }
        }
    }
    for ready in traces.take_ready(Instant::now(), true) {
        if tx.send(ready).await.is_err() {
            break;
        }
    }
    drop(tx);
    if let Err(e) = assembler.await {
        tracing::error!(target: "runtally::serve", error = %e, "the trace assembler stopped");
    }
}

fn hex(id: &TraceId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

async fn apply_trace(traces: &Traces, aggregator: &Aggregator, ended: &EndedRuns, ready: Ready) {
    let trace = hex(&ready.id);
    let assembly = assemble(&trace, ready.spans);
    let counts = &traces.counts;
    if !assembly.errors.is_empty() {
        counts
            .spans_unmapped
            .fetch_add(assembly.errors.len() as u64, Ordering::Relaxed);
        for error in &assembly.errors {
            tracing::warn!(target: "runtally::serve", trace, %error, "a span was not mapped");
        }
    }
    for run in assembly.runs {
        let id = run.execution_id.clone();
        // A trace exported again after this service restarted: its run is already written.
        if aggregator.run(&id).is_none() && ended.ended_anywhere(&id, run.start_time).await {
            counts.runs_repeated.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match apply_run(aggregator, run).await {
            Ok(tasks) => {
                counts.runs_applied.fetch_add(1, Ordering::Relaxed);
                counts.tasks_applied.fetch_add(tasks, Ordering::Relaxed);
                ended.insert(id);
            }
            Err(error) => {
                counts.runs_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "runtally::serve", trace, run = %id, %error,
                    "a run from a trace was not recorded");
            }
        }
    }
}

/// Why an assembled run was not recorded.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error("cannot begin the run: {0}")]
    Begin(#[from] BeginError),
    #[error("{0}")]
    Record(#[from] runtally::RecordError),
}

async fn apply_run(aggregator: &Aggregator, run: AssembledRun) -> Result<u64, ApplyError> {
    let AssembledRun {
        execution_id,
        plan_id,
        total_tasks,
        start_time,
        end_time,
        tasks,
        ..
    } = run;
    let start = RunStart::new(execution_id, plan_id, total_tasks).with_start_time(start_time);
    let handle = aggregator.begin_run(start)?;
    let mut applied = 0;
    for (task, result) in tasks {
        // Waits while runtally is full: the held spans (bounded) wait with it.
        handle.task_finished(task, result).await?;
        applied += 1;
    }
    handle.finish(end_time).await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    const A: TraceId = [1; 16];
    const B: TraceId = [2; 16];

    fn span(id: u64, parent: Option<u64>) -> SpanRecord {
        SpanRecord::new(id, parent, "s", Utc::now(), Utc::now())
    }

    fn traces() -> Traces {
        Traces::new(5, 10, Duration::from_millis(100), Duration::from_secs(10))
    }

    #[test]
    fn a_trace_waits_for_its_root_then_for_the_settle_time() {
        let t = traces();
        let t0 = Instant::now();
        t.offer_at(t0, vec![(A, span(2, Some(1)))]).expect("room");
        assert!(
            t.take_ready(t0 + Duration::from_secs(5), false).is_empty(),
            "no root yet"
        );
        t.offer_at(t0, vec![(A, span(1, None))]).expect("room");
        // A child after its root (Node's exporter posts concurrently) is still taken.
        let t1 = t0 + Duration::from_millis(60);
        t.offer_at(t1, vec![(A, span(3, Some(1)))]).expect("room");
        assert!(t
            .take_ready(t1 + Duration::from_millis(99), false)
            .is_empty());
        let ready = t.take_ready(t1 + Duration::from_millis(100), false);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].spans.len(), 3);
        // After assembly, a span of the trace is late; a new trace is not.
        let offer = t
            .offer_at(t1, vec![(A, span(4, Some(1))), (B, span(9, None))])
            .expect("room");
        assert_eq!(offer.late, 1);
    }

    #[test]
    fn a_trace_without_its_root_is_assembled_after_the_hold_time() {
        let t = traces();
        let t0 = Instant::now();
        t.offer_at(t0, vec![(A, span(2, Some(1)))]).expect("room");
        assert!(t
            .take_ready(t0 + Duration::from_millis(9_999), false)
            .is_empty());
        assert_eq!(t.take_ready(t0 + Duration::from_secs(10), false).len(), 1);
        assert_eq!(t.counts.traces_expired.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn held_spans_are_bounded_and_a_request_is_taken_whole_or_not_at_all() {
        let t = traces();
        let t0 = Instant::now();
        let four: Vec<_> = (1..=4).map(|i| (A, span(i, Some(99)))).collect();
        t.offer_at(t0, four).expect("room for 4 of 5");
        let two = vec![(B, span(1, None)), (B, span(2, Some(1)))];
        assert!(matches!(t.offer_at(t0, two), Err(EdgeError::Full(_))));
        assert_eq!(t.held_spans(), 4);
        // Released once applied, not when taken out of the held set.
        let ready = t.take_ready(t0, true);
        assert_eq!(t.held_spans(), 4);
        t.release(ready[0].spans.len());
        assert_eq!(t.held_spans(), 0);
    }
}
