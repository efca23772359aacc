//! The CLI's HTTP client for `runtally serve`: `replay --http` posts an event stream,
//! `loadgen --otlp` posts synthetic GenAI traces. Keep-alive connections from a pool; a 429 or
//! 503 is retried after its `Retry-After` (the service's answers are idempotent, so a resend is
//! safe); every other answer is returned as it is.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The URL or a header is not valid.
    #[error("invalid request: {0}")]
    Request(String),
    /// The connection failed or broke.
    #[error("{0}")]
    Connection(String),
    /// Still 429/503 after this many attempts.
    #[error("still {status} after {attempts} attempts")]
    Exhausted {
        /// The last status.
        status: u16,
        /// Attempts made.
        attempts: u32,
    },
}

/// An answer: status and body, how many attempts it took, and how long the last one took.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Bytes,
    /// Attempts (1 without a retry).
    pub attempts: u32,
    /// Time of the last attempt, request sent to body read.
    pub latency: Duration,
}

/// A pool of keep-alive connections to one service.
#[derive(Clone, Debug)]
pub struct ServeClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: Option<String>,
    max_attempts: u32,
}

impl ServeClient {
    /// A client for `base` (`http://host:port`), with an optional bearer token; a 429 or 503 is
    /// tried at most `max_attempts` times in all.
    pub fn new(base: &str, token: Option<String>, max_attempts: u32) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: base.trim_end_matches('/').to_owned(),
            token,
            max_attempts: max_attempts.max(1),
        }
    }

    /// POSTs `body` to `path` with this content type.
    ///
    /// # Errors
    ///
    /// [`HttpError`] when no answer came, or only 429/503 after every attempt.
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<Answer, HttpError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut request = Request::builder()
                .method(Method::POST)
                .uri(format!("{}{path}", self.base))
                .header(hyper::header::CONTENT_TYPE, content_type);
            if let Some(token) = &self.token {
                request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let request = request
                .body(Full::new(body.clone()))
                .map_err(|e| HttpError::Request(e.to_string()))?;
            let started = Instant::now();
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| HttpError::Connection(e.to_string()))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| HttpError::Connection(e.to_string()))?
                .to_bytes();
            let latency = started.elapsed();
            let busy = matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            );
            if !busy {
                return Ok(Answer {
                    status: status.as_u16(),
                    body: bytes,
                    attempts,
                    latency,
                });
            }
            if attempts >= self.max_attempts {
                return Err(HttpError::Exhausted {
                    status: status.as_u16(),
                    attempts,
                });
            }
            let wait = retry_after.map_or(Duration::from_millis(100), Duration::from_secs);
            tokio::time::sleep(wait.min(Duration::from_secs(10))).await;
        }
    }
}
