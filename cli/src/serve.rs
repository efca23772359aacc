//! `runtally serve`: the aggregator as a local HTTP service, for orchestrators in any language.
//!
//! ```text
//!  clients                      serve.rs (axum on hyper, one task per connection)      library
//!  ───────                      ──────────────────────────────────────────────────      ───────
//!  seed JSON events ──► POST /v1/events  (serve/events.rs) ── in order ──────────► RunHandle
//!  OTLP exporters   ──► POST /v1/traces  (serve/otlp.rs: decode)                     (Aggregator)
//!                          │ spans by trace id                                          ▲
//!                          ▼                                                            │
//!                       held traces (serve/traces.rs): settle / hold ──► genai::assemble
//!  readers          ──► GET /v1/runs/{id} live snapshot, else the database's
//!  clients          ──► POST /v1/flush   answers once what came before is written
//!  probes           ──► GET /healthz, /readyz, /metrics
//!                       every request: serve/edge.rs (token, body limit, gzip, depth)
//! ```
//!
//! Connections beyond `max_connections` wait in the listen backlog; requests are answered
//! 429 with `Retry-After` when runtally is full (never queued without bound), 503 while
//! shutting down.

mod edge;
mod ended;
mod events;
mod otlp;
mod traces;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use runtally::store::{GraphStore, Neo4jStore};
use runtally::{Aggregator, ExecutionId};

use edge::{json_response, EdgeError};
use ended::EndedRuns;
use traces::Traces;

/// Limits and timings of [`serve`]; every field has a documented default ([`Default`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeConfig {
    /// Bearer token every `/v1/*` and `/metrics` request must carry (`/healthz`, `/readyz`
    /// never need one). Default: none (loopback only; the command refuses other addresses
    /// without one).
    pub token: Option<String>,
    /// Largest request body, after decompression (413 beyond). Default 64 MiB.
    pub max_body_bytes: usize,
    /// Most events in one `POST /v1/events` (413 beyond). Default 10,000.
    pub max_events: usize,
    /// Deepest JSON nesting accepted (400 beyond). Default 32.
    pub max_json_depth: usize,
    /// How long one request waits for a body to arrive (408 beyond). Default 30 s.
    pub body_timeout: Duration,
    /// How long one task result waits for room when runtally is full before the request is
    /// answered 429. Default 2 s.
    pub full_wait: Duration,
    /// `Retry-After` on a 429. Default 1 s.
    pub retry_after: Duration,
    /// A trace whose root has arrived is assembled once no span of it arrived for this long.
    /// Default 1 s.
    pub trace_settle: Duration,
    /// A trace is assembled at most this long after its first span, root or not. Default 60 s.
    pub trace_hold: Duration,
    /// Spans held at once across all traces (429 beyond). Default 1,000,000.
    pub max_held_spans: usize,
    /// Ended runs (and assembled traces) remembered, so a retried start or end is a no-op.
    /// Default 100,000.
    pub remember_ended: usize,
    /// Connections served at once; more wait in the listen backlog. Default 1,024.
    pub max_connections: usize,
    /// TLS on the listener ([`tls_config`]). Default: none (plain HTTP).
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            token: None,
            max_body_bytes: 64 << 20,
            max_events: 10_000,
            max_json_depth: 32,
            body_timeout: Duration::from_secs(30),
            full_wait: Duration::from_secs(2),
            retry_after: Duration::from_secs(1),
            trace_settle: Duration::from_secs(1),
            trace_hold: Duration::from_secs(60),
            max_held_spans: 1_000_000,
            remember_ended: 100_000,
            max_connections: 1024,
            tls: None,
        }
    }
}

/// What every handler shares.
pub(crate) struct Shared {
    aggregator: Aggregator,
    store: Option<Neo4jStore>,
    config: ServeConfig,
    ended: Arc<EndedRuns>,
    traces: Arc<Traces>,
    closing: AtomicBool,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl Shared {
    /// The checks before any `/v1/*` work: not shutting down, the token.
    fn admit(&self, headers: &HeaderMap) -> Result<(), EdgeError> {
        edge::authorize(headers, self.config.token.as_deref())?;
        if self.closing.load(Ordering::Acquire) {
            return Err(EdgeError::ShuttingDown);
        }
        Ok(())
    }

    /// What every POST does first: [`admit`](Self::admit), match the media type against
    /// `types` (what each one is), and read the body within the limits.
    async fn read<K: Copy>(
        &self,
        headers: &HeaderMap,
        body: axum::body::Body,
        types: &[(&str, K)],
        expected: &'static str,
    ) -> Result<(K, Vec<u8>), EdgeError> {
        self.admit(headers)?;
        let media = edge::media_type(headers);
        let Some(&(_, kind)) = types.iter().find(|(t, _)| *t == media) else {
            return Err(EdgeError::UnsupportedType(media, expected));
        };
        let (limit, timeout) = (self.config.max_body_bytes, self.config.body_timeout);
        Ok((kind, edge::read_body(headers, body, limit, timeout).await?))
    }

    fn count_events(&self, accepted: usize, rejected: usize) {
        metrics::counter!("runtally_serve_events_total", "outcome" => "accepted")
            .increment(accepted as u64);
        metrics::counter!("runtally_serve_events_total", "outcome" => "rejected")
            .increment(rejected as u64);
    }

    fn count_spans(&self, accepted: u64, rejected: u64) {
        metrics::counter!("runtally_serve_spans_total", "outcome" => "accepted")
            .increment(accepted);
        metrics::counter!("runtally_serve_spans_total", "outcome" => "rejected")
            .increment(rejected);
        metrics::gauge!("runtally_serve_held_spans").set(self.traces.held_spans() as f64);
    }
}

/// What [`serve`] did, once it stopped.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct ServeReport {
    /// Runs assembled from traces and recorded.
    pub trace_runs: u64,
    /// Runs assembled from traces that runtally refused (an id already live; logged).
    pub trace_runs_refused: u64,
    /// Traces assembled without their root span (held past `trace_hold`, or at shutdown).
    pub traces_without_root: u64,
    /// Runs whose trace came again after they had ended (not recorded twice).
    pub trace_runs_repeated: u64,
}

/// Serves until `shutdown` completes, then stops accepting, answers what is in flight,
/// assembles every held trace and returns. The caller then flushes and shuts the aggregator
/// down (the disk buffer, if any, keeps what the database has not taken).
///
/// `store` answers `GET /v1/runs/{id}` for runs no longer live, and `/readyz`; `metrics` is
/// rendered at `/metrics`.
pub async fn serve(
    listener: TcpListener,
    aggregator: Aggregator,
    store: Option<Neo4jStore>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<ServeReport> {
    let ended = Arc::new(EndedRuns::new(config.remember_ended, store.clone()));
    let traces = Arc::new(Traces::new(
        config.max_held_spans,
        config.remember_ended,
        config.trace_settle,
        config.trace_hold,
    ));
    let shared = Arc::new(Shared {
        aggregator: aggregator.clone(),
        store,
        config: config.clone(),
        ended: Arc::clone(&ended),
        traces: Arc::clone(&traces),
        closing: AtomicBool::new(false),
        metrics,
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let assembler = tokio::spawn(traces::run(Arc::clone(&traces), aggregator, ended, stop_rx));
    let app = Router::new()
        .route("/v1/events", post(events::post))
        .route("/v1/traces", post(otlp::post))
        .route("/v1/runs/{execution_id}", get(run))
        .route("/v1/flush", post(flush))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(access_log))
        .with_state(Arc::clone(&shared));
    let closing = Arc::clone(&shared);
    let listener = Limited {
        inner: listener,
        permits: Arc::new(Semaphore::new(config.max_connections.max(1))),
        tls: config.tls.clone().map(tokio_rustls::TlsAcceptor::from),
        handshakes: tokio::task::JoinSet::new(),
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            closing.closing.store(true, Ordering::Release);
            tracing::info!(target: "runtally::serve", "draining: no new requests");
        })
        .await?;
    let _ = stop_tx.send(true);
    if let Err(e) = assembler.await {
        tracing::error!(target: "runtally::serve", error = %e, "the trace assembler stopped");
    }
    let counts = &traces.counts;
    Ok(ServeReport {
        trace_runs: counts.runs_applied.load(Ordering::Relaxed),
        trace_runs_refused: counts.runs_refused.load(Ordering::Relaxed),
        traces_without_root: counts.traces_expired.load(Ordering::Relaxed),
        trace_runs_repeated: counts.runs_repeated.load(Ordering::Relaxed),
    })
}

/// One line per request at INFO (target `runtally::serve::access`): method, path, status,
/// declared body size and time taken. Never a header (the token) or a body (the payload).
async fn access_log(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let bytes = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    tracing::info!(target: "runtally::serve::access", %method, path, status, bytes, micros);
    metrics::histogram!("runtally_serve_request_seconds", "status" => status_class(status))
        .record(micros as f64 / 1e6);
    response
}

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A run as `GET /v1/runs/{id}` answers it: the seed's property names.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunView {
    execution_id: String,
    plan_id: Option<String>,
    status: String,
    tasks_total: i64,
    tasks_successful: i64,
    tasks_failed: i64,
    tokens_input: i64,
    tokens_output: i64,
    tokens_total: i64,
    tool_calls: i64,
    start_time: Option<i64>,
    end_time: Option<i64>,
    /// `live` (this process's run actor) or `database`.
    source: &'static str,
}

async fn run(
    State(shared): State<Arc<Shared>>,
    Path(execution_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, EdgeError> {
    edge::authorize(&headers, shared.config.token.as_deref())?;
    let id = ExecutionId::new(execution_id)
        .map_err(|e| EdgeError::Malformed(format!("not an execution id: {e}")))?;
    if let Some(handle) = shared.aggregator.run(&id) {
        if let Ok(s) = handle.snapshot().await {
            let view = RunView {
                execution_id: s.execution_id.to_string(),
                plan_id: Some(s.plan_id.to_string()),
                status: s.status.to_string(),
                tasks_total: s.tasks_total,
                tasks_successful: s.totals.tasks_successful,
                tasks_failed: s.totals.tasks_failed,
                tokens_input: s.totals.tokens_input,
                tokens_output: s.totals.tokens_output,
                tokens_total: s.totals.tokens_total(),
                tool_calls: s.totals.tool_calls,
                start_time: Some(s.start_time.timestamp_millis()),
                end_time: s.end_time.map(|t| t.timestamp_millis()),
                source: "live",
            };
            return Ok(json_response(StatusCode::OK, &view));
        }
    }
    let Some(store) = &shared.store else {
        return Ok(not_found_run(&id));
    };
    match store.execution(&id).await {
        Ok(Some(r)) => Ok(json_response(
            StatusCode::OK,
            &RunView {
                execution_id: r.id,
                plan_id: r.plan_id,
                status: r.status.to_string(),
                tasks_total: r.tasks_total,
                tasks_successful: r.tasks_successful,
                tasks_failed: r.tasks_failed,
                tokens_input: r.tokens_input,
                tokens_output: r.tokens_output,
                tokens_total: r.tokens_total,
                tool_calls: r.tool_calls,
                start_time: r.start_time.map(|t| t.timestamp_millis()),
                end_time: r.end_time.map(|t| t.timestamp_millis()),
                source: "database",
            },
        )),
        Ok(None) => Ok(not_found_run(&id)),
        Err(e) => {
            let mut response = json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": "database_unavailable", "message": e.to_string()}),
            );
            edge::retry_after(&mut response, 1);
            Ok(response)
        }
    }
}

/// `POST /v1/flush`: answers once everything accepted before it (events, and traces already
/// assembled) is written, or refused by the database (counted, and named in the answer).
async fn flush(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, EdgeError> {
    shared.admit(&headers)?;
    match shared.aggregator.flush().await {
        Ok(()) => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"flushed": true, "rejected_rows": 0}),
        )),
        Err(runtally::FlushError::Rejected { rows }) => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"flushed": true, "rejected_rows": rows}),
        )),
        Err(_) => Err(EdgeError::ShuttingDown),
    }
}

fn not_found_run(id: &ExecutionId) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &serde_json::json!({"error": "not_found", "message": format!("no run {id}")}),
    )
}

async fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &serde_json::json!({"error": "not_found", "message": "no such endpoint"}),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: not shutting down, and the database answers a read within 2 s.
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.closing.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let Some(store) = &shared.store else {
        return (StatusCode::OK, "ready\n").into_response();
    };
    match tokio::time::timeout(Duration::from_secs(2), store.ping()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unreachable: {e}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "database did not answer within 2 s\n",
        )
            .into_response(),
    }
}

async fn metrics_text(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, EdgeError> {
    edge::authorize(&headers, shared.config.token.as_deref())?;
    let body = shared
        .metrics
        .as_ref()
        .map(|m| m.render())
        .unwrap_or_default();
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        body,
    )
        .into_response())
}

/// A listener that serves at most as many connections as it has permits: the next `accept`
/// waits for a connection to close (the kernel's backlog holds the rest). With TLS, each
/// handshake runs in a task of its own (at most 10 s), so a slow client never holds up the
/// others' accepts.
struct Limited {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handshakes: tokio::task::JoinSet<Option<(LimitedStream, SocketAddr)>>,
}

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection holding its permit until it is dropped.
struct LimitedStream {
    conn: Conn,
    _permit: OwnedSemaphorePermit,
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Waits for a permit, then for a connection.
async fn accept_one(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    loop {
        let Ok(permit) = Arc::clone(permits).acquire_owned().await else {
            // The semaphore is never closed; wait as if it were full.
            return std::future::pending().await;
        };
        match listener.accept().await {
            Ok((stream, addr)) => {
                // Small answers go out at once (as the driver's connections do).
                let _ = stream.set_nodelay(true);
                return (stream, addr, permit);
            }
            Err(e) => {
                // Out of file descriptors and the like: axum's own listener backs off too.
                tracing::warn!(target: "runtally::serve", error = %e, "accept failed");
                drop(permit);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl axum::serve::Listener for Limited {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let Limited {
            inner,
            permits,
            tls,
            handshakes,
        } = self;
        loop {
            tokio::select! {
                Some(done) = handshakes.join_next(), if !handshakes.is_empty() => {
                    if let Ok(Some(conn)) = done {
                        return conn;
                    }
                }
                (stream, addr, permit) = accept_one(inner, permits) => {
                    let Some(acceptor) = tls.clone() else {
                        return (LimitedStream { conn: Conn::Plain(stream), _permit: permit }, addr);
                    };
                    handshakes.spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => Some((
                                LimitedStream { conn: Conn::Tls(Box::new(tls)), _permit: permit },
                                addr,
                            )),
                            Ok(Err(e)) => {
                                tracing::debug!(target: "runtally::serve", %addr, error = %e,
                                    "TLS handshake failed");
                                None
                            }
                            Err(_) => None,
                        }
                    });
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

macro_rules! both {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.conn {
            Conn::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Conn::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        both!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        both!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        both!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        both!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        both!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.conn {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Why the TLS certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The PEM file cannot be read or holds no certificate / key.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the pair (the key does not match, an unsupported algorithm…).
    #[error("the certificate and key cannot be used: {0}")]
    Config(#[from] tokio_rustls::rustls::Error),
}

/// A TLS server configuration from PEM files: the certificate chain (leaf first) and its
/// private key. HTTP/1.1 only (ALPN `http/1.1`).
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<tokio_rustls::rustls::ServerConfig>, TlsError> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem = |path: &std::path::Path, reason: String| TlsError::Pem {
        path: path.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem(cert, "no certificate in the file".to_owned()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e.to_string()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
