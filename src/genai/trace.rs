//! A finished trace's spans → runs and tasks, by the same rules as the `tracing` layer: the
//! roles are decided top-down (a run is the highest agent or workflow span; a task is an agent
//! directly below the run, or a span with `runtally.task_id`), the counts bottom-up through
//! [`Tally`]. For spans that arrive as data (OTLP) rather than live.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::mapping::{AttributeValue, Operation, SpanFields};
use super::tally::{display_name, Below, Helper, Tally};
use crate::model::{ExecutionId, ModelError, PlanId, TaskDefinition, TaskId, TaskResult};

/// An OpenTelemetry event that records an exception (the conventions' `exception` event).
const EXCEPTION_EVENT: &str = "exception";
const EXCEPTION_TYPE: &str = "exception.type";
const EXCEPTION_MESSAGE: &str = "exception.message";

/// One finished span, as [`assemble`] takes it: its place in the tree, its times, and the
/// values runtally reads from its attributes and events (nothing else is kept, so a held span
/// costs little beyond its name).
#[derive(Debug, Clone)]
pub struct SpanRecord {
    span_id: u64,
    parent_span_id: Option<u64>,
    name: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    fields: SpanFields,
    /// The error and evaluation its events carry, folded in event order.
    events: Below,
    /// The span's status is ERROR (with this message, or `"error"`).
    status_error: Option<String>,
}

impl SpanRecord {
    /// A span with its id, its parent's (`None` at a trace's root), its name and times. An end
    /// before the start is taken as the start.
    pub fn new(
        span_id: u64,
        parent_span_id: Option<u64>,
        name: impl Into<String>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Self {
        Self {
            span_id,
            parent_span_id,
            name: name.into(),
            start,
            end: end.max(start),
            fields: SpanFields::default(),
            events: Below::default(),
            status_error: None,
        }
    }

    /// Records one attribute (a later value for the same key replaces an earlier one).
    pub fn attribute(&mut self, key: &str, value: AttributeValue<'_>) {
        self.fields.record(key, value);
    }

    /// Records one event: an error (`error.type`, or an `exception` event's
    /// `exception.type`, else its message) and an evaluation (`gen_ai.evaluation.score.value`)
    /// count for this span, or for the tracked span above it.
    pub fn event<'a>(
        &mut self,
        name: &str,
        attributes: impl IntoIterator<Item = (&'a str, AttributeValue<'a>)>,
    ) {
        let mut fields = SpanFields::default();
        let mut exception = None;
        for (key, value) in attributes {
            match (key, value) {
                (EXCEPTION_TYPE, AttributeValue::Str(v)) => exception = Some(v.to_owned()),
                (EXCEPTION_MESSAGE, AttributeValue::Str(v)) if exception.is_none() => {
                    exception = Some(v.to_owned())
                }
                _ => fields.record(key, value),
            }
        }
        self.fields.malformed += std::mem::take(&mut fields.malformed);
        let error = fields.error_type.clone().or_else(|| {
            (name == EXCEPTION_EVENT).then(|| exception.unwrap_or_else(|| name.to_owned()))
        });
        self.events.event(error, fields);
    }

    /// Marks the span's status as ERROR: it fails the span as `error.type` does (the message,
    /// else `"error"`, is the error when no `error.type` is recorded).
    pub fn set_error_status(&mut self, message: Option<&str>) {
        let message = message.filter(|m| !m.is_empty()).unwrap_or("error");
        self.status_error = Some(message.to_owned());
    }

    /// The span's id.
    pub fn span_id(&self) -> u64 {
        self.span_id
    }

    /// Its parent's id, `None` at a trace's root.
    pub fn parent_span_id(&self) -> Option<u64> {
        self.parent_span_id
    }

    /// Values of the wrong type or range that were ignored (negative tokens, text where a
    /// number belongs).
    pub fn malformed_values(&self) -> u32 {
        self.fields.malformed
    }
}

/// A run assembled from a trace: what [`RunStart`](crate::RunStart), the task results and the
/// finish take.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AssembledRun {
    /// `runtally.execution_id`, else the trace id (hex) for a run at the trace's root, else
    /// `<trace id>-<span id>` (hex).
    pub execution_id: ExecutionId,
    /// `runtally.plan_id`, else `gen_ai.workflow.name`, else `gen_ai.agent.name`, else the
    /// span's name.
    pub plan_id: PlanId,
    /// `runtally.total_tasks`, else 0.
    pub total_tasks: u64,
    /// The run span's start.
    pub start_time: DateTime<Utc>,
    /// The run span's end.
    pub end_time: DateTime<Utc>,
    /// Its tasks in the order they started, the run's own work (task `<name>-0`) last.
    pub tasks: Vec<(TaskDefinition, TaskResult)>,
}

/// A span [`assemble`] could not turn into what it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssembleError {
    /// A run's or task's id (given, or made from names) is not a valid id.
    #[error("span {span_id:016x}: {error}")]
    Invalid {
        /// The span.
        span_id: u64,
        /// Why its id is not valid.
        #[source]
        error: ModelError,
    },
    /// The spans' parents form a cycle: none of them is below a root.
    #[error("span {span_id:016x} is in a cycle of parents")]
    Cycle {
        /// A span of the cycle.
        span_id: u64,
    },
}

/// What [`assemble`] made of a trace.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Assembly {
    /// The runs, in the order their spans started.
    pub runs: Vec<AssembledRun>,
    /// Spans that could not be mapped (the rest of the trace still is).
    pub errors: Vec<AssembleError>,
}

enum Role {
    Untracked,
    Run(usize),
    Task { run: usize, id: TaskId },
    Helper(Helper),
}

/// Where a span is: the run above it and the nearest tracked span above it.
#[derive(Clone, Copy)]
struct Place {
    run: Option<usize>,
    nearest: Option<usize>,
}

struct RunBuild {
    span: usize,
    id: ExecutionId,
    plan: PlanId,
    total_tasks: u64,
    tasks: u32,
    inferences: u64,
    results: Vec<(DateTime<Utc>, TaskDefinition, TaskResult)>,
}

/// Maps a finished trace's spans to runs and tasks, by the rules of the
/// [`tracing` layer's table](crate::genai#mapping). A span whose parent is not among `spans`
/// counts as a root; a repeated span id keeps its first span. `trace_id` names the runs that
/// carry no `runtally.execution_id`.
pub fn assemble(trace_id: &str, spans: Vec<SpanRecord>) -> Assembly {
    let mut spans = spans;
    let mut index: HashMap<u64, usize> = HashMap::with_capacity(spans.len());
    let mut keep = Vec::with_capacity(spans.len());
    for span in spans.drain(..) {
        if let std::collections::hash_map::Entry::Vacant(e) = index.entry(span.span_id) {
            e.insert(keep.len());
            keep.push(span);
        }
    }
    let spans = keep;
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut roots = Vec::new();
    for (i, span) in spans.iter().enumerate() {
        match span.parent_span_id.and_then(|p| index.get(&p)) {
            Some(&parent) if parent != i => children[parent].push(i),
            _ => roots.push(i),
        }
    }
    let by_start = |a: &usize, b: &usize| {
        (spans[*a].start, spans[*a].span_id).cmp(&(spans[*b].start, spans[*b].span_id))
    };
    roots.sort_by(by_start);
    for list in &mut children {
        list.sort_by(by_start);
    }

    let mut out = Assembly::default();
    let mut roles: Vec<Option<Role>> = (0..spans.len()).map(|_| None).collect();
    let mut places = vec![
        Place {
            run: None,
            nearest: None
        };
        spans.len()
    ];
    let mut runs: Vec<RunBuild> = Vec::new();
    // Pre-order, iteratively (a trace may be deep): roles top-down, in start order.
    let mut order = Vec::with_capacity(spans.len());
    let mut stack: Vec<(usize, Place)> = roots
        .iter()
        .rev()
        .map(|&r| {
            (
                r,
                Place {
                    run: None,
                    nearest: None,
                },
            )
        })
        .collect();
    while let Some((i, place)) = stack.pop() {
        order.push(i);
        places[i] = place;
        let span = &spans[i];
        let fields = &span.fields;
        let operation = fields.operation.unwrap_or(Operation::Other);
        let role = match place.run {
            None if operation.is_agent_or_workflow()
                || fields.execution_id.is_some()
                || fields.plan_id.is_some() =>
            {
                match begin(trace_id, span, i) {
                    Ok(run) => {
                        runs.push(run);
                        Role::Run(runs.len() - 1)
                    }
                    Err(error) => {
                        out.errors.push(AssembleError::Invalid {
                            span_id: span.span_id,
                            error,
                        });
                        Role::Untracked
                    }
                }
            }
            None => Role::Untracked,
            Some(run) => {
                let under_run = place.nearest == Some(runs[run].span);
                if fields.task_id.is_some() || (under_run && operation.is_agent_or_workflow()) {
                    runs[run].tasks += 1;
                    let id = match &fields.task_id {
                        Some(id) => id.clone(),
                        None => format!("{}-{}", display_name(fields, &span.name), runs[run].tasks),
                    };
                    match TaskId::new(id) {
                        Ok(id) => Role::Task { run, id },
                        Err(error) => {
                            out.errors.push(AssembleError::Invalid {
                                span_id: span.span_id,
                                error,
                            });
                            Role::Untracked
                        }
                    }
                } else {
                    Helper::of(operation).map_or(Role::Untracked, Role::Helper)
                }
            }
        };
        let below = match role {
            Role::Untracked => place,
            Role::Run(run) => Place {
                run: Some(run),
                nearest: Some(i),
            },
            Role::Task { run, .. } => Place {
                run: Some(run),
                nearest: Some(i),
            },
            Role::Helper(_) => Place {
                run: place.run,
                nearest: Some(i),
            },
        };
        roles[i] = Some(role);
        for &child in children[i].iter().rev() {
            stack.push((child, below));
        }
    }
    for (i, span) in spans.iter().enumerate() {
        if roles[i].is_none() {
            out.errors.push(AssembleError::Cycle {
                span_id: span.span_id,
            });
        }
    }

    // Post-order: each tracked span's tally takes what the spans below it reported, then hands
    // it up (a helper) or becomes a result (a task, a run's own work).
    let mut tallies: Vec<Option<Tally>> = (0..spans.len()).map(|_| None).collect();
    let mut spans: Vec<Option<SpanRecord>> = spans.into_iter().map(Some).collect();
    for &i in &order {
        let Some(span) = spans[i].as_mut() else {
            continue;
        };
        let events = std::mem::take(&mut span.events);
        match roles[i] {
            Some(Role::Untracked) | None => {
                // An event in a span runtally does not track counts for the tracked span above.
                // (A parent comes before its children in pre-order, so its tally is there.)
                if let Some(above) = places[i].nearest.and_then(|n| tallies[n].as_mut()) {
                    above.below.add(events);
                }
            }
            Some(_) => {
                let mut fields = std::mem::take(&mut span.fields);
                if fields.error_type.is_none() {
                    fields.error_type = span.status_error.take();
                }
                let mut tally = Tally::new(fields);
                tally.below.add(events);
                tallies[i] = Some(tally);
            }
        }
    }
    for &i in order.iter().rev() {
        let Some(tally) = tallies[i].take() else {
            continue;
        };
        let Some(span) = spans[i].take() else {
            continue;
        };
        match roles[i].take() {
            Some(Role::Helper(helper)) => {
                if let Some(nearest) = places[i].nearest {
                    if let Some(above) = tallies[nearest].as_mut() {
                        above.below.add(tally.into_contribution(helper));
                    }
                }
            }
            Some(Role::Task { run, id }) => {
                let run = &mut runs[run];
                run.inferences = run.inferences.saturating_add(tally.below.inferences);
                let (task, result) = tally.into_result(id, millis(&span));
                run.results.push((span.start, task, result));
            }
            Some(Role::Run(r)) => {
                let mut tally = tally;
                let build = &mut runs[r];
                let mut own = None;
                if tally.run_did_work(build.inferences, build.tasks) {
                    // `-0`: generated task ids count from 1, so the run's own work never
                    // takes one.
                    match TaskId::new(format!("{}-0", display_name(&tally.fields, &span.name))) {
                        Ok(id) => own = Some(tally.into_result(id, millis(&span))),
                        Err(error) => out.errors.push(AssembleError::Invalid {
                            span_id: span.span_id,
                            error,
                        }),
                    }
                }
                let mut results = std::mem::take(&mut build.results);
                results.sort_by_key(|(start, ..)| *start);
                let mut tasks: Vec<_> = results.into_iter().map(|(_, t, r)| (t, r)).collect();
                tasks.extend(own);
                out.runs.push(AssembledRun {
                    execution_id: build.id.clone(),
                    plan_id: build.plan.clone(),
                    total_tasks: build.total_tasks,
                    start_time: span.start,
                    end_time: span.end,
                    tasks,
                });
            }
            Some(Role::Untracked) | None => {}
        }
    }
    out.runs.sort_by_key(|run| run.start_time);
    out
}

fn begin(trace_id: &str, span: &SpanRecord, index: usize) -> Result<RunBuild, ModelError> {
    let fields = &span.fields;
    let id = match &fields.execution_id {
        Some(id) => id.clone(),
        None if span.parent_span_id.is_none() => trace_id.to_owned(),
        None => format!("{trace_id}-{:016x}", span.span_id),
    };
    let plan = fields
        .plan_id
        .clone()
        .unwrap_or_else(|| display_name(fields, &span.name));
    Ok(RunBuild {
        span: index,
        id: ExecutionId::new(id)?,
        plan: PlanId::new(plan)?,
        total_tasks: fields.total_tasks.unwrap_or(0),
        tasks: 0,
        inferences: 0,
        results: Vec::new(),
    })
}

fn millis(span: &SpanRecord) -> u64 {
    u64::try_from((span.end - span.start).num_milliseconds()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use AttributeValue as V;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn span(id: u64, parent: Option<u64>, op: &str, start_s: i64, end_s: i64) -> SpanRecord {
        let t0 = DateTime::<Utc>::from_timestamp(1_764_800_000, 0).expect("time");
        let mut s = SpanRecord::new(
            id,
            parent,
            format!("{op} {id}"),
            t0 + Duration::seconds(start_s),
            t0 + Duration::seconds(end_s),
        );
        s.attribute("gen_ai.operation.name", V::Str(op));
        s
    }

    fn chat(id: u64, parent: u64, input: i64, output: i64) -> SpanRecord {
        let mut s = span(id, Some(parent), "chat", 1, 2);
        s.attribute("gen_ai.usage.input_tokens", V::Int(input));
        s.attribute("gen_ai.usage.output_tokens", V::Int(output));
        s
    }

    /// A run (1) with two tasks: 2 (two model calls, a tool call, a QC event) and 3 (status
    /// ERROR, a failed model call), and an HTTP span (7) between task 3 and its model call.
    fn trace() -> Vec<SpanRecord> {
        let mut run = span(1, None, "invoke_agent", 0, 10);
        run.attribute("runtally.execution_id", V::Str("exec-1"));
        run.attribute("runtally.total_tasks", V::Int(2));
        let mut a = span(2, Some(1), "invoke_agent", 1, 4);
        a.attribute("gen_ai.agent.name", V::Str("researcher"));
        a.attribute("gen_ai.completion", V::Str("found it"));
        a.event(
            "gen_ai.evaluation.result",
            [
                ("gen_ai.evaluation.score.value", V::Double(0.87)),
                ("gen_ai.evaluation.score.label", V::Str("pass")),
            ],
        );
        let mut b = span(3, Some(1), "invoke_agent", 5, 9);
        b.attribute("gen_ai.agent.name", V::Str("writer"));
        b.set_error_status(Some("deadline exceeded"));
        let mut failed_call = chat(8, 7, 5, 0);
        failed_call.set_error_status(None);
        let http = SpanRecord::new(7, Some(3), "POST", failed_call.start, failed_call.end);
        vec![
            run,
            a,
            b,
            chat(4, 2, 100, 20),
            chat(5, 2, 50, 10),
            span(6, Some(2), "execute_tool", 2, 3),
            http,
            failed_call,
        ]
    }

    #[test]
    fn a_trace_becomes_one_run_with_its_tasks_counted() {
        let assembly = assemble(TRACE, trace());
        assert!(assembly.errors.is_empty(), "{:?}", assembly.errors);
        let [run] = assembly.runs.as_slice() else {
            panic!("{:?}", assembly.runs)
        };
        assert_eq!(run.execution_id.as_str(), "exec-1");
        assert_eq!(run.total_tasks, 2);
        assert_eq!((run.end_time - run.start_time).num_seconds(), 10);
        let ids: Vec<&str> = run.tasks.iter().map(|(t, _)| t.id.as_str()).collect();
        assert_eq!(ids, ["researcher-1", "writer-2"]);
        let (_, a) = &run.tasks[0];
        assert_eq!(
            (a.tokens.input, a.tokens.output, a.tool_calls),
            (150, 30, 1)
        );
        assert!(a.error.is_none());
        assert_eq!(a.output, "found it");
        let qc = a.qc_verification.as_ref().expect("qc");
        assert_eq!((qc.passed, qc.score), (true, 87));
        assert_eq!(a.duration, 3000);
        let (_, b) = &run.tasks[1];
        assert_eq!(b.error.as_deref(), Some("deadline exceeded"));
        // The failed model call's tokens count; its failure is the task's own to handle.
        assert_eq!((b.tokens.input, b.tokens.output), (5, 0));
    }

    #[test]
    fn the_order_spans_arrive_in_does_not_change_the_run() {
        let expected = format!("{:?}", assemble(TRACE, trace()).runs);
        let mut spans = trace();
        spans.reverse();
        assert_eq!(format!("{:?}", assemble(TRACE, spans).runs), expected);
        let mut spans = trace();
        spans.rotate_left(3);
        assert_eq!(format!("{:?}", assemble(TRACE, spans).runs), expected);
    }

    #[test]
    fn runs_without_an_id_are_named_after_the_trace() {
        let root = span(1, None, "invoke_agent", 0, 5);
        let assembly = assemble(TRACE, vec![root]);
        assert_eq!(assembly.runs[0].execution_id.as_str(), TRACE);
        // Below a span that is not a run (an HTTP server span): the trace and the span.
        let http = SpanRecord::new(9, None, "GET /", root_time(), root_time());
        let run = span(10, Some(9), "invoke_workflow", 0, 5);
        let assembly = assemble(TRACE, vec![http, run]);
        assert_eq!(
            assembly.runs[0].execution_id.as_str(),
            format!("{TRACE}-000000000000000a")
        );
    }

    fn root_time() -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_764_800_000, 0).expect("time")
    }

    #[test]
    fn a_runs_own_calls_and_failure_become_task_zero() {
        let mut run = span(1, None, "invoke_agent", 0, 5);
        run.attribute("gen_ai.agent.name", V::Str("solo"));
        run.event("exception", [("exception.type", V::Str("ValueError"))]);
        let assembly = assemble(TRACE, vec![run, chat(2, 1, 7, 3)]);
        let (task, result) = &assembly.runs[0].tasks[0];
        assert_eq!(task.id.as_str(), "solo-0");
        assert_eq!(result.error.as_deref(), Some("ValueError"));
        assert_eq!((result.tokens.input, result.tokens.output), (7, 3));
    }

    #[test]
    fn a_cycle_of_parents_is_reported_and_the_rest_assembled() {
        let mut spans = trace();
        spans.push(span(20, Some(21), "invoke_agent", 0, 1));
        spans.push(span(21, Some(20), "invoke_agent", 0, 1));
        let assembly = assemble(TRACE, spans);
        assert_eq!(assembly.runs.len(), 1);
        let cycle: Vec<_> = assembly
            .errors
            .iter()
            .map(|e| match e {
                AssembleError::Cycle { span_id } => *span_id,
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(cycle, [20, 21]);
    }

    #[test]
    fn a_repeated_span_counts_once() {
        let mut spans = trace();
        spans.push(chat(4, 2, 100, 20));
        let assembly = assemble(TRACE, spans);
        assert_eq!(assembly.runs[0].tasks[0].1.tokens.input, 150);
    }
}
