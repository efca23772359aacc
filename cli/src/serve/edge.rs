//! What every request goes through before its handler's work: the token check, the body read
//! within its limit (and un-gzipped within it), the content type, the JSON nesting limit, and
//! the typed error answers.

use std::io::Read;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use subtle::ConstantTimeEq;

/// Why a request was refused before its handler's work: each is one status and one JSON body
/// `{"error": code, "message": …}`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EdgeError {
    /// No `Authorization: Bearer` header, or the wrong token (401).
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// The body (after decompression) is larger than the limit (413).
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// More events in one request than the limit (413).
    #[error("{count} events in one request; the limit is {limit}")]
    TooManyEvents { count: usize, limit: usize },
    /// A content type the endpoint does not take (415).
    #[error("content type {0:?} is not accepted here; send {1}")]
    UnsupportedType(String, &'static str),
    /// A `Content-Encoding` other than gzip or identity (415).
    #[error("content encoding {0:?} is not supported; send gzip or identity")]
    UnsupportedEncoding(String),
    /// The body could not be read: the client went away mid-body (400).
    #[error("the body could not be read: {0}")]
    Read(String),
    /// The body took longer than the limit to arrive (408).
    #[error("the body did not arrive within {0:?}")]
    Timeout(Duration),
    /// A gzip body that does not decompress (truncated, corrupt) (400).
    #[error("the gzip body does not decompress: {0}")]
    Gzip(std::io::Error),
    /// The body is not what the content type says (400).
    #[error("{0}")]
    Malformed(String),
    /// JSON nested deeper than the limit (400).
    #[error("JSON nested deeper than {0} levels")]
    TooDeep(usize),
    /// The service is draining for shutdown (503).
    #[error("runtally is shutting down")]
    ShuttingDown,
    /// runtally is full: pending writes are at their bound (429).
    #[error("runtally is full; retry after {0} s")]
    Full(u64),
}

impl EdgeError {
    fn status(&self) -> StatusCode {
        match self {
            EdgeError::Unauthorized => StatusCode::UNAUTHORIZED,
            EdgeError::TooLarge { .. } | EdgeError::TooManyEvents { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            EdgeError::UnsupportedType(..) | EdgeError::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            EdgeError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            EdgeError::Read(_)
            | EdgeError::Gzip(_)
            | EdgeError::Malformed(_)
            | EdgeError::TooDeep(_) => StatusCode::BAD_REQUEST,
            EdgeError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            EdgeError::Full(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            EdgeError::Unauthorized => "unauthorized",
            EdgeError::TooLarge { .. } => "body_too_large",
            EdgeError::TooManyEvents { .. } => "too_many_events",
            EdgeError::UnsupportedType(..) => "unsupported_content_type",
            EdgeError::UnsupportedEncoding(_) => "unsupported_content_encoding",
            EdgeError::Read(_) => "body_unreadable",
            EdgeError::Timeout(_) => "body_timeout",
            EdgeError::Gzip(_) => "bad_gzip",
            EdgeError::Malformed(_) => "malformed",
            EdgeError::TooDeep(_) => "too_deep",
            EdgeError::ShuttingDown => "shutting_down",
            EdgeError::Full(_) => "full",
        }
    }
}

impl IntoResponse for EdgeError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        let mut response = json_response(status, &body);
        match self {
            EdgeError::Full(seconds) => retry_after(&mut response, seconds),
            EdgeError::ShuttingDown => retry_after(&mut response, 1),
            EdgeError::Unauthorized => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"runtally\""),
                );
            }
            _ => {}
        }
        response
    }
}

/// Adds `Retry-After: seconds`.
pub(crate) fn retry_after(response: &mut Response, seconds: u64) {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
}

/// A JSON response with this status.
pub(crate) fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

/// Checks `Authorization: Bearer <token>` in constant time (in the token's length: the
/// compare does not stop at the first differing byte).
pub(crate) fn authorize(headers: &HeaderMap, token: Option<&str>) -> Result<(), EdgeError> {
    let Some(token) = token else { return Ok(()) };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if bool::from(given.ct_eq(token.as_bytes())) {
        Ok(())
    } else {
        Err(EdgeError::Unauthorized)
    }
}

/// The request's media type, lower case, without parameters (`application/json; charset=utf-8`
/// → `application/json`).
pub(crate) fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Reads the body: at most `limit` bytes (checked against `Content-Length` first, then as it
/// arrives: exporters send chunked bodies without one), within `timeout`, then decompressed
/// when `Content-Encoding: gzip`, again within `limit`.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, EdgeError> {
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => false,
        Some(e) if e.is_empty() || e == "identity" => false,
        Some(e) if e == "gzip" || e == "x-gzip" => true,
        Some(other) => return Err(EdgeError::UnsupportedEncoding(other)),
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(EdgeError::TooLarge { limit });
    }
    let read = async {
        let mut out = Vec::with_capacity(declared.map_or(0, |n| n as usize));
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| EdgeError::Read(e.to_string()))?;
            if out.len() + chunk.len() > limit {
                return Err(EdgeError::TooLarge { limit });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    };
    let raw = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| EdgeError::Timeout(timeout))??;
    if !gzip {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw.as_slice())
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(EdgeError::Gzip)?;
    if out.len() > limit {
        return Err(EdgeError::TooLarge { limit });
    }
    Ok(out)
}

/// Refuses JSON nested deeper than `max` arrays and objects, before any parser sees it (a
/// parser's own recursion limit answers later and less clearly; here the answer is typed).
pub(crate) fn check_depth(json: &[u8], max: usize) -> Result<(), EdgeError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(EdgeError::TooDeep(max));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings_only() {
        assert!(check_depth(br#"[{"a":[1,2,{"b":"[[[[[[["}]}]"#, 4).is_ok());
        assert!(matches!(
            check_depth(br#"[{"a":[[1]]}]"#, 3),
            Err(EdgeError::TooDeep(3))
        ));
        // An escaped quote does not end the string.
        assert!(check_depth(br#"["\"[[[[", 1]"#, 1).is_ok());
    }

    #[test]
    fn tokens_are_checked_exactly() {
        let mut headers = HeaderMap::new();
        assert!(authorize(&headers, None).is_ok());
        assert!(matches!(
            authorize(&headers, Some("s3cret")),
            Err(EdgeError::Unauthorized)
        ));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cre"),
        );
        assert!(authorize(&headers, Some("s3cret")).is_err());
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(authorize(&headers, Some("s3cret")).is_ok());
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("s3cret"));
        assert!(authorize(&headers, Some("s3cret")).is_err());
    }

    #[test]
    fn media_types_drop_their_parameters() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert_eq!(media_type(&headers), "application/json");
    }
}
