//! The cross-cutting concerns every route gets, composed in one place (outermost first).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::header::{HOST, ORIGIN};
use axum::http::{HeaderName, HeaderValue, Method, Request, Response};
use axum::response::IntoResponse;
use futures::TryFutureExt;
use futures::future::{BoxFuture, Either, MapOk, Ready, ready};
use switchyard_shared::error::truncate;
use switchyard_shared::faces::openai;
use switchyard_shared::{ApiError, ErrorCode, paths};
use tower::{Layer, Service, ServiceBuilder};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::{Span, field};

use crate::auth::{self, Authenticator};
use crate::config::ServerConfig;
use crate::error::AppError;
use crate::limits::{self, Budget, Limiter};
use crate::observability::{self, Metrics};

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request headers of MCP's Streamable HTTP transport, which a page in direct mode sends to a
/// built-in server's `/mcp/<name>` endpoint (`mcp-method` and `mcp-name` are the 2026-07-28
/// routing headers).
const MCP_REQUEST_HEADERS: [HeaderName; 5] = [
    HeaderName::from_static("mcp-session-id"),
    HeaderName::from_static("mcp-protocol-version"),
    HeaderName::from_static("mcp-method"),
    HeaderName::from_static("mcp-name"),
    HeaderName::from_static("last-event-id"),
];
/// Exposed because a browser otherwise hides it, and a session-based MCP client then fails every
/// call after `initialize`.
const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");

/// Wraps `router` in request ids, tracing, metrics, the Host and Origin guards, CORS,
/// authentication and the body limit.
pub fn apply<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    server: &ServerConfig,
    metrics: &Metrics,
    authenticator: &Arc<Authenticator>,
    limiter: &Arc<Limiter>,
) -> Router<S> {
    let stack = ServiceBuilder::new()
        // Outermost, so the id is in the span and on every response, errors and preflights too.
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(record_response)
                // Failures are logged once, with their error code, where they become responses.
                .on_failure(()),
        )
        // Inside the request id, outside everything that may refuse a request, so that refusals
        // are counted too. The layer runs per route, where the matched path template is known.
        .option_layer(
            metrics
                .enabled()
                .then(|| observability::TrackRequestsLayer(metrics.clone())),
        )
        // Outside every layer that may refuse a request, so that all refusals on the OpenAI
        // face are in OpenAI's shape.
        .layer(OpenAiErrorsLayer)
        .layer(CheckLayer(Arc::new(HostPolicy::new(&server.allowed_hosts))))
        .layer(CheckLayer(Arc::new(OriginPolicy::new(
            &server.cors_allowed_origins,
        ))))
        .option_layer(cors(&server.cors_allowed_origins))
        // Inside CORS, so that preflights (which carry no credentials) are answered; everything
        // after this knows who the caller is.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(authenticator),
            auth::authenticate,
        ))
        // Once the caller is known: their request rate and token budget, decided in process
        // (at once), or by the Redis the instances share (`[cluster]`, awaited).
        .layer(if limiter.is_shared() {
            tower::util::Either::Right(SharedLimitLayer(Arc::clone(limiter)))
        } else {
            tower::util::Either::Left(CheckLayer(Arc::clone(limiter)))
        })
        // Enforced by the JSON extractor, so an oversized body gets the shared 413 body.
        .layer(DefaultBodyLimit::max(server.max_body_bytes));
    router.layer(stack)
}

/// One span per request with method, path and request id; headers and bodies are never recorded
/// (they carry keys and user content).
fn request_span(req: &Request<Body>) -> Span {
    let request_id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id,
        status = field::Empty,
        latency_ms = field::Empty,
    )
}

/// Completes the request span with status and latency (time to the response headers; a stream
/// goes on after this).
fn record_response(res: &Response<Body>, latency: Duration, span: &Span) {
    span.record("status", res.status().as_u16());
    span.record("latency_ms", latency.as_millis() as u64);
    tracing::info!("response");
}

/// Answers errors under `/v1/` in OpenAI's shape (`{"error": {"message", "type", "param",
/// "code"}}`), whichever layer or handler refused the request: OpenAI's clients read only that
/// shape. A service of its own rather than `from_fn`, so that other routes pay one path
/// comparison and nothing more.
#[derive(Debug, Clone, Copy)]
struct OpenAiErrorsLayer;

impl<S> Layer<S> for OpenAiErrorsLayer {
    type Service = OpenAiErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OpenAiErrors(inner)
    }
}

/// The service of [`OpenAiErrorsLayer`].
#[derive(Debug, Clone)]
struct OpenAiErrors<S>(S);

type Reshape = fn(Response<Body>) -> Response<Body>;

impl<S, B> Service<Request<B>> for OpenAiErrors<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, MapOk<S::Future, Reshape>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.uri().path().starts_with(paths::OPENAI_PREFIX) {
            Either::Right(self.0.call(request).map_ok(openai_error as Reshape))
        } else {
            Either::Left(self.0.call(request))
        }
    }
}

/// Rewrites the body of a response that carries an [`ApiError`] (every error response does,
/// see `error.rs`); status and headers (`Retry-After`, the request id) stay.
fn openai_error(response: Response<Body>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    match parts.extensions.remove::<ApiError>() {
        Some(error) => {
            parts.headers.remove(CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(openai::error_body(&error)))
        }
        None => Response::from_parts(parts, body),
    }
}

/// A check that either lets a request go on or answers it itself, without waiting on anything.
trait Admission {
    /// `Err` with the refusal when the request may not go on.
    fn admit<B>(&self, request: &Request<B>) -> Result<(), ApiError>;
}

/// Runs an [`Admission`] check before the routes. A service of its own rather than `from_fn`,
/// which clones the inner service and boxes its future for every request (14 % of the proxy's
/// CPU at saturation went to those, `bench/perf.sh`); tower's `Filter` would need the refusal as
/// an error, which axum's routes cannot carry.
#[derive(Debug, Clone)]
struct CheckLayer<P>(P);

impl<S, P: Clone> Layer<S> for CheckLayer<P> {
    type Service = Check<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Check {
            inner,
            policy: self.0.clone(),
        }
    }
}

/// The service of [`CheckLayer`].
#[derive(Debug, Clone)]
struct Check<S, P> {
    inner: S,
    policy: P,
}

impl<S, P, B> Service<Request<B>> for Check<S, P>
where
    S: Service<Request<B>, Response = Response<Body>>,
    P: Admission,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<Body>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match self.policy.admit(&request) {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(refusal) => Either::Left(ready(Ok(AppError(refusal).into_response()))),
        }
    }
}

impl Admission for Arc<Limiter> {
    fn admit<B>(&self, request: &Request<B>) -> Result<(), ApiError> {
        limits::check(self, request.extensions())
    }
}

/// Admits requests against the limits the instances share in Redis (`[cluster]`): the request
/// waits for the answer (at most `redis_timeout_ms`). A caller without a request rate or token
/// budget goes on at once, without a clone of the inner service or a boxed future.
#[derive(Debug, Clone)]
struct SharedLimitLayer(Arc<Limiter>);

impl<S> Layer<S> for SharedLimitLayer {
    type Service = SharedLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SharedLimit {
            inner,
            limiter: Arc::clone(&self.0),
        }
    }
}

/// The service of [`SharedLimitLayer`].
#[derive(Debug, Clone)]
struct SharedLimit<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

impl<S, B> Service<Request<B>> for SharedLimit<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Some(budget) =
            Budget::of(request.extensions()).filter(|budget| self.limiter.asks_store(budget))
        else {
            return Either::Left(self.inner.call(request));
        };
        // The service that was polled ready goes with the request; the clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = Arc::clone(&self.limiter);
        Either::Right(Box::pin(async move {
            match limiter.admit_shared(&budget).await {
                Ok(()) => inner.call(request).await,
                Err(refusal) => Ok(AppError(refusal).into_response()),
            }
        }))
    }
}

/// `None` (no CORS headers at all) when no origin is configured.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // Origins were checked when the configuration was loaded; one that still does not fit a
        // header value simply matches nothing.
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            // DELETE: an MCP client ends its session at `/mcp` (or `/mcp/<name>`) with it.
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers(
                [CONTENT_TYPE, AUTHORIZATION, X_REQUEST_ID, ACCEPT]
                    .into_iter()
                    .chain(MCP_REQUEST_HEADERS)
                    .collect::<Vec<_>>(),
            )
            .expose_headers([X_REQUEST_ID, MCP_SESSION_ID]),
    )
}

/// Which `Host` headers the proxy answers to. A browser sends the name it resolved; if a page's
/// own name is made to resolve to 127.0.0.1 (DNS rebinding), its requests are same-origin and
/// CORS does not apply, so the name itself is what tells them apart. No crate offers this check
/// as a tower layer; it is a few lines.
#[derive(Debug)]
struct HostPolicy {
    extra: Vec<String>,
}

impl HostPolicy {
    fn new(extra: &[String]) -> Self {
        HostPolicy {
            extra: extra.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    /// Loopback names and addresses (the only ones the proxy listens on), and the configured
    /// extra names. `host` is the header's value, with or without a port.
    fn admits(&self, host: &str) -> bool {
        let name = match host.strip_prefix('[') {
            // `[::1]:3001`
            Some(rest) => rest.split(']').next().unwrap_or_default(),
            None => host.rsplit_once(':').map_or(host, |(name, _)| name),
        }
        .to_ascii_lowercase();
        name == "localhost"
            || name.ends_with(".localhost")
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
            || self.extra.contains(&name)
    }
}

/// Refuses requests whose `Host` names something other than this machine (`403 forbidden`).
/// Clients that send no `Host` (not browsers) are let through.
impl Admission for Arc<HostPolicy> {
    fn admit<B>(&self, request: &Request<B>) -> Result<(), ApiError> {
        let mut headers = request.headers().get_all(HOST).iter();
        let header = headers.next().map(|h| h.to_str().unwrap_or("\u{fffd}"));
        // Which of two Host lines counts differs between servers and proxies on the way: refuse.
        if headers.next().is_some() {
            return Err(ApiError::bad_request("a request carries one Host header"));
        }
        // An absolute-form target (`GET http://name/path`) names the host the client meant too.
        let target = request.uri().authority().map(|a| a.as_str());
        for host in header.into_iter().chain(target) {
            if !self.admits(host) {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "the Host {:?} is not this machine; add it to server.allowed_hosts if it should be",
                        truncate(host, 100)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Which `Origin`s may call the proxy: a page on the proxy's own origin, or one listed in
/// `cors_allowed_origins` (any, with `"*"`). Checked on every route, as the MCP specification
/// asks of local servers: CORS only hides answers from a page, while this refuses the request
/// itself, so a foreign page cannot even trigger a tool call it cannot read.
#[derive(Debug)]
struct OriginPolicy {
    any: bool,
    listed: Vec<String>,
}

impl OriginPolicy {
    fn new(cors_allowed_origins: &[String]) -> Self {
        OriginPolicy {
            any: cors_allowed_origins.iter().any(|o| o == "*"),
            listed: cors_allowed_origins.to_vec(),
        }
    }

    /// Whether a request with `origin`, sent to `host` (the `Host` header, already admitted by
    /// [`HostPolicy`]), may proceed. The proxy serves plain HTTP, so its own origin is
    /// `http://<Host>`.
    fn admits(&self, origin: &HeaderValue, host: Option<&str>) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        self.any
            || self.listed.iter().any(|o| o == origin)
            || host.is_some_and(|host| {
                origin
                    .strip_prefix("http://")
                    .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
            })
    }
}

/// Refuses requests from page origins that are not allowed (`403 forbidden`); requests without
/// `Origin` (not sent by a page, or a same-origin `GET`) pass.
impl Admission for Arc<OriginPolicy> {
    fn admit<B>(&self, request: &Request<B>) -> Result<(), ApiError> {
        let Some(origin) = request.headers().get(ORIGIN) else {
            return Ok(());
        };
        let host = request
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()));
        if self.admits(origin, host) {
            return Ok(());
        }
        let shown = truncate(origin.to_str().unwrap_or("\u{fffd}"), 100);
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "the Origin {shown:?} may not call this proxy; add it to \
                 server.cors_allowed_origins if it should"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::{HostPolicy, OriginPolicy};

    #[test]
    fn only_loopback_names_and_configured_hosts_are_admitted() {
        let policy = HostPolicy::new(&["Switchyard.Internal".to_owned()]);
        for host in [
            "127.0.0.1:3001",
            "127.1.2.3",
            "localhost",
            "LOCALHOST:3001",
            "app.localhost:5173",
            "[::1]:3001",
            "[::1]",
            "switchyard.internal:3001",
        ] {
            assert!(policy.admits(host), "{host}");
        }
        for host in [
            "evil.test:3001",
            "localhost.evil.test",
            "10.0.0.1:3001",
            "[::2]:3001",
            "0.0.0.0:3001",
            "",
            "[",
        ] {
            assert!(!policy.admits(host), "{host}");
        }
    }

    fn admits(allowed: &[&str], origin: &str, host: Option<&str>) -> bool {
        let allowed: Vec<String> = allowed.iter().map(|o| (*o).to_owned()).collect();
        OriginPolicy::new(&allowed).admits(&HeaderValue::from_str(origin).unwrap(), host)
    }

    #[test]
    fn the_proxys_own_origin_and_listed_origins_are_admitted() {
        let host = Some("127.0.0.1:3001");
        assert!(admits(&[], "http://127.0.0.1:3001", host));
        assert!(admits(&[], "http://LOCALHOST:3001", Some("localhost:3001")));
        assert!(admits(
            &["http://localhost:5173"],
            "http://localhost:5173",
            host
        ));
        assert!(admits(&["*"], "https://anything.example", host));
    }

    #[test]
    fn other_origins_are_refused() {
        let host = Some("127.0.0.1:3001");
        assert!(!admits(&[], "http://127.0.0.1:3002", host));
        assert!(!admits(&[], "https://127.0.0.1:3001", host));
        assert!(!admits(&[], "http://evil.example", host));
        assert!(!admits(&[], "null", host));
        assert!(!admits(&[], "http://127.0.0.1:3001", None));
        assert!(!admits(
            &["http://localhost:5173"],
            "http://localhost:5174",
            host
        ));
    }
}
