//! `POST /v1/events`: the event-stream objects `runtally replay` reads ([`crate::events`]), as
//! a JSON array or NDJSON, applied in order. A bad event is answered by its index and reason
//! while the good ones in the same request are applied; at the aggregator's bound the request
//! stops with 429 and says how many were applied; every event is idempotent, so a client may
//! resend the whole request.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;

use runtally::{BeginError, ExecutionId, RecordError, RunHandle, RunStart};

use super::edge::{self, json_response, retry_after, EdgeError};
use super::Shared;
use crate::events::{parse_bytes, Event, EventError};

/// Why one event of a request was not applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Rejection {
    /// Not a valid event (JSON, shape, values).
    #[error("invalid event: {0}")]
    Invalid(#[from] EventError),
    /// A result or end for a run this service does not know (never started here, or ended
    /// longer ago than it remembers).
    #[error("run {0} is not live here: send run_started first")]
    UnknownRun(ExecutionId),
    /// A result for a run that already ended.
    #[error("run {0} has already finished")]
    RunFinished(ExecutionId),
    /// Refused values (ids, counts out of range, end before start).
    #[error("{0}")]
    Refused(String),
    /// Spill rows (`execution_state`, `task_state`) are restored with `runtally replay`.
    #[error("{0} rows are restored with `runtally replay`, not over HTTP")]
    Unsupported(&'static str),
}

impl Rejection {
    fn code(&self) -> &'static str {
        match self {
            Rejection::Invalid(_) => "invalid_event",
            Rejection::UnknownRun(_) => "unknown_run",
            Rejection::RunFinished(_) => "run_finished",
            Rejection::Refused(_) => "invalid_value",
            Rejection::Unsupported(_) => "unsupported_event",
        }
    }
}

#[derive(Serialize)]
struct Rejected {
    index: usize,
    error: &'static str,
    reason: String,
}

#[derive(Serialize)]
struct Answer {
    accepted: usize,
    rejected: Vec<Rejected>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

/// What stops a request before its last event.
enum Stop {
    Full,
    ShuttingDown,
}

pub(crate) async fn post(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, EdgeError> {
    let (ndjson, bytes) = shared
        .read(
            &headers,
            body,
            &[
                ("application/json", false),
                ("application/x-ndjson", true),
                ("application/jsonl", true),
                ("application/jsonlines", true),
            ],
            "application/json (an array) or application/x-ndjson",
        )
        .await?;
    let config = &shared.config;
    edge::check_depth(&bytes, config.max_json_depth)?;
    let items: Vec<&[u8]> = if ndjson {
        bytes
            .split(|b| *b == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .collect()
    } else {
        let trimmed = bytes.trim_ascii_start();
        if trimmed.first() == Some(&b'{') {
            vec![trimmed]
        } else {
            let raw: Vec<&RawValue> = serde_json::from_slice(&bytes)
                .map_err(|e| EdgeError::Malformed(format!("not a JSON array of events: {e}")))?;
            raw.into_iter().map(|r| r.get().as_bytes()).collect()
        }
    };
    if items.len() > config.max_events {
        return Err(EdgeError::TooManyEvents {
            count: items.len(),
            limit: config.max_events,
        });
    }
    let mut answer = Answer {
        accepted: 0,
        rejected: Vec::new(),
        error: None,
    };
    let events: Vec<Result<Event, EventError>> = items.into_iter().map(parse_bytes).collect();
    // Whether the request's runs that are not live here already ended, asked in one read.
    shared
        .ended
        .learn(events.iter().filter_map(|event| match event {
            Ok(Event::RunStarted {
                execution_id,
                start_time,
                ..
            }) if shared.aggregator.run(execution_id).is_none() => {
                Some((execution_id, *start_time))
            }
            _ => None,
        }))
        .await;
    let mut stop = None;
    for (index, event) in events.into_iter().enumerate() {
        let outcome = match event {
            Ok(event) => apply(&shared, event).await,
            Err(e) => Ok(Err(Rejection::Invalid(e))),
        };
        match outcome {
            Ok(Ok(())) => answer.accepted += 1,
            Ok(Err(rejection)) => answer.rejected.push(Rejected {
                index,
                error: rejection.code(),
                reason: rejection.to_string(),
            }),
            Err(s) => {
                stop = Some(s);
                break;
            }
        }
    }
    shared.count_events(answer.accepted, answer.rejected.len());
    let response = match stop {
        Some(Stop::Full) => {
            answer.error = Some("full");
            let mut r = json_response(StatusCode::TOO_MANY_REQUESTS, &answer);
            retry_after(&mut r, shared.config.retry_after.as_secs().max(1));
            r
        }
        Some(Stop::ShuttingDown) => {
            answer.error = Some("shutting_down");
            let mut r = json_response(StatusCode::SERVICE_UNAVAILABLE, &answer);
            retry_after(&mut r, 1);
            r
        }
        None if answer.rejected.is_empty() => json_response(StatusCode::OK, &answer),
        None => json_response(StatusCode::BAD_REQUEST, &answer),
    };
    Ok(response.into_response())
}

/// Applies one event: `Ok(Ok(()))` applied (or already applied: idempotent), `Ok(Err(_))`
/// refused, `Err(_)` the request stops here.
async fn apply(shared: &Shared, event: Event) -> Result<Result<(), Rejection>, Stop> {
    match event {
        Event::RunStarted {
            execution_id,
            plan_id,
            total_tasks,
            start_time,
        } => {
            // A retried start of a run that ended (here, or before this process started: the
            // handler asked the database before applying the request).
            if shared.aggregator.run(&execution_id).is_none()
                && shared.ended.contains(&execution_id)
            {
                return Ok(Ok(()));
            }
            let start =
                RunStart::new(execution_id, plan_id, total_tasks).with_start_time(start_time);
            match shared.aggregator.begin_run(start) {
                // A retried start of a live run: the run goes on as it is.
                Ok(_) | Err(BeginError::Duplicate(_)) => Ok(Ok(())),
                Err(BeginError::ShuttingDown) => Err(Stop::ShuttingDown),
                Err(e) => Ok(Err(Rejection::Refused(e.to_string()))),
            }
        }
        Event::TaskFinished {
            execution_id,
            task,
            result,
        } => {
            let run = match live(shared, execution_id) {
                Ok(run) => run,
                Err(rejection) => return Ok(Err(rejection)),
            };
            let wait = shared.config.full_wait;
            match tokio::time::timeout(wait, run.task_finished(task, result)).await {
                Err(_) | Ok(Err(RecordError::Full)) => Err(Stop::Full),
                Ok(Ok(())) => Ok(Ok(())),
                Ok(Err(e)) => record_error(e),
            }
        }
        Event::RunFinished {
            execution_id,
            end_time,
            cancelled,
        } => {
            if shared.ended.contains(&execution_id) {
                return Ok(Ok(()));
            }
            let run = match live(shared, execution_id.clone()) {
                Ok(run) => run,
                Err(rejection) => return Ok(Err(rejection)),
            };
            let ended = if cancelled {
                run.cancel(end_time).await
            } else {
                run.finish(end_time).await
            };
            match ended {
                // A retried end: the run already ended as asked.
                Ok(_) | Err(RecordError::RunFinished(_)) => {
                    shared.ended.insert(execution_id);
                    Ok(Ok(()))
                }
                Err(e) => record_error(e),
            }
        }
        Event::ExecutionState(_) => Ok(Err(Rejection::Unsupported("execution_state"))),
        Event::TaskState(_) => Ok(Err(Rejection::Unsupported("task_state"))),
    }
}

fn live(shared: &Shared, id: ExecutionId) -> Result<RunHandle, Rejection> {
    match shared.aggregator.run(&id) {
        Some(run) => Ok(run),
        None if shared.ended.contains(&id) => Err(Rejection::RunFinished(id)),
        None => Err(Rejection::UnknownRun(id)),
    }
}

fn record_error(e: RecordError) -> Result<Result<(), Rejection>, Stop> {
    match e {
        RecordError::Full => Err(Stop::Full),
        RecordError::ShuttingDown => Err(Stop::ShuttingDown),
        RecordError::RunFinished(id) => Ok(Err(Rejection::RunFinished(id))),
        other => Ok(Err(Rejection::Refused(
            match std::error::Error::source(&other) {
                Some(source) => format!("{other}: {source}"),
                None => other.to_string(),
            },
        ))),
    }
}
