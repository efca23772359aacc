//! `runtally loadgen --http URL` and `--otlp URL`: the workload posted to `runtally serve`,
//! one request per run, with up to `--concurrency` requests in flight: as the event stream's
//! JSON objects (`POST /v1/events`), or as an OTLP/HTTP protobuf trace (`POST /v1/traces`: a
//! root agent span, a task span per result with a model-call span below it and one
//! `execute_tool` span per tool call). The request bodies are built before the clock starts, so
//! the figures measure the service, not the load generator. Ends with `POST /v1/flush` (after
//! the settle time, for traces), so `seconds_with_flush` includes the writes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use runtally::TaskStatus;
use runtally_cli::events::Event;
use runtally_cli::http::ServeClient;
use runtally_cli::workload::{WorkloadRun, WorkloadSpec};

use super::{lock, round3};

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn text(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.to_owned()))
}

fn int(key: &str, v: u64) -> KeyValue {
    kv(
        key,
        any_value::Value::IntValue(i64::try_from(v).unwrap_or(i64::MAX)),
    )
}

fn nanos(t: chrono::DateTime<chrono::Utc>) -> u64 {
    u64::try_from(t.timestamp_nanos_opt().unwrap_or(0)).unwrap_or(0)
}

/// FNV-1a over `text`, from `seed`.
fn fnv1a(text: &str, seed: u64) -> u64 {
    text.bytes().fold(seed, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Run `r` as an OTLP request; returns it and its span count.
pub(super) fn trace_of(r: usize, run: &WorkloadRun) -> (ExportTraceServiceRequest, usize) {
    // From the run's id, so two load runs with different prefixes never share a trace.
    let mut trace_id = [0u8; 16];
    trace_id[..8]
        .copy_from_slice(&fnv1a(run.execution_id.as_str(), 0xcbf2_9ce4_8422_2325).to_be_bytes());
    trace_id[8..].copy_from_slice(&fnv1a(run.execution_id.as_str(), r as u64 + 1).to_be_bytes());
    let mut next_id = 0u64;
    let mut id = || {
        next_id += 1;
        next_id.to_be_bytes().to_vec()
    };
    let (start, end) = (nanos(run.start_time), nanos(run.end_time));
    let span = |span_id: Vec<u8>, parent: Vec<u8>, name: String, attributes: Vec<KeyValue>| Span {
        trace_id: trace_id.to_vec(),
        span_id,
        parent_span_id: parent,
        name,
        kind: span::SpanKind::Internal as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        ..Span::default()
    };
    let root_id = id();
    let mut spans = Vec::with_capacity(run.tasks.len() * 3 + 1);
    for (task, result) in &run.tasks {
        let task_span_id = id();
        let mut attrs = vec![
            text("gen_ai.operation.name", "invoke_agent"),
            text("runtally.task_id", task.id.as_str()),
            text(
                "gen_ai.agent.name",
                task.title.as_deref().unwrap_or("agent"),
            ),
            text("gen_ai.completion", &result.output),
        ];
        if let Some(qc) = &result.qc_verification {
            attrs.push(kv(
                "gen_ai.evaluation.score.value",
                any_value::Value::DoubleValue(qc.score as f64 / 100.0),
            ));
            attrs.push(text(
                "gen_ai.evaluation.score.label",
                if qc.passed { "pass" } else { "fail" },
            ));
        }
        let mut task_span = span(
            task_span_id.clone(),
            root_id.clone(),
            format!("invoke_agent {}", task.id),
            attrs,
        );
        if result.status == TaskStatus::Failure {
            let error = result.error.as_deref().unwrap_or("error");
            task_span.attributes.push(text("error.type", error));
            task_span.status = Some(Status {
                message: error.to_owned(),
                code: status::StatusCode::Error as i32,
            });
        }
        spans.push(span(
            id(),
            task_span_id.clone(),
            "chat gpt-4o".to_owned(),
            vec![
                text("gen_ai.operation.name", "chat"),
                int("gen_ai.usage.input_tokens", result.tokens.input),
                int("gen_ai.usage.output_tokens", result.tokens.output),
            ],
        ));
        for _ in 0..result.tool_calls {
            spans.push(span(
                id(),
                task_span_id.clone(),
                "execute_tool search".to_owned(),
                vec![text("gen_ai.operation.name", "execute_tool")],
            ));
        }
        spans.push(task_span);
    }
    spans.push(span(
        root_id,
        Vec::new(),
        "invoke_agent orchestrator".to_owned(),
        vec![
            text("gen_ai.operation.name", "invoke_agent"),
            text("runtally.execution_id", run.execution_id.as_str()),
            text("runtally.plan_id", run.plan_id.as_str()),
            int("runtally.total_tasks", run.total_tasks),
        ],
    ));
    let count = spans.len();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    };
    (request, count)
}

/// Run `r` as the event stream's objects: start, results, end.
fn events_of(run: WorkloadRun) -> Vec<Event> {
    let mut events = Vec::with_capacity(run.tasks.len() + 2);
    events.push(Event::RunStarted {
        execution_id: run.execution_id.clone(),
        plan_id: run.plan_id,
        total_tasks: run.total_tasks,
        start_time: run.start_time,
    });
    for (task, result) in run.tasks {
        events.push(Event::TaskFinished {
            execution_id: run.execution_id.clone(),
            task,
            result,
        });
    }
    events.push(Event::RunFinished {
        execution_id: run.execution_id,
        end_time: run.end_time,
        cancelled: run.cancelled,
    });
    events
}

/// What the requests carry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// `POST /v1/events`, a JSON array per run.
    Events,
    /// `POST /v1/traces`, an OTLP protobuf trace per run.
    Otlp,
}

/// Posts the workload's runs; one JSON object of figures.
pub(super) async fn post(
    format: Format,
    url: &str,
    token: Option<String>,
    spec: &WorkloadSpec,
    concurrency: usize,
    settle: Duration,
) -> anyhow::Result<serde_json::Value> {
    let client = ServeClient::new(url, token, 20);
    // Built before the clock: the figures measure the service, not the request builder.
    let bodies: Vec<(Vec<u8>, usize)> = (0..spec.runs)
        .map(|r| {
            let run = spec.run(r)?;
            Ok(match format {
                Format::Otlp => {
                    let (request, spans) = trace_of(r, &run);
                    (request.encode_to_vec(), spans)
                }
                Format::Events => {
                    let events = events_of(run);
                    (serde_json::to_vec(&events)?, events.len())
                }
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let (path, content_type) = match format {
        Format::Otlp => ("/v1/traces", "application/x-protobuf"),
        Format::Events => ("/v1/events", "application/json"),
    };
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(spec.runs)));
    let spans_sent = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, bodies, next, latencies, spans_sent) = (
            client.clone(),
            Arc::clone(&bodies),
            Arc::clone(&next),
            Arc::clone(&latencies),
            Arc::clone(&spans_sent),
        );
        workers.push(tokio::spawn(async move {
            let mut local = Vec::new();
            loop {
                let r = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, spans)) = bodies.get(r) else {
                    break;
                };
                let answer = client.post(path, content_type, body.clone().into()).await?;
                anyhow::ensure!(
                    answer.status == 200,
                    "the service answered {}",
                    answer.status
                );
                if format == Format::Otlp {
                    // Spans of a trace the service already assembled are refused, not counted.
                    let reply = ExportTraceServiceResponse::decode(answer.body.clone())?;
                    if let Some(partial) = reply.partial_success {
                        anyhow::ensure!(
                            partial.rejected_spans == 0,
                            "{} spans refused: {}",
                            partial.rejected_spans,
                            partial.error_message
                        );
                    }
                }
                local.push(u64::try_from(answer.latency.as_micros()).unwrap_or(u64::MAX));
                spans_sent.fetch_add(*spans, Ordering::Relaxed);
            }
            lock(&latencies).extend(local);
            anyhow::Ok(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let sent = started.elapsed().as_secs_f64();
    if format == Format::Otlp {
        // The last traces are assembled once they settled; then everything is written.
        tokio::time::sleep(settle).await;
    }
    let flushed = client
        .post("/v1/flush", "application/json", "{}".into())
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    let items = spans_sent.load(Ordering::Relaxed);
    let mut latencies = lock(&latencies).clone();
    latencies.sort_unstable();
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let tasks: usize = spec.runs * spec.tasks;
    let (mode, unit) = match format {
        Format::Otlp => ("otlp", "spans"),
        Format::Events => ("http-events", "events"),
    };
    let mut figures = serde_json::json!({
        "mode": mode,
        "runs": spec.runs,
        "tasks": tasks,
        "concurrency": concurrency,
        "send_seconds": round3(sent),
        "tasks_per_s_sent": (tasks as f64 / sent).round(),
        "seconds_with_flush": round3(seconds),
        "tasks_per_s_with_flush": (tasks as f64 / seconds).round(),
        "request_p50_ms": quantile(0.5),
        "request_p99_ms": quantile(0.99),
        "flush_status": flushed.status,
    });
    figures[unit] = items.into();
    figures[format!("{unit}_per_s_sent")] = (items as f64 / sent).round().into();
    Ok(figures)
}
