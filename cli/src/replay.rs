//! Feeds an event stream ([`crate::events`]) through an [`Aggregator`], as an orchestrator
//! would: each run's events in order, several runs at once.
//!
//! A bad line never stops the replay: it becomes a [`LineError`] naming the line, and every
//! other line is still applied.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

use runtally::rows::WriteBatch;
use runtally::{Aggregator, BeginError, ExecutionId, RecordError, RunHandle, RunStart};

use crate::events::{parse_bytes, Event, EventError};
use crate::lock;

/// Why one line was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The line is not a valid event.
    #[error("invalid event: {0}")]
    Parse(#[from] EventError),
    /// A task or finish event for a run that was never started (here or earlier).
    #[error("run {0} was never started")]
    UnknownRun(ExecutionId),
    /// The run could not be begun.
    #[error("cannot begin run: {0}")]
    Begin(#[from] BeginError),
    /// The result or finish was refused.
    #[error("{0}")]
    Record(#[from] RecordError),
    /// `runtally serve` refused the event (its error code and reason).
    #[error("refused by the service ({code}): {reason}")]
    Refused {
        /// The service's error code (`invalid_event`, `unknown_run`, …).
        code: String,
        /// Its reason.
        reason: String,
    },
    /// The request carrying the event got no usable answer.
    #[error("{0}")]
    Http(#[from] crate::http::HttpError),
    /// The service answered with a status and body that are not an events answer.
    #[error("the service answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Its body (truncated).
        body: String,
    },
}

/// A line that was not applied, with its 1-based number.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {error}")]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What went wrong.
    #[source]
    pub error: ReplayError,
}

/// What a replay did.
#[derive(Debug, Default, Serialize)]
#[non_exhaustive]
pub struct ReplaySummary {
    /// Runs seen.
    pub runs: usize,
    /// Task results accepted.
    pub tasks: usize,
    /// Lines applied.
    pub events: usize,
    /// Lines not applied.
    #[serde(skip)]
    pub errors: Vec<LineError>,
}

/// An event stream's valid lines, by run (in the order of each run's first line; each run's
/// events in file order, with their 1-based line numbers), and its invalid lines.
pub struct Grouped {
    /// Each run's events.
    pub runs: Vec<Vec<(usize, Event)>>,
    /// Lines that are not events.
    pub errors: Vec<LineError>,
}

/// Parses `input` (JSON lines) and groups its events by run.
pub fn group(input: &[u8]) -> Grouped {
    let mut errors = Vec::new();
    let mut order: Vec<ExecutionId> = Vec::new();
    let mut runs: HashMap<ExecutionId, Vec<(usize, Event)>> = HashMap::new();
    // A final newline ends the last line; it does not start an empty one.
    let input = input.strip_suffix(b"\n").unwrap_or(input);
    let lines = input.split(|b| *b == b'\n').filter(|_| !input.is_empty());
    for (index, line) in lines.enumerate() {
        let number = index + 1;
        match parse_bytes(line) {
            Ok(event) => {
                let id = event.execution_id().clone();
                runs.entry(id.clone())
                    .or_insert_with(|| {
                        order.push(id);
                        Vec::new()
                    })
                    .push((number, event));
            }
            Err(e) => errors.push(LineError {
                line: number,
                error: e.into(),
            }),
        }
    }
    Grouped {
        runs: order
            .into_iter()
            .filter_map(|id| runs.remove(&id))
            .collect(),
        errors,
    }
}

/// Replays the lines of `input` with up to `concurrency` runs in flight.
///
/// Runs are replayed in the order of their first line; the events of one run in file order.
/// Returns once every line was applied or refused (the writes may still be pending: call
/// [`Aggregator::flush`]).
pub async fn replay(aggregator: &Aggregator, input: &[u8], concurrency: usize) -> ReplaySummary {
    let Grouped { runs, errors } = group(input);
    let summary = Mutex::new(ReplaySummary {
        runs: runs.len(),
        errors,
        ..ReplaySummary::default()
    });
    let queue = Mutex::new(runs.into_iter().rev().collect::<Vec<_>>());
    let worker = || async {
        loop {
            let next = lock(&queue).pop();
            let Some(events) = next else { break };
            replay_run(aggregator, events, &summary).await;
        }
    };
    futures_util::future::join_all((0..concurrency.max(1)).map(|_| worker())).await;
    let mut summary = summary.into_inner().unwrap_or_else(|e| e.into_inner());
    summary.errors.sort_by_key(|e| e.line);
    summary
}

async fn replay_run(
    aggregator: &Aggregator,
    events: Vec<(usize, Event)>,
    summary: &Mutex<ReplaySummary>,
) {
    let mut handle: Option<RunHandle> = None;
    // A spill's rows of one run are restored together: restored one line at a time, a run's
    // final state could be written before the task rows that follow it in the file.
    let mut restoring: Option<(Vec<usize>, WriteBatch)> = None;
    for (line, event) in events {
        let outcome = match event {
            Event::ExecutionState(row) => {
                let (lines, batch) = restoring.get_or_insert_with(Default::default);
                lines.push(line);
                batch.executions.push(row);
                continue;
            }
            Event::TaskState(row) => {
                let (lines, batch) = restoring.get_or_insert_with(Default::default);
                lines.push(line);
                batch.tasks.push(row);
                continue;
            }
            event => {
                if let Some(rows) = restoring.take() {
                    restore(aggregator, rows, summary).await;
                }
                apply(aggregator, &mut handle, event).await
            }
        };
        let mut s = lock(summary);
        match outcome {
            Ok(is_task) => {
                s.events += 1;
                s.tasks += usize::from(is_task);
            }
            Err(error) => s.errors.push(LineError { line, error }),
        }
    }
    if let Some(rows) = restoring.take() {
        restore(aggregator, rows, summary).await;
    }
}

/// Restores a run's spilled rows as one batch.
async fn restore(
    aggregator: &Aggregator,
    (lines, batch): (Vec<usize>, WriteBatch),
    summary: &Mutex<ReplaySummary>,
) {
    let tasks = batch.tasks.len();
    let outcome = aggregator.restore(batch).await;
    let mut s = lock(summary);
    match outcome {
        Ok(()) => {
            s.events += lines.len();
            s.tasks += tasks;
        }
        Err(error) => {
            let first = lines.first().copied().unwrap_or(0);
            s.errors.push(LineError {
                line: first,
                error: error.into(),
            });
        }
    }
}

/// Applies one event; `Ok(true)` for an accepted task result.
async fn apply(
    aggregator: &Aggregator,
    handle: &mut Option<RunHandle>,
    event: Event,
) -> Result<bool, ReplayError> {
    match event {
        Event::RunStarted {
            execution_id,
            plan_id,
            total_tasks,
            start_time,
        } => {
            let start =
                RunStart::new(execution_id, plan_id, total_tasks).with_start_time(start_time);
            *handle = Some(aggregator.begin_run(start)?);
            Ok(false)
        }
        Event::TaskFinished {
            execution_id,
            task,
            result,
        } => {
            let run = find(aggregator, handle, execution_id)?;
            run.task_finished(task, result).await?;
            Ok(true)
        }
        // Restored by `replay_run`, a run's rows together.
        Event::ExecutionState(row) => {
            aggregator
                .restore(WriteBatch::new(vec![row], Vec::new()))
                .await?;
            Ok(false)
        }
        Event::TaskState(row) => {
            aggregator
                .restore(WriteBatch::new(Vec::new(), vec![row]))
                .await?;
            Ok(true)
        }
        Event::RunFinished {
            execution_id,
            end_time,
            cancelled,
        } => {
            let run = find(aggregator, handle, execution_id)?;
            if cancelled {
                run.cancel(end_time).await?;
            } else {
                run.finish(end_time).await?;
            }
            Ok(false)
        }
    }
}

fn find(
    aggregator: &Aggregator,
    handle: &mut Option<RunHandle>,
    id: ExecutionId,
) -> Result<RunHandle, ReplayError> {
    if let Some(run) = handle {
        return Ok(run.clone());
    }
    let run = aggregator.run(&id).ok_or(ReplayError::UnknownRun(id))?;
    *handle = Some(run.clone());
    Ok(run)
}

/// What a replay over HTTP did: the replay's summary, and the requests it took.
#[derive(Debug, Default, Serialize)]
#[non_exhaustive]
pub struct HttpReplaySummary {
    /// Runs, accepted task results and events, and refused lines.
    #[serde(flatten)]
    pub replay: ReplaySummary,
    /// Requests answered.
    pub requests: usize,
    /// Requests that were retried after a 429 or 503.
    pub retried: usize,
    /// Each request's latency (last attempt), in microseconds.
    #[serde(skip)]
    pub latencies_us: Vec<u64>,
}

/// The fields `replay --http` reads of a line: which run it belongs to, and whether it is a
/// task result. The rest is sent as it is, unparsed: the service parses every event anyway.
#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(borrow, rename = "executionId")]
    execution_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
}

/// A line of a run, unparsed: its number, its bytes, and whether it is a task result.
type RawLine<'a> = (usize, &'a [u8], bool);

/// Groups `input`'s lines by run without building the events (see [`Head`]).
fn group_raw(input: &[u8]) -> (Vec<Vec<RawLine<'_>>>, Vec<LineError>) {
    let mut errors = Vec::new();
    let mut order: Vec<String> = Vec::new();
    let mut runs: HashMap<String, Vec<RawLine<'_>>> = HashMap::new();
    let input = input.strip_suffix(b"\n").unwrap_or(input);
    let lines = input.split(|b| *b == b'\n').filter(|_| !input.is_empty());
    for (index, line) in lines.enumerate() {
        let number = index + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
        let head = serde_json::from_slice::<Head<'_>>(line).ok().and_then(|h| {
            Some((
                h.execution_id.or(h.id)?.into_owned(),
                h.event == "task_finished",
            ))
        });
        let Some((id, is_task)) = head else {
            // Not an event: the full parse names what is wrong.
            if let Err(e) = parse_bytes(line) {
                errors.push(LineError {
                    line: number,
                    error: e.into(),
                });
            }
            continue;
        };
        runs.entry(id.clone())
            .or_insert_with(|| {
                order.push(id);
                Vec::new()
            })
            .push((number, line, is_task));
    }
    let runs = order
        .into_iter()
        .filter_map(|id| runs.remove(&id))
        .collect();
    (runs, errors)
}

/// Replays the lines of `input` through `runtally serve` (`POST /v1/events`): each run's
/// events in order, in requests of at most `per_request` events (0: no bound) and
/// `request_bytes` bytes (a larger line goes alone), with up to `concurrency` runs in flight.
/// The lines are sent as they are.
pub async fn replay_over_http(
    client: &crate::http::ServeClient,
    input: &[u8],
    concurrency: usize,
    per_request: usize,
    request_bytes: usize,
) -> HttpReplaySummary {
    let (runs, errors) = group_raw(input);
    let summary = Mutex::new(HttpReplaySummary {
        replay: ReplaySummary {
            runs: runs.len(),
            errors,
            ..ReplaySummary::default()
        },
        ..HttpReplaySummary::default()
    });
    let queue = Mutex::new(runs.into_iter().rev().collect::<Vec<_>>());
    let worker = || async {
        loop {
            let next = lock(&queue).pop();
            let Some(events) = next else { break };
            let max_events = if per_request == 0 {
                usize::MAX
            } else {
                per_request
            };
            let mut rest = events.as_slice();
            while !rest.is_empty() {
                let mut bytes = 0;
                let n = rest
                    .iter()
                    .take(max_events)
                    .take_while(|(_, line, _)| {
                        bytes += line.len() + 1;
                        bytes <= request_bytes
                    })
                    .count()
                    .max(1);
                let (part, tail) = rest.split_at(n);
                post_events(client, part, &summary).await;
                rest = tail;
            }
        }
    };
    futures_util::future::join_all((0..concurrency.max(1)).map(|_| worker())).await;
    let mut summary = summary.into_inner().unwrap_or_else(|e| e.into_inner());
    summary.replay.errors.sort_by_key(|e| e.line);
    summary
}

async fn post_events(
    client: &crate::http::ServeClient,
    part: &[RawLine<'_>],
    summary: &Mutex<HttpReplaySummary>,
) {
    let size: usize = part.iter().map(|(_, line, _)| line.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 2);
    body.push(b'[');
    for (i, (_, line, _)) in part.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(line);
    }
    body.push(b']');
    let outcome = client
        .post("/v1/events", "application/json", body.into())
        .await;
    let mut s = lock(summary);
    let answer = match outcome {
        Ok(answer) => answer,
        Err(e) => {
            let first = part.first().map_or(0, |(line, ..)| *line);
            s.replay.errors.push(LineError {
                line: first,
                error: e.into(),
            });
            return;
        }
    };
    s.requests += 1;
    s.retried += usize::from(answer.attempts > 1);
    s.latencies_us
        .push(u64::try_from(answer.latency.as_micros()).unwrap_or(u64::MAX));
    #[derive(serde::Deserialize)]
    struct Rejected {
        index: usize,
        error: String,
        reason: String,
    }
    #[derive(serde::Deserialize)]
    struct Reply {
        rejected: Vec<Rejected>,
    }
    let reply: Reply = match (answer.status, serde_json::from_slice(&answer.body)) {
        (200 | 400, Ok(reply)) => reply,
        (status, _) => {
            let first = part.first().map_or(0, |(line, ..)| *line);
            let body = String::from_utf8_lossy(&answer.body);
            s.replay.errors.push(LineError {
                line: first,
                error: ReplayError::Status {
                    status,
                    body: body.chars().take(200).collect(),
                },
            });
            return;
        }
    };
    let mut refused = vec![false; part.len()];
    for r in reply.rejected {
        if let Some((line, ..)) = part.get(r.index) {
            refused[r.index] = true;
            s.replay.errors.push(LineError {
                line: *line,
                error: ReplayError::Refused {
                    code: r.error,
                    reason: r.reason,
                },
            });
        }
    }
    for ((_, _, is_task), refused) in part.iter().zip(refused) {
        if !refused {
            s.replay.events += 1;
            s.replay.tasks += usize::from(*is_task);
        }
    }
}
