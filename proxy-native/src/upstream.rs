//! The only module that talks to upstreams: it executes the [`HttpRequest`]s that `shared`'s route
//! table describes, with reqwest, and turns every transport failure and timeout into the shared
//! error taxonomy. Messages name the provider, never its URL or key.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use switchyard_shared::{ApiError, ErrorCode, HttpRequest, Method, PreparedRequest};

use crate::config::UpstreamConfig;

/// Largest non-streamed upstream body read into memory; a provider answer is far smaller.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The HTTP client and the timeouts that apply to every upstream request.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: reqwest::Client,
    first_byte: Duration,
    idle: Duration,
    total: Duration,
}

/// An upstream answer whose headers have arrived and whose body has not been read.
#[derive(Debug)]
pub struct UpstreamResponse {
    /// The HTTP status.
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    response: reqwest::Response,
    provider: Arc<str>,
    idle: Duration,
}

/// A complete upstream answer.
#[derive(Debug)]
pub struct UpstreamReply {
    /// The HTTP status.
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The whole body.
    pub body: Bytes,
}

impl Upstream {
    /// Builds the one client the proxy uses for its whole life (it pools connections).
    pub fn new(config: &UpstreamConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout())
            // A redirect could lead the request, and its key, to a host nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Upstream {
            client,
            first_byte: config.first_byte_timeout(),
            idle: config.idle_timeout(),
            total: config.request_timeout(),
        })
    }

    /// Sends the request and waits (at most the first-byte timeout) for the response headers.
    pub async fn send(&self, prepared: &PreparedRequest) -> Result<UpstreamResponse, ApiError> {
        let provider: Arc<str> = Arc::from(prepared.provider.as_deref().unwrap_or("upstream"));
        tracing::debug!(request = ?prepared.http, "sending upstream request");
        let request = self.build(&prepared.http)?;
        let response = match tokio::time::timeout(self.first_byte, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Err(send_error(&provider, e)),
            Err(_) => {
                return Err(ApiError::new(
                    ErrorCode::UpstreamTimeout,
                    format!(
                        "upstream '{provider}' did not answer within {} ms",
                        self.first_byte.as_millis()
                    ),
                ));
            }
        };
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(UpstreamResponse {
            status: response.status().as_u16(),
            retry_after,
            response,
            provider,
            idle: self.idle,
        })
    }

    /// Sends the request and reads the whole answer, all within the request timeout.
    pub async fn fetch(&self, prepared: &PreparedRequest) -> Result<UpstreamReply, ApiError> {
        let exchange = async { self.send(prepared).await?.collect().await };
        tokio::time::timeout(self.total, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::new(
                    ErrorCode::UpstreamTimeout,
                    format!(
                        "upstream '{}' did not complete within {} ms",
                        prepared.provider.as_deref().unwrap_or("upstream"),
                        self.total.as_millis()
                    ),
                ))
            })
    }

    fn build(&self, http: &HttpRequest) -> Result<reqwest::RequestBuilder, ApiError> {
        let method = match http.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
        };
        let mut headers = HeaderMap::with_capacity(http.headers.len());
        for (name, value) in &http.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ApiError::internal(format!("invalid header name {name:?}")))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| ApiError::internal(format!("invalid value for header {name}")))?;
            // These headers carry the key; sensitive values stay out of Debug output.
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let mut builder = self.client.request(method, &http.url).headers(headers);
        if let Some(body) = &http.body {
            builder = builder.body(body.clone());
        }
        Ok(builder)
    }
}

impl UpstreamResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as it arrives, each chunk within the idle timeout of the previous one.
    ///
    /// The stream owns the reqwest response: dropping it (as axum does when the client goes
    /// away) closes the upstream connection, which cancels the upstream's work.
    pub fn into_chunks(self) -> impl Stream<Item = Result<Bytes, ApiError>> + Send + 'static {
        let UpstreamResponse {
            response,
            provider,
            idle,
            ..
        } = self;
        futures::stream::unfold(Some(response), move |state| {
            let provider = Arc::clone(&provider);
            async move {
                let mut response = state?;
                match tokio::time::timeout(idle, response.chunk()).await {
                    Ok(Ok(Some(chunk))) => Some((Ok(chunk), Some(response))),
                    Ok(Ok(None)) => None,
                    Ok(Err(e)) => {
                        tracing::warn!(%provider, error = ?e.without_url(), "upstream body broke off");
                        let error = ApiError::new(
                            ErrorCode::StreamInterrupted,
                            format!("the connection to upstream '{provider}' broke off"),
                        );
                        Some((Err(error), None))
                    }
                    Err(_) => {
                        let error = ApiError::new(
                            ErrorCode::UpstreamTimeout,
                            format!(
                                "upstream '{provider}' sent nothing for {} ms",
                                idle.as_millis()
                            ),
                        );
                        Some((Err(error), None))
                    }
                }
            }
        })
    }

    /// Reads the whole body (bounded in size, each chunk within the idle timeout).
    pub async fn collect(self) -> Result<UpstreamReply, ApiError> {
        use futures::StreamExt;

        let (status, retry_after) = (self.status, self.retry_after.clone());
        let provider = Arc::clone(&self.provider);
        let mut body = BytesMut::new();
        let mut chunks = std::pin::pin!(self.into_chunks());
        while let Some(chunk) = chunks.next().await {
            body.extend_from_slice(&chunk?);
            if body.len() > MAX_BODY_BYTES {
                return Err(ApiError::new(
                    ErrorCode::UpstreamError,
                    format!("upstream '{provider}' sent a body larger than {MAX_BODY_BYTES} bytes"),
                ));
            }
        }
        Ok(UpstreamReply {
            status,
            retry_after,
            body: body.freeze(),
        })
    }
}

/// Maps a failure to send. reqwest's own message names the URL, so it only goes to the log, and
/// without the URL.
fn send_error(provider: &str, e: reqwest::Error) -> ApiError {
    let connect = e.is_connect();
    tracing::warn!(%provider, error = ?e.without_url(), "upstream request failed");
    let message = if connect {
        format!("could not reach upstream '{provider}'")
    } else {
        format!("the request to upstream '{provider}' failed")
    };
    ApiError::new(ErrorCode::UpstreamError, message)
}
