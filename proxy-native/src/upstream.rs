//! The only module that talks to upstreams: it executes the [`HttpRequest`]s that `shared`'s route
//! table describes and turns every transport failure and timeout into the shared error taxonomy.
//! Messages name the provider, never its URL or key.
//!
//! Each provider is reached one of two ways: over HTTP with reqwest, or, for providers the proxy
//! answers itself (the `mock` kind), by handing the same request to their router in process.
//! The way is chosen by the configured provider name, never by the URL, and everything after it
//! (timeouts, the body read chunk by chunk, the error mapping) is shared.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, BodyDataStream};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use switchyard_shared::{
    ApiError, Decision, ErrorCode, Failure, HttpRequest, Method, PreparedRequest, RetryPolicy,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::config::UpstreamConfig;
use crate::observability::Metrics;

/// Largest non-streamed upstream body read into memory; a provider answer is far smaller.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The HTTP client, the in-process providers and the timeouts that apply to every upstream
/// request.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: reqwest::Client,
    /// Providers answered in process, by configured name.
    in_process: HashMap<String, Router>,
    first_byte: Duration,
    idle: Duration,
    total: Duration,
    /// One permit per upstream request in flight, held until its body is read or dropped.
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    urls: Arc<UrlCache>,
    retry: RetryPolicy,
    /// Where retries are counted.
    metrics: Metrics,
}

/// Upstream URLs parsed once. The route table builds every URL from a configured base URL and a
/// path, so there are few of them; parsing one per request (IDNA processing included) was a
/// visible share of the proxy's CPU under load (`cargo xtask bench perf`).
#[derive(Debug, Default)]
struct UrlCache(std::sync::RwLock<HashMap<String, reqwest::Url>>);

/// Beyond this many distinct URLs (a path naming a model, say) the rest are parsed every time.
const MAX_CACHED_URLS: usize = 256;

impl UrlCache {
    fn parse(&self, url: &str) -> Result<reqwest::Url, ApiError> {
        if let Some(parsed) = self.0.read().ok().and_then(|urls| urls.get(url).cloned()) {
            return Ok(parsed);
        }
        let parsed = reqwest::Url::parse(url)
            .map_err(|_| ApiError::internal("the route table built an invalid URL"))?;
        if let Ok(mut urls) = self.0.write()
            && urls.len() < MAX_CACHED_URLS
        {
            urls.insert(url.to_owned(), parsed.clone());
        }
        Ok(parsed)
    }
}

/// An upstream answer whose headers have arrived and whose body has not been read.
#[derive(Debug)]
pub struct UpstreamResponse {
    /// The HTTP status.
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    body: UpstreamBody,
    provider: Arc<str>,
    idle: Duration,
    permit: OwnedSemaphorePermit,
}

/// A response body still to be read, from either kind of upstream.
enum UpstreamBody {
    /// Only the body of reqwest's response is kept: its headers, URL and extensions would stay
    /// in memory for as long as a stream is open, several KB each (`cargo xtask bench memory`).
    Http(Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>),
    InProcess(BodyDataStream),
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpstreamBody::Http(_) => "UpstreamBody::Http",
            UpstreamBody::InProcess(_) => "UpstreamBody::InProcess",
        })
    }
}

type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl UpstreamBody {
    async fn chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        match self {
            // reqwest's errors name the URL; logs get them without it.
            UpstreamBody::Http(body) => body
                .next()
                .await
                .transpose()
                .map_err(|e| Box::new(e.without_url()) as BodyError),
            UpstreamBody::InProcess(stream) => stream.next().await.transpose().map_err(Into::into),
        }
    }
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
            in_process: HashMap::new(),
            first_byte: config.first_byte_timeout(),
            idle: config.idle_timeout(),
            total: config.request_timeout(),
            in_flight: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            max_in_flight: config.max_concurrent_requests,
            urls: Arc::default(),
            retry: config.retry_policy(),
            metrics: Metrics::disabled(),
        })
    }

    /// Counts retries in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Answers the requests for `provider` with `router`, in process, instead of over HTTP.
    pub fn with_in_process(mut self, provider: &str, router: Router) -> Self {
        self.in_process.insert(provider.to_owned(), router);
        self
    }

    /// Sends the request and waits (at most the first-byte timeout) for the response headers.
    ///
    /// Failures that are safe to repeat (see `shared`'s retry policy) are retried within the
    /// same first-byte time; an answer that is returned has not passed a byte on yet, so nothing
    /// after this is ever retried. Between attempts the request holds no in-flight place: a
    /// pause must not keep other requests from an upstream that may be fine for them.
    pub async fn send(&self, prepared: &PreparedRequest) -> Result<UpstreamResponse, ApiError> {
        let provider: Arc<str> = Arc::from(prepared.provider.as_deref().unwrap_or("upstream"));
        let in_process = prepared
            .provider
            .as_deref()
            .and_then(|name| self.in_process.get(name));
        tracing::debug!(
            request = ?prepared.http,
            in_process = in_process.is_some(),
            "sending upstream request"
        );
        // Waiting for a place counts against the first-byte time, and so do retries: to the
        // caller it is the same wait, and a saturated proxy must not queue requests without bound.
        let started = tokio::time::Instant::now();
        let deadline = started + self.first_byte;
        let mut attempts = 1;
        loop {
            let (result, failure) = match self
                .attempt(prepared, in_process, &provider, deadline)
                .await
            {
                Ok(response) if response.is_success() => return Ok(response),
                Ok(response) => {
                    let failure = Failure::from_status(
                        prepared.format,
                        response.status,
                        response.retry_after.as_deref(),
                    );
                    (Ok(response), failure)
                }
                Err((error, failure)) => (Err(error), failure),
            };
            if failure == Failure::Final {
                return result;
            }
            let now = tokio::time::Instant::now();
            let delay = match self
                .retry
                .decide(attempts, now - started, failure, fastrand::f64())
            {
                // A pause that would outlast the first-byte time leaves nothing to wait for.
                Decision::RetryAfter(delay) if now + delay < deadline => delay,
                _ => return result,
            };
            tracing::info!(
                %provider,
                attempt = attempts,
                reason = failure.label(),
                status = result.as_ref().ok().map(|r| r.status),
                delay_ms = delay.as_millis() as u64,
                "retrying upstream request"
            );
            self.metrics
                .record_upstream_retry(&provider, failure.label());
            // The failed answer goes first: its connection and its in-flight place are freed
            // before the pause.
            drop(result);
            tokio::time::sleep(delay).await;
            attempts += 1;
        }
    }

    /// One attempt, ended by `deadline`; a failure comes with how the retry policy sees it.
    async fn attempt(
        &self,
        prepared: &PreparedRequest,
        in_process: Option<&Router>,
        provider: &Arc<str>,
        deadline: tokio::time::Instant,
    ) -> Result<UpstreamResponse, (ApiError, Failure)> {
        let permit = tokio::time::timeout_at(deadline, Arc::clone(&self.in_flight).acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                let error = ApiError::new(
                    ErrorCode::UpstreamTimeout,
                    format!(
                        "all {} upstream connections of the proxy stayed busy for {} ms",
                        self.max_in_flight,
                        self.first_byte.as_millis()
                    ),
                );
                (error, Failure::Final)
            })?;
        let exchange = async {
            match in_process {
                Some(router) => {
                    let url = self.urls.parse(&prepared.http.url).map_err(final_failure)?;
                    send_in_process(router, &url, &prepared.http)
                        .await
                        .map_err(final_failure)
                }
                None => {
                    let request = self.build(&prepared.http).map_err(final_failure)?;
                    let response = request.send().await.map_err(|e| send_error(provider, e))?;
                    Ok(http_response(response))
                }
            }
        };
        let (status, retry_after, body) = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(result) => result?,
            Err(_) => {
                let error = ApiError::new(
                    ErrorCode::UpstreamTimeout,
                    format!(
                        "upstream '{provider}' did not answer within {} ms",
                        self.first_byte.as_millis()
                    ),
                );
                return Err((error, Failure::Final));
            }
        };
        Ok(UpstreamResponse {
            status,
            retry_after,
            body,
            provider: Arc::clone(provider),
            idle: self.idle,
            permit,
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

    /// Whether `provider` can be reached, for readiness: a provider answered in process always
    /// can; a remote one must answer `GET <base_url>/models` below 500. The request goes without
    /// the key, so no credentials leave the proxy and no tokens are spent.
    pub async fn probe(&self, provider: &str, base_url: &str) -> Result<(), ApiError> {
        if self.in_process.contains_key(provider) {
            return Ok(());
        }
        let url = format!("{}/models", base_url.trim_end_matches('/'));
        let response = self.client.get(url).send().await.map_err(|e| {
            let code = if e.is_timeout() {
                ErrorCode::UpstreamTimeout
            } else {
                ErrorCode::UpstreamError
            };
            // Probes repeat while an upstream is down; the warning is for requests that fail.
            tracing::debug!(%provider, error = ?e.without_url(), "readiness probe failed");
            ApiError::new(code, format!("could not reach upstream '{provider}'"))
        })?;
        if response.status().is_server_error() {
            return Err(ApiError::new(
                ErrorCode::UpstreamError,
                format!(
                    "upstream '{provider}' answered {}",
                    response.status().as_u16()
                ),
            ));
        }
        Ok(())
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
        let url = self.urls.parse(&http.url)?;
        let mut builder = self.client.request(method, url).headers(headers);
        if let Some(body) = &http.body {
            builder = builder.body(body.clone());
        }
        Ok(builder)
    }
}

/// What [`Upstream::send`] needs of an answer: its status, its `Retry-After` and its body.
type Answer = (u16, Option<String>, UpstreamBody);

fn retry_after(headers: &HeaderMap) -> Option<String> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn http_response(response: reqwest::Response) -> Answer {
    (
        response.status().as_u16(),
        retry_after(response.headers()),
        UpstreamBody::Http(Box::pin(response.bytes_stream())),
    )
}

/// Hands the request to an in-process provider's router: the same method, path, headers and
/// body that would go over the network.
async fn send_in_process(
    router: &Router,
    url: &reqwest::Url,
    http: &HttpRequest,
) -> Result<Answer, ApiError> {
    // Only the path and query of the URL the route table made matter to the router.
    let path = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let method = match http.method {
        Method::Get => axum::http::Method::GET,
        Method::Post => axum::http::Method::POST,
    };
    let mut request = axum::http::Request::builder().method(method).uri(path);
    for (name, value) in &http.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Body::from(http.body.clone().unwrap_or_default()))
        .map_err(|_| ApiError::internal("cannot build the in-process upstream request"))?;
    // A router's error type is `Infallible`: every failure is already a response.
    let response = match router.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    Ok((
        parts.status.as_u16(),
        retry_after(&parts.headers),
        UpstreamBody::InProcess(body.into_data_stream()),
    ))
}

impl UpstreamResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as it arrives, each chunk within the idle timeout of the previous one.
    ///
    /// The stream owns the body: dropping it (as axum does when the client goes away) closes
    /// the upstream connection, which cancels the upstream's work, or, in process, drops the
    /// answer being written.
    pub fn into_chunks(self) -> impl Stream<Item = Result<Bytes, ApiError>> + Send + 'static {
        let UpstreamResponse {
            body,
            provider,
            idle,
            permit,
            ..
        } = self;
        // The permit goes with the body: the connection counts until the body ends or is dropped.
        futures::stream::unfold(Some((body, permit)), move |state| {
            let provider = Arc::clone(&provider);
            async move {
                let (mut body, permit) = state?;
                match tokio::time::timeout(idle, body.chunk()).await {
                    Ok(Ok(Some(chunk))) => Some((Ok(chunk), Some((body, permit)))),
                    Ok(Ok(None)) => None,
                    Ok(Err(e)) => {
                        tracing::warn!(%provider, error = ?e, "upstream body broke off");
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

/// A failure that retrying cannot help: the proxy's own.
fn final_failure(error: ApiError) -> (ApiError, Failure) {
    (error, Failure::Final)
}

/// Maps a failure to send. reqwest's own message names the URL, so it only goes to the log, and
/// without the URL. Only a failure to connect (refused, DNS, TLS handshake) is known to have
/// sent nothing; any other may have reached the upstream.
fn send_error(provider: &str, e: reqwest::Error) -> (ApiError, Failure) {
    let connect = e.is_connect();
    tracing::warn!(%provider, error = ?e.without_url(), "upstream request failed");
    let message = if connect {
        format!("could not reach upstream '{provider}'")
    } else {
        format!("the request to upstream '{provider}' failed")
    };
    let failure = if connect {
        Failure::NotSent
    } else {
        Failure::Final
    };
    (ApiError::new(ErrorCode::UpstreamError, message), failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{self, MockProvider, MockScript};
    use switchyard_shared::{ProviderKind, WireFormat};

    fn prepared(provider: &str, url: &str) -> PreparedRequest {
        PreparedRequest {
            http: HttpRequest {
                method: Method::Post,
                url: url.to_owned(),
                headers: vec![("content-type".into(), "application/json".into())],
                body: Some(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#.into()),
            },
            format: WireFormat::Provider(ProviderKind::OpenAi),
            provider: Some(provider.to_owned()),
        }
    }

    fn upstream() -> Upstream {
        let mock = MockProvider::new("mock", MockScript::default(), &[]);
        Upstream::new(&UpstreamConfig::default())
            .unwrap()
            .with_in_process("mock", mock::in_process_router(Arc::new(mock)))
    }

    #[tokio::test]
    async fn in_process_providers_are_chosen_by_name_never_by_url() {
        let upstream = upstream();
        // The mock's name answers in process, whatever host the URL names...
        let reply = upstream
            .fetch(&prepared("mock", "http://127.0.0.1:9/v1/chat/completions"))
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        assert!(String::from_utf8_lossy(&reply.body).contains("mock model"));
        // ...and another name goes to the network even with the mock's address.
        let url = format!("{}/chat/completions", mock::IN_PROCESS_BASE_URL);
        let error = upstream.fetch(&prepared("other", &url)).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::UpstreamError);
        assert!(error.message.contains("'other'"), "{error:?}");
    }

    #[tokio::test]
    async fn in_process_answers_keep_their_status() {
        let reply = upstream()
            .fetch(&prepared("mock", "http://mock.invalid/v1/embeddings"))
            .await
            .unwrap();
        assert_eq!(reply.status, 404);
        let prepared = prepared("mock", "http://mock.invalid/v1/embeddings");
        let error = prepared.decode_error(reply.status, None, &reply.body);
        assert_eq!(error.code, ErrorCode::NotFound);
        assert!(error.message.contains("/v1/embeddings"), "{error:?}");
    }

    #[test]
    fn parsed_urls_are_kept_up_to_a_bound() {
        let cache = UrlCache::default();
        let url = "http://127.0.0.1:8080/v1/chat/completions?x=1";
        let first = cache.parse(url).unwrap();
        assert_eq!(first.as_str(), url);
        assert_eq!(cache.parse(url).unwrap(), first);
        assert_eq!(cache.0.read().unwrap().len(), 1);
        for i in 0..MAX_CACHED_URLS + 10 {
            let url = format!("http://127.0.0.1:8080/v1/models/m{i}");
            assert_eq!(cache.parse(&url).unwrap().as_str(), url);
        }
        assert_eq!(cache.0.read().unwrap().len(), MAX_CACHED_URLS);
        let error = cache.parse("not a url").unwrap_err();
        assert_eq!(error.code, ErrorCode::Internal);
    }
}
