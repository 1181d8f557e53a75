//! The error taxonomy: one set of stable codes and one JSON body shape for every failure, whichever
//! mode or face reports it.

use serde::{Deserialize, Serialize};

#[cfg(feature = "wasm")]
use tsify::Tsify;

/// A stable, machine-readable error code. Clients branch on this, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ErrorCode {
    /// The request is malformed or names something invalid.
    BadRequest,
    /// The caller did not authenticate (or the key is wrong).
    Unauthorized,
    /// The caller is authenticated but may not do this.
    Forbidden,
    /// The provider, model or route does not exist.
    NotFound,
    /// The route exists but not with this HTTP method.
    MethodNotAllowed,
    /// The request body is larger than allowed.
    PayloadTooLarge,
    /// Too many requests; retry after the indicated delay.
    RateLimited,
    /// The upstream failed or answered with something unusable.
    UpstreamError,
    /// The upstream rejected the credentials it was given.
    UpstreamUnauthorized,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// A stream ended before its final event.
    StreamInterrupted,
    /// The network request could not be made (connection refused, DNS, mixed content).
    NetworkError,
    /// The server answered, but the browser withheld the answer: the server does not allow the
    /// page's origin (CORS).
    CorsBlocked,
    /// The caller aborted the request.
    Aborted,
    /// The proxy cannot decide on the request now: a store it depends on (the Redis that holds
    /// shared limits) cannot be reached; retry after the indicated delay.
    Unavailable,
    /// A bug or an unexpected state on our side.
    Internal,
}

impl ErrorCode {
    /// The snake_case name that appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::UpstreamError => "upstream_error",
            ErrorCode::UpstreamUnauthorized => "upstream_unauthorized",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
            ErrorCode::StreamInterrupted => "stream_interrupted",
            ErrorCode::NetworkError => "network_error",
            ErrorCode::CorsBlocked => "cors_blocked",
            ErrorCode::Aborted => "aborted",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status the proxy answers with for this code.
    ///
    /// The SDK reports the same status in direct mode, so that an error looks alike in both modes.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::UpstreamError
            | ErrorCode::UpstreamUnauthorized
            | ErrorCode::StreamInterrupted
            | ErrorCode::NetworkError
            | ErrorCode::CorsBlocked => 502,
            ErrorCode::UpstreamTimeout => 504,
            // 499 is the de-facto "client closed request" status; nothing is ever sent with it.
            ErrorCode::Aborted => 499,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    /// Whether repeating the same request may succeed.
    pub fn default_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited
                | ErrorCode::UpstreamError
                | ErrorCode::UpstreamTimeout
                | ErrorCode::StreamInterrupted
                | ErrorCode::NetworkError
                | ErrorCode::Unavailable
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as it travels on the wire and through both modes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[error("{code}: {message}")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation; never contains secrets.
    pub message: String,
    /// Whether repeating the same request may succeed.
    pub retryable: bool,
    /// Seconds to wait before retrying, when the upstream or a limit said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "wasm", tsify(optional))]
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with the code's default retryability.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retryable: code.default_retryable(),
            retry_after: None,
        }
    }

    /// Shorthand for [`ErrorCode::BadRequest`].
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// Shorthand for [`ErrorCode::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// Sets the retry delay in seconds.
    pub fn with_retry_after(mut self, seconds: Option<u64>) -> Self {
        self.retry_after = seconds;
        self
    }

    /// The HTTP status this error is answered with.
    pub fn http_status(&self) -> u16 {
        self.code.http_status()
    }

    /// Wraps the error into the JSON body shape `{"error": {...}}`.
    pub fn into_body(self) -> ErrorBody {
        ErrorBody { error: self }
    }

    /// The JSON body text `{"error": {...}}`.
    pub fn to_body_json(&self) -> String {
        // Serializing a struct of strings, bools and integers cannot fail.
        serde_json::to_string(&ErrorBodyRef { error: self }).unwrap_or_default()
    }

    /// Maps an upstream HTTP failure to the taxonomy.
    ///
    /// `upstream_message` is the provider's own explanation; it is kept only where it helps the
    /// caller fix the request and cannot carry credentials (never for 401/403, whose messages
    /// often echo part of the key).
    pub fn from_upstream_status(
        status: u16,
        upstream_message: Option<&str>,
        retry_after: Option<&str>,
    ) -> Self {
        let detail = |fallback: &str| -> String {
            match upstream_message.map(str::trim).filter(|m| !m.is_empty()) {
                Some(m) => format!("upstream answered {status}: {}", truncate(m, 500)),
                None => format!("upstream answered {status}: {fallback}"),
            }
        };
        let retry_after = retry_after.and_then(parse_retry_after);
        match status {
            400 | 422 => ApiError::new(ErrorCode::BadRequest, detail("bad request")),
            401 | 403 => ApiError::new(
                ErrorCode::UpstreamUnauthorized,
                format!("upstream answered {status}: it rejected the credentials it was given"),
            ),
            404 => ApiError::new(ErrorCode::NotFound, detail("not found")),
            408 | 504 => ApiError::new(ErrorCode::UpstreamTimeout, detail("timed out")),
            413 => ApiError::new(ErrorCode::PayloadTooLarge, detail("request too large")),
            429 => ApiError::new(ErrorCode::RateLimited, detail("rate limited"))
                .with_retry_after(retry_after),
            500..=599 => ApiError::new(ErrorCode::UpstreamError, detail("server error"))
                .with_retry_after(retry_after),
            _ => {
                let mut e = ApiError::new(ErrorCode::UpstreamError, detail("unexpected status"));
                e.retryable = false;
                e
            }
        }
    }
}

/// The one JSON error body shape: `{"error": {"code", "message", "retryable"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The error itself.
    pub error: ApiError,
}

#[derive(Serialize)]
struct ErrorBodyRef<'a> {
    error: &'a ApiError,
}

impl ErrorBody {
    /// Parses a body of the shape `{"error": {...}}`; `None` if it is something else.
    pub fn parse(body: &[u8]) -> Option<ApiError> {
        crate::json::from_slice::<ErrorBody>(body)
            .ok()
            .map(|b| b.error)
    }
}

/// Reads `Retry-After` as delta-seconds, fractional ones rounded up; HTTP dates are rare from LLM
/// APIs and are ignored.
pub(crate) fn parse_retry_after(value: &str) -> Option<u64> {
    let v = value.trim();
    v.parse::<u64>()
        .ok()
        .or_else(|| crate::decimal::ceil_to_u64(v))
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape_is_stable() {
        let e = ApiError::new(ErrorCode::RateLimited, "slow down");
        assert_eq!(
            e.to_body_json(),
            r#"{"error":{"code":"rate_limited","message":"slow down","retryable":true}}"#
        );
        assert_eq!(ErrorBody::parse(e.to_body_json().as_bytes()), Some(e));
    }

    #[test]
    fn codes_round_trip_through_their_names() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::PayloadTooLarge,
            ErrorCode::RateLimited,
            ErrorCode::UpstreamError,
            ErrorCode::UpstreamUnauthorized,
            ErrorCode::UpstreamTimeout,
            ErrorCode::StreamInterrupted,
            ErrorCode::NetworkError,
            ErrorCode::CorsBlocked,
            ErrorCode::Aborted,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
    }

    #[test]
    fn upstream_429_keeps_retry_after() {
        let e = ApiError::from_upstream_status(429, Some("too many"), Some("7"));
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert_eq!(e.retry_after, Some(7));
        assert!(e.retryable);
        assert_eq!(e.http_status(), 429);
    }

    #[test]
    fn upstream_auth_failures_never_echo_the_message() {
        let e = ApiError::from_upstream_status(
            401,
            Some("Incorrect API key provided: sk-te****cret"),
            None,
        );
        assert_eq!(e.code, ErrorCode::UpstreamUnauthorized);
        assert!(!e.message.contains("sk-"));
        assert!(!e.retryable);
    }

    #[test]
    fn upstream_statuses_map_to_codes() {
        let cases = [
            (400, ErrorCode::BadRequest, false),
            (404, ErrorCode::NotFound, false),
            (408, ErrorCode::UpstreamTimeout, true),
            (413, ErrorCode::PayloadTooLarge, false),
            (500, ErrorCode::UpstreamError, true),
            (503, ErrorCode::UpstreamError, true),
            (529, ErrorCode::UpstreamError, true),
            (302, ErrorCode::UpstreamError, false),
        ];
        for (status, code, retryable) in cases {
            let e = ApiError::from_upstream_status(status, None, None);
            assert_eq!((e.code, e.retryable), (code, retryable), "status {status}");
        }
    }

    #[test]
    fn long_upstream_messages_are_cut_on_a_char_boundary() {
        let long = "é".repeat(600);
        let e = ApiError::from_upstream_status(400, Some(&long), None);
        assert!(e.message.len() < 600);
    }

    #[test]
    fn retry_after_accepts_fractional_seconds() {
        assert_eq!(parse_retry_after("1.2"), Some(2));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
