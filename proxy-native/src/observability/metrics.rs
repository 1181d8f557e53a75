//! Prometheus metrics: what is recorded, under which names and labels, and the layer that counts
//! every request by its route.
//!
//! Each [`Metrics`] owns its own `PrometheusRecorder`, and every recording goes through
//! `metrics::with_local_recorder`; no global recorder is ever installed. So several proxies in
//! one process (the end-to-end suites run many) keep separate series, and a program that embeds
//! the proxy keeps its global recorder for itself.
//!
//! Labels are bounded: routes are the router's path templates, upstreams and models are names
//! from the configuration, outcomes and codes come from fixed lists. Whatever a client sends
//! that is not configured is counted as `"unknown"`, never under its own name.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::MatchedPath;
use axum::http::{Method, Request};
use axum::response::Response;
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use switchyard_shared::{ErrorCode, ModelId, ModelList, Usage};
use tower::{Layer, Service};

/// Requests answered, by `route`, `method` and `status`.
pub const HTTP_REQUESTS: &str = "switchyard_http_requests_total";
/// Time to the response headers, by `route` and `method`.
pub const HTTP_DURATION: &str = "switchyard_http_request_duration_seconds";
/// Chats, by `provider`, `model`, `stream` and `outcome`.
pub const LLM_REQUESTS: &str = "switchyard_llm_requests_total";
/// Whole chats, streams to their last event, by `provider` and `stream`.
pub const LLM_DURATION: &str = "switchyard_llm_request_duration_seconds";
/// Tokens the providers reported, by `provider`, `model` and `kind` (`prompt`, `completion`).
pub const LLM_TOKENS: &str = "switchyard_llm_tokens_total";
/// Upstream failures, by `upstream_kind` (`llm`, `mcp`), `upstream` and `code`.
pub const UPSTREAM_ERRORS: &str = "switchyard_upstream_errors_total";
/// LLM upstream requests sent again after a failure, by `upstream` and `reason` (`unreachable`,
/// `unavailable`, `rate_limited`).
pub const UPSTREAM_RETRIES: &str = "switchyard_upstream_retries_total";
/// Streams being relayed now, by `kind` (`chat`, `tool_call`).
pub const ACTIVE_STREAMS: &str = "switchyard_active_streams";
/// WebSocket connections (`/api/ws`) open now.
pub const WEBSOCKET_CONNECTIONS: &str = "switchyard_websocket_connections";
/// Live MCP sessions in the pool, by `server`.
pub const MCP_SESSIONS: &str = "switchyard_mcp_pool_sessions";
/// 1 while an MCP server's breaker is open (it is failing to start), by `server`.
pub const MCP_BREAKER_OPEN: &str = "switchyard_mcp_breaker_open";
/// Tasks alive on the proxy's async runtime (requests, streams, sessions, background work).
pub const RUNTIME_ALIVE_TASKS: &str = "switchyard_runtime_alive_tasks";
/// MCP tool calls, by `server`, `stream` and `outcome`.
pub const MCP_TOOL_CALLS: &str = "switchyard_mcp_tool_calls_total";
/// Whole MCP tool calls, by `server`.
pub const MCP_TOOL_DURATION: &str = "switchyard_mcp_tool_call_duration_seconds";

/// Whether the Redis of `[cluster]` answers (1) or not (0); absent without `[cluster]`.
pub const CLUSTER_REDIS_UP: &str = "switchyard_cluster_redis_up";
/// Limit checks decided by `on_redis_unavailable` because Redis could not be asked, by `check`
/// (`requests`: an admission, `tokens`: a charge counted in process) and `policy`.
pub const CLUSTER_POLICY_DECISIONS: &str = "switchyard_cluster_policy_decisions_total";

/// The label value for anything a client named that is not configured.
pub const UNKNOWN: &str = "unknown";
/// The `route` of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

/// Histogram buckets, in seconds: from a fast local answer to a long generation.
const BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Histogram samples wait in the recorder until drained; without a scrape they would pile up.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// What kind of stream an [`ActiveStream`] counts.
#[derive(Debug, Clone, Copy)]
pub enum StreamKind {
    /// `POST /api/llm/stream`.
    Chat,
    /// `POST /api/mcp/tool/stream`.
    ToolCall,
}

impl StreamKind {
    fn label(self) -> &'static str {
        match self {
            StreamKind::Chat => "chat",
            StreamKind::ToolCall => "tool_call",
        }
    }
}

/// The proxy's metrics; a no-op when `[observability] metrics = false`. Cheap to clone.
#[derive(Clone)]
pub struct Metrics(Option<Arc<Registry>>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Metrics").field(&self.0.is_some()).finish()
    }
}

struct Registry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    providers: HashSet<String>,
    /// Listed model ids, `"<provider>/<model>"`.
    models: HashSet<String>,
    servers: HashSet<String>,
}

impl Metrics {
    /// Metrics that record nothing and render nothing.
    pub fn disabled() -> Self {
        Metrics(None)
    }

    /// A recorder of its own for the configured providers, their listed models and the MCP
    /// servers (the only names that become label values).
    pub fn new<'a>(
        models: &ModelList,
        servers: impl IntoIterator<Item = &'a str>,
    ) -> anyhow::Result<Self> {
        // Real histograms (buckets) rather than the exporter's default summaries, so that
        // latencies can be aggregated across proxy instances.
        let recorder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .map_err(|e| anyhow::anyhow!("cannot set up the metrics: {e}"))?
            .build_recorder();
        let handle = recorder.handle();
        let registry = Arc::new(Registry {
            recorder,
            handle,
            providers: models.providers.iter().map(|p| p.name.clone()).collect(),
            models: models
                .providers
                .iter()
                .flat_map(|p| p.models.iter().cloned())
                .collect(),
            servers: servers.into_iter().map(str::to_owned).collect(),
        });
        let metrics = Metrics(Some(Arc::clone(&registry)));
        metrics.with(|| {
            describe();
            // Series that exist from the start, so that a dashboard shows 0 rather than nothing.
            for kind in [StreamKind::Chat, StreamKind::ToolCall] {
                gauge!(ACTIVE_STREAMS, "kind" => kind.label()).set(0.0);
            }
            gauge!(WEBSOCKET_CONNECTIONS).set(0.0);
            for server in &registry.servers {
                gauge!(MCP_SESSIONS, "server" => server.clone()).set(0.0);
                gauge!(MCP_BREAKER_OPEN, "server" => server.clone()).set(0.0);
            }
        });
        spawn_upkeep(Arc::downgrade(&registry));
        Ok(metrics)
    }

    /// Whether metrics are recorded (and `/metrics` served).
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Runs `record` with this proxy's recorder as the current one.
    fn with(&self, record: impl FnOnce()) {
        if let Some(registry) = &self.0 {
            metrics::with_local_recorder(&registry.recorder, record);
        }
    }

    /// The text exposition format, with the MCP session gauge set to `sessions`, the breaker
    /// gauge to `failing` and the runtime's task count read first; `None` when metrics are off.
    pub fn render<'a>(
        &self,
        sessions: impl IntoIterator<Item = (&'a str, usize)>,
        failing: impl IntoIterator<Item = (&'a str, bool)>,
    ) -> Option<String> {
        let registry = self.0.as_ref()?;
        self.with(|| {
            for (server, count) in sessions {
                gauge!(MCP_SESSIONS, "server" => server.to_owned()).set(count as f64);
            }
            for (server, open) in failing {
                gauge!(MCP_BREAKER_OPEN, "server" => server.to_owned())
                    .set(f64::from(u8::from(open)));
            }
            // A task left behind by a finished request or stream shows here as a count that
            // does not come back down.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                gauge!(RUNTIME_ALIVE_TASKS).set(runtime.metrics().num_alive_tasks() as f64);
            }
        });
        Some(registry.handle.render())
    }

    /// One answered request.
    pub fn record_request(
        &self,
        route: Option<&str>,
        method: &Method,
        status: u16,
        elapsed: Duration,
    ) {
        let route = route.unwrap_or(UNMATCHED).to_owned();
        let method = method_label(method);
        self.with(|| {
            counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status.to_string())
                .increment(1);
            histogram!(HTTP_DURATION, "route" => route, "method" => method).record(elapsed.as_secs_f64());
        });
    }

    /// One finished chat: its outcome, duration and reported usage.
    pub fn record_chat(
        &self,
        model_id: &str,
        stream: bool,
        outcome: &str,
        elapsed: Duration,
        usage: Option<&Usage>,
        error: Option<ErrorCode>,
    ) {
        let Some(registry) = &self.0 else {
            return;
        };
        let (provider, model) = registry.chat_labels(model_id);
        let stream = if stream { "true" } else { "false" };
        self.with(|| {
            counter!(LLM_REQUESTS, "provider" => provider.clone(), "model" => model.clone(),
                "stream" => stream, "outcome" => outcome.to_owned())
            .increment(1);
            histogram!(LLM_DURATION, "provider" => provider.clone(), "stream" => stream)
                .record(elapsed.as_secs_f64());
            if let Some(usage) = usage {
                for (kind, tokens) in [
                    ("prompt", usage.prompt_tokens),
                    ("completion", usage.completion_tokens),
                ] {
                    counter!(LLM_TOKENS, "provider" => provider.clone(), "model" => model.clone(), "kind" => kind)
                        .increment(u64::from(tokens));
                }
            }
        });
        if let Some(code) = error
            && provider != UNKNOWN
        {
            self.record_upstream_error("llm", &provider, code);
        }
    }

    /// One finished tool call.
    pub fn record_tool_call(
        &self,
        server: &str,
        stream: bool,
        outcome: &str,
        elapsed: Duration,
        error: Option<ErrorCode>,
    ) {
        let Some(registry) = &self.0 else {
            return;
        };
        let server = registry.server_label(server);
        let stream = if stream { "true" } else { "false" };
        self.with(|| {
            counter!(MCP_TOOL_CALLS, "server" => server.clone(), "stream" => stream, "outcome" => outcome.to_owned())
                .increment(1);
            histogram!(MCP_TOOL_DURATION, "server" => server.clone()).record(elapsed.as_secs_f64());
        });
        if let Some(code) = error
            && server != UNKNOWN
        {
            self.record_upstream_error("mcp", &server, code);
        }
    }

    /// An MCP operation other than a tool call failed (tool calls are counted by
    /// [`Self::record_tool_call`]).
    pub fn record_mcp_error(&self, server: &str, code: ErrorCode) {
        let Some(registry) = &self.0 else {
            return;
        };
        let server = registry.server_label(server);
        if server != UNKNOWN {
            self.record_upstream_error("mcp", &server, code);
        }
    }

    /// Counts `code` against a configured upstream when it is one an upstream causes.
    fn record_upstream_error(&self, kind: &'static str, upstream: &str, code: ErrorCode) {
        if !is_upstream_failure(code) {
            return;
        }
        let upstream = upstream.to_owned();
        self.with(|| {
            counter!(UPSTREAM_ERRORS, "upstream_kind" => kind, "upstream" => upstream, "code" => code.as_str())
                .increment(1);
        });
    }

    /// Whether the Redis of `[cluster]` answers now.
    pub fn record_redis_up(&self, up: bool) {
        self.with(|| gauge!(CLUSTER_REDIS_UP).set(if up { 1.0 } else { 0.0 }));
    }

    /// One check decided by the `policy` (`open`, `closed`) rather than by Redis; `check` is
    /// `requests`, `tokens` or `sessions` (an ended MCP gateway session).
    pub fn record_policy_decision(&self, check: &'static str, policy: &'static str) {
        self.with(|| {
            counter!(CLUSTER_POLICY_DECISIONS, "check" => check, "policy" => policy).increment(1);
        });
    }

    /// One retry of an LLM upstream request; `reason` is one of `shared`'s fixed failure labels.
    pub fn record_upstream_retry(&self, provider: &str, reason: &'static str) {
        let Some(registry) = &self.0 else {
            return;
        };
        let provider = if registry.providers.contains(provider) {
            provider.to_owned()
        } else {
            UNKNOWN.to_owned()
        };
        self.with(|| {
            counter!(UPSTREAM_RETRIES, "upstream" => provider, "reason" => reason).increment(1);
        });
    }

    /// Counts a stream as active until the returned guard is dropped.
    pub fn stream_started(&self, kind: StreamKind) -> ActiveStream {
        self.with(|| gauge!(ACTIVE_STREAMS, "kind" => kind.label()).increment(1.0));
        ActiveStream {
            metrics: self.clone(),
            kind,
        }
    }
}

impl Metrics {
    /// Counts a WebSocket connection as open until the returned guard is dropped.
    pub fn socket_opened(&self) -> OpenSocket {
        self.with(|| gauge!(WEBSOCKET_CONNECTIONS).increment(1.0));
        OpenSocket {
            metrics: self.clone(),
        }
    }
}

/// A WebSocket connection counted in [`WEBSOCKET_CONNECTIONS`]; dropping it ends the count.
#[derive(Debug)]
pub struct OpenSocket {
    metrics: Metrics,
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.metrics
            .with(|| gauge!(WEBSOCKET_CONNECTIONS).decrement(1.0));
    }
}

impl Registry {
    /// The `provider` and `model` labels of a requested model id.
    fn chat_labels(&self, model_id: &str) -> (String, String) {
        let Ok(id) = ModelId::parse(model_id) else {
            return (UNKNOWN.to_owned(), UNKNOWN.to_owned());
        };
        if !self.providers.contains(id.provider) {
            return (UNKNOWN.to_owned(), UNKNOWN.to_owned());
        }
        let model = if self.models.contains(model_id) {
            id.model
        } else {
            UNKNOWN
        };
        (id.provider.to_owned(), model.to_owned())
    }

    fn server_label(&self, server: &str) -> String {
        if self.servers.contains(server) {
            server.to_owned()
        } else {
            UNKNOWN.to_owned()
        }
    }
}

/// A stream counted in [`ACTIVE_STREAMS`]; dropping it ends the count.
pub struct ActiveStream {
    metrics: Metrics,
    kind: StreamKind,
}

impl std::fmt::Debug for ActiveStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveStream")
            .field("kind", &self.kind)
            .finish()
    }
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        let kind = self.kind.label();
        self.metrics
            .with(|| gauge!(ACTIVE_STREAMS, "kind" => kind).decrement(1.0));
    }
}

/// The codes an upstream causes (as opposed to a client's mistake or a refusal by the proxy).
pub fn is_upstream_failure(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::UpstreamError
            | ErrorCode::UpstreamUnauthorized
            | ErrorCode::UpstreamTimeout
            | ErrorCode::StreamInterrupted
            | ErrorCode::RateLimited
    )
}

/// Counts every request by its matched route (the path template, never the path a client sent),
/// method and status, and times it to the response headers (a stream goes on after them).
/// A service of its own rather than `from_fn`, which clones the inner service and boxes its
/// future for every request.
#[derive(Debug, Clone)]
pub struct TrackRequestsLayer(pub Metrics);

impl<S> Layer<S> for TrackRequestsLayer {
    type Service = TrackRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TrackRequests {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service of [`TrackRequestsLayer`].
#[derive(Debug, Clone)]
pub struct TrackRequests<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B> Service<Request<B>> for TrackRequests<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = request.method().clone();
        Tracked {
            inner: self.inner.call(request),
            metrics: self.metrics.clone(),
            route,
            method,
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer on its way, recorded when it arrives.
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        metrics: Metrics,
        route: Option<MatchedPath>,
        method: Method,
        started: Instant,
    }
}

impl<F, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            this.metrics.record_request(
                this.route.as_ref().map(MatchedPath::as_str),
                this.method,
                response.status().as_u16(),
                this.started.elapsed(),
            );
        }
        Poll::Ready(result)
    }
}

/// HTTP methods are an open set; only the standard ones become label values.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "Requests answered, by matched route, method and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time from request to response headers, by matched route and method."
    );
    describe_counter!(
        LLM_REQUESTS,
        "Chats, by provider, listed model, stream and outcome."
    );
    describe_histogram!(
        LLM_DURATION,
        Unit::Seconds,
        "Whole chats (streams to their last event), by provider and stream."
    );
    describe_counter!(
        LLM_TOKENS,
        "Tokens reported by the providers, by provider, listed model and kind."
    );
    describe_counter!(
        UPSTREAM_ERRORS,
        "Upstream failures, by upstream kind, configured name and error code."
    );
    describe_counter!(
        UPSTREAM_RETRIES,
        "LLM upstream requests sent again after a failure, by configured name and reason."
    );
    describe_gauge!(ACTIVE_STREAMS, "Streams being relayed now, by kind.");
    describe_gauge!(
        WEBSOCKET_CONNECTIONS,
        "WebSocket connections (/api/ws) open now."
    );
    describe_gauge!(MCP_SESSIONS, "Live MCP sessions in the pool, by server.");
    describe_gauge!(
        MCP_BREAKER_OPEN,
        "1 while an MCP server is failing to start and its starts are held back, by server."
    );
    describe_gauge!(
        RUNTIME_ALIVE_TASKS,
        "Tasks alive on the proxy's async runtime."
    );
    describe_counter!(
        MCP_TOOL_CALLS,
        "MCP tool calls, by server, stream and outcome."
    );
    describe_gauge!(
        CLUSTER_REDIS_UP,
        "Whether the Redis that holds the shared limits answers (1) or not (0)."
    );
    describe_counter!(
        CLUSTER_POLICY_DECISIONS,
        "Limit checks decided by on_redis_unavailable while Redis could not be asked, by check and policy."
    );
    describe_histogram!(
        MCP_TOOL_DURATION,
        Unit::Seconds,
        "Whole MCP tool calls, by server."
    );
}

/// Drains histogram samples every few seconds for as long as the registry lives. Outside a
/// runtime (a state built in a plain unit test) there is nothing to run it on, and scrapes drain
/// them anyway.
fn spawn_upkeep(registry: Weak<Registry>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(registry) = registry.upgrade() else {
                return;
            };
            registry.handle.run_upkeep();
        }
    });
}

#[cfg(test)]
mod tests {
    use switchyard_shared::{ProviderInfo, ProviderKind};

    use super::*;

    fn metrics() -> Metrics {
        let models = ModelList {
            providers: vec![ProviderInfo {
                name: "local".into(),
                kind: ProviderKind::OpenAi,
                models: vec!["local/llama3.2".into()],
            }],
        };
        Metrics::new(&models, ["demo"]).unwrap()
    }

    #[test]
    fn unconfigured_names_are_counted_as_unknown() {
        let metrics = metrics();
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
            total_tokens: 7,
        };
        let ok = Duration::from_millis(5);
        metrics.record_chat("local/llama3.2", false, "ok", ok, Some(&usage), None);
        metrics.record_chat(
            "local/secret-model-name",
            true,
            "ok",
            ok,
            Some(&usage),
            None,
        );
        metrics.record_chat(
            "ghost/x",
            false,
            "not_found",
            ok,
            None,
            Some(ErrorCode::NotFound),
        );
        metrics.record_chat("no-slash", false, "bad_request", ok, None, None);
        metrics.record_tool_call("ghost-server", false, "not_found", ok, None);
        let text = metrics.render([], []).unwrap();
        assert!(
            text.contains(
                r#"switchyard_llm_tokens_total{provider="local",model="llama3.2",kind="prompt"} 3"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"switchyard_llm_tokens_total{provider="local",model="unknown",kind="completion"} 4"#
        ), "{text}");
        for leaked in ["secret-model-name", "ghost", "no-slash"] {
            assert!(!text.contains(leaked), "{leaked} is a label:\n{text}");
        }
        // Refusals are not upstream failures.
        assert!(!text.contains(UPSTREAM_ERRORS), "{text}");
    }

    #[test]
    fn upstream_failures_are_counted_per_configured_upstream() {
        let metrics = metrics();
        let d = Duration::from_millis(1);
        let timeout = Some(ErrorCode::UpstreamTimeout);
        metrics.record_chat(
            "local/llama3.2",
            false,
            "upstream_timeout",
            d,
            None,
            timeout,
        );
        metrics.record_tool_call(
            "demo",
            true,
            "upstream_error",
            d,
            Some(ErrorCode::UpstreamError),
        );
        metrics.record_mcp_error("demo", ErrorCode::UpstreamError);
        metrics.record_mcp_error("demo", ErrorCode::NotFound);
        let text = metrics.render([("demo", 1)], [("demo", true)]).unwrap();
        assert!(text.contains(
            r#"switchyard_upstream_errors_total{upstream_kind="llm",upstream="local",code="upstream_timeout"} 1"#
        ), "{text}");
        assert!(text.contains(
            r#"switchyard_upstream_errors_total{upstream_kind="mcp",upstream="demo",code="upstream_error"} 2"#
        ), "{text}");
        assert!(
            text.contains(r#"switchyard_mcp_pool_sessions{server="demo"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"switchyard_mcp_breaker_open{server="demo"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("# TYPE switchyard_mcp_tool_call_duration_seconds histogram"),
            "{text}"
        );
    }

    #[test]
    fn active_streams_go_down_when_a_stream_ends() {
        let metrics = metrics();
        let first = metrics.stream_started(StreamKind::Chat);
        let second = metrics.stream_started(StreamKind::Chat);
        drop(first);
        let text = metrics.render([], []).unwrap();
        assert!(
            text.contains(r#"switchyard_active_streams{kind="chat"} 1"#),
            "{text}"
        );
        drop(second);
        let text = metrics.render([], []).unwrap();
        assert!(
            text.contains(r#"switchyard_active_streams{kind="chat"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn two_registries_do_not_share_series() {
        let (a, b) = (metrics(), metrics());
        a.record_request(
            Some("/healthz"),
            &Method::GET,
            200,
            Duration::from_millis(1),
        );
        assert!(a.render([], []).unwrap().contains("/healthz"));
        assert!(!b.render([], []).unwrap().contains("/healthz"));
        assert!(Metrics::disabled().render([], []).is_none());
    }

    #[test]
    fn only_standard_methods_are_labels() {
        assert_eq!(method_label(&Method::POST), "POST");
        let odd = Method::from_bytes(b"FROBNICATE").unwrap();
        assert_eq!(method_label(&odd), "other");
    }
}
