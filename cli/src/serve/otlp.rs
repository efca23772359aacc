//! `POST /v1/traces`: OTLP/HTTP, protobuf or JSON (`opentelemetry-proto`'s types), decoded to
//! the spans runtally reads ([`SpanRecord`]) and handed to the held traces
//! ([`super::traces`]); answered with OTLP's `ExportTraceServiceResponse` in the request's
//! encoding, its `partial_success` naming the spans that were not taken.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode as SpanStatus, Span};
use prost::Message;

use runtally::genai::{AttributeValue, SpanRecord};

use super::edge::{self, EdgeError};
use super::traces::{Offer, TraceId};
use super::Shared;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// Spans of one request, by trace, and the spans that could not be read.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    pub(crate) spans: Vec<(TraceId, SpanRecord)>,
    pub(crate) invalid: u64,
    pub(crate) first_error: Option<String>,
}

impl Decoded {
    fn invalid(&mut self, why: impl FnOnce() -> String) {
        self.invalid += 1;
        if self.first_error.is_none() {
            self.first_error = Some(why());
        }
    }
}

pub(crate) async fn post(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, EdgeError> {
    let (protobuf, bytes) = shared
        .read(
            &headers,
            body,
            &[(PROTOBUF, true), (JSON, false)],
            "application/x-protobuf or application/json (OTLP/HTTP)",
        )
        .await?;
    let config = &shared.config;
    let request = if protobuf {
        ExportTraceServiceRequest::decode(bytes.as_slice())
            .map_err(|e| EdgeError::Malformed(format!("not an OTLP protobuf request: {e}")))?
    } else {
        edge::check_depth(&bytes, config.max_json_depth)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| EdgeError::Malformed(format!("not an OTLP JSON request: {e}")))?
    };
    drop(bytes);
    let decoded = decode(request);
    let Decoded {
        spans,
        invalid,
        first_error,
    } = decoded;
    let offered = spans.len() as u64;
    let Offer { late } = shared.traces.offer(spans)?;
    shared.count_spans(offered - late, late + invalid);
    let rejected = late + invalid;
    let partial_success = (rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: rejected as i64,
        error_message: match (first_error, late) {
            (Some(e), 0) => e,
            (Some(e), late) => format!("{e}; {late} spans arrived after their trace was assembled"),
            (None, late) => format!(
                "{late} spans arrived after their trace was assembled (more than the settle \
                 time after its root span)"
            ),
        },
    });
    let answer = ExportTraceServiceResponse { partial_success };
    let (content_type, body) = if protobuf {
        (PROTOBUF, answer.encode_to_vec())
    } else {
        (
            JSON,
            serde_json::to_vec(&answer).unwrap_or_else(|_| b"{}".to_vec()),
        )
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response())
}

/// The spans of a request, with what runtally reads of each.
pub(crate) fn decode(request: ExportTraceServiceRequest) -> Decoded {
    let mut out = Decoded::default();
    for resource in request.resource_spans {
        for scope in resource.scope_spans {
            for span in scope.spans {
                match record(span) {
                    Ok(pair) => out.spans.push(pair),
                    Err(why) => out.invalid(|| why),
                }
            }
        }
    }
    out
}

fn record(span: Span) -> Result<(TraceId, SpanRecord), String> {
    let trace: TraceId = span
        .trace_id
        .as_slice()
        .try_into()
        .ok()
        .filter(|id: &TraceId| id.iter().any(|b| *b != 0))
        .ok_or_else(|| {
            format!(
                "a span's trace id has {} bytes, not 16",
                span.trace_id.len()
            )
        })?;
    let span_id = id8(&span.span_id).ok_or_else(|| "a span id is not 8 bytes".to_owned())?;
    let parent = if span.parent_span_id.is_empty() {
        None
    } else {
        Some(
            id8(&span.parent_span_id)
                .ok_or_else(|| "a parent span id is not 8 bytes".to_owned())?,
        )
    };
    let start = time(span.start_time_unix_nano);
    let end = time(span.end_time_unix_nano);
    let mut record = SpanRecord::new(span_id, parent, span.name, start, end);
    for kv in &span.attributes {
        if let Some(value) = value(kv) {
            record.attribute(&kv.key, value);
        }
    }
    for event in &span.events {
        record.event(
            &event.name,
            event
                .attributes
                .iter()
                .filter_map(|kv| Some((kv.key.as_str(), value(kv)?))),
        );
    }
    if let Some(status) = &span.status {
        if status.code == SpanStatus::Error as i32 {
            record.set_error_status(Some(&status.message));
        }
    }
    Ok((trace, record))
}

fn id8(bytes: &[u8]) -> Option<u64> {
    let id = u64::from_be_bytes(bytes.try_into().ok()?);
    (id != 0).then_some(id)
}

fn time(nanos: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
}

fn value(kv: &KeyValue) -> Option<AttributeValue<'_>> {
    Some(match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => AttributeValue::Str(s),
        any_value::Value::IntValue(i) => AttributeValue::Int(*i),
        any_value::Value::DoubleValue(d) => AttributeValue::Double(*d),
        any_value::Value::BoolValue(b) => AttributeValue::Bool(*b),
        // Arrays, maps and bytes carry nothing runtally reads.
        _ => return None,
    })
}
