//! The client in Rust terms: options, chat and chat streams, the same in both modes. The wasm
//! boundary (`lib.rs`) only converts values; the browser tests drive this layer directly.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_shared::{
    ApiError, ChatAccumulator, ChatRequest, ChatResponse, ChatStreamDecoder, Decision, ErrorCode,
    Failure, ModelId, PreparedRequest, ProviderEndpoint, RetryPolicy, RouteTable, StreamEvent,
    WireFormat,
};

use crate::auto::{Route, RouteListener, RouteReason, RouteState, is_mixed_content};

use crate::mcp::{McpRoutes, McpServerEndpoint};
use tsify::Tsify;
use web_sys::AbortSignal;

use crate::fetch::{self, BodyReader};
use crate::ws::{Answer, WsLink, WsRequest};
use switchyard_shared::ws::{Operation, StreamItem};

/// How the client reaches LLMs: `"direct"` to the providers, `"proxy"` through Switchyard, or
/// `"auto"`: directly, and through Switchyard for each upstream the page turns out not to reach.
#[derive(Debug, Clone, Serialize, Deserialize, Tsify)]
#[serde(tag = "mode", rename_all = "camelCase")]
pub enum ClientOptions {
    /// The browser calls the providers itself.
    Direct(DirectOptions),
    /// The browser calls a Switchyard proxy, which holds the upstream keys.
    Proxy(ProxyOptions),
    /// Direct first; an upstream the page cannot reach goes through the proxy from then on.
    Auto(AutoOptions),
}

/// Options of auto mode: direct mode's, and the proxy to fall back on. The proxy must know each
/// provider and MCP server by the same name as the client does.
#[derive(Debug, Clone, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoOptions {
    /// The providers, referred to in model ids as `"<name>/<model>"`.
    #[serde(default)]
    #[tsify(optional)]
    pub providers: Vec<ProviderEndpoint>,
    /// MCP servers speaking Streamable HTTP, referred to by name.
    #[serde(default)]
    #[tsify(optional)]
    pub mcp_servers: Vec<McpServerEndpoint>,
    /// The proxy an upstream is switched to.
    pub proxy: FallbackProxy,
    /// How chat requests are retried, on either route; the proxy's defaults when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub retry: Option<RetryOptions>,
    /// As in direct mode: accept a provider `apiKey` in the page. The proxy leg uses the proxy's
    /// own key for the provider, never this one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[tsify(optional)]
    pub allow_browser_secrets: bool,
}

/// The proxy of auto mode, as proxy mode names it.
#[derive(Debug, Clone, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FallbackProxy {
    /// The proxy's origin, e.g. `https://switchyard.example.com`.
    pub base_url: String,
    /// The key the proxy expects, if it requires one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub api_key: Option<String>,
}

/// Options of direct mode.
#[derive(Debug, Clone, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectOptions {
    /// The providers, referred to in model ids as `"<name>/<model>"`.
    #[serde(default)]
    #[tsify(optional)]
    pub providers: Vec<ProviderEndpoint>,
    /// MCP servers speaking Streamable HTTP, referred to by name.
    #[serde(default)]
    #[tsify(optional)]
    pub mcp_servers: Vec<McpServerEndpoint>,
    /// How chat requests are retried; the proxy's defaults when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub retry: Option<RetryOptions>,
    /// Accept a provider `apiKey` in the page, where anyone using it can read the key; without
    /// it such a client is refused, since proxy mode (or a short-lived proxy token) keeps the key
    /// off the page.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[tsify(optional)]
    pub allow_browser_secrets: bool,
}

impl DirectOptions {
    /// `400 bad_request` when a provider has an API key and `allowBrowserSecrets` is not set: a
    /// key in a page is readable by everyone who loads the page.
    fn check_secrets(&self) -> Result<(), ApiError> {
        if self.allow_browser_secrets {
            return Ok(());
        }
        let Some(provider) = self
            .providers
            .iter()
            .find(|p| p.api_key.as_deref().is_some_and(|k| !k.is_empty()))
        else {
            return Ok(());
        };
        Err(ApiError::bad_request(format!(
            "provider \"{}\" has an apiKey in direct mode, where anyone using this page can read \
             it; use mode \"proxy\" so the key stays on the server (or give the page a \
             short-lived token from the proxy's POST /api/tokens), or set \
             allowBrowserSecrets: true to accept the risk",
            switchyard_shared::error::truncate(&provider.name, 100)
        )))
    }
}

/// Options of proxy mode.
#[derive(Debug, Clone, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyOptions {
    /// The proxy's origin, e.g. `http://127.0.0.1:3001`.
    pub base_url: String,
    /// The key the proxy expects, if it requires one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub api_key: Option<String>,
    /// How chat requests are retried; the proxy's defaults when absent. The proxy retries its
    /// upstreams itself, so here only a proxy that cannot be reached, or a 503 from in front of
    /// it, is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub retry: Option<RetryOptions>,
    /// How requests travel: `"sse"` (default), one HTTP request each, streams as server-sent
    /// events; or `"websocket"`, every request on one socket to the proxy's `/api/ws`.
    #[serde(default)]
    #[tsify(optional)]
    pub transport: Transport,
}

/// How proxy mode reaches the proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One HTTP request per call; streams as server-sent events.
    #[default]
    Sse,
    /// Every call on one WebSocket, opened on first use (`/api/ws`).
    Websocket,
}

/// Retries of chat requests that failed before their answer began: the server could not be
/// reached, or answered 502, 503, or 429 with `Retry-After`. Never once a stream has passed an
/// event on. `{ maxAttempts: 1 }` turns them off.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryOptions {
    /// Attempts in all, the first included (default 3; 1 turns retries off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub max_attempts: Option<u32>,
    /// The pause before the first retry, before jitter, in ms (default 100); it doubles each time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub base_delay_ms: Option<u32>,
    /// The longest backoff pause, in ms (default 1000); a `Retry-After` is honoured as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub max_delay_ms: Option<u32>,
    /// Time from the first attempt within which every retry must start, in ms (default 2000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub budget_ms: Option<u32>,
}

impl RetryOptions {
    /// The policy these options give: `shared`'s defaults where they say nothing.
    pub fn policy(&self) -> Result<RetryPolicy, ApiError> {
        let d = RetryPolicy::DEFAULT;
        let ms = |v: Option<u32>, default: Duration| {
            v.map_or(default, |v| Duration::from_millis(v.into()))
        };
        let policy = RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(d.max_attempts),
            base_delay: ms(self.base_delay_ms, d.base_delay),
            max_delay: ms(self.max_delay_ms, d.max_delay),
            budget: ms(self.budget_ms, d.budget),
        };
        if policy.max_attempts == 0 {
            return Err(ApiError::bad_request(
                "retry.maxAttempts must be at least 1 (1 turns retries off)",
            ));
        }
        Ok(policy)
    }
}

/// Auto mode's second route: the proxy's tables, and which upstreams use them.
pub(crate) struct Fallback {
    routes: RouteTable,
    pub(crate) mcp: McpRoutes,
    pub(crate) state: RouteState,
}

/// A configured client.
#[derive(Clone)]
pub struct ClientCore {
    /// In auto mode, the direct route.
    routes: RouteTable,
    /// In auto mode, the direct route.
    mcp: McpRoutes,
    retry: RetryPolicy,
    /// Auto mode only.
    fallback: Option<Rc<Fallback>>,
    /// Proxy mode over a WebSocket only.
    ws: Option<Rc<WsLink>>,
}

/// The proxy's tables for `base_url`.
fn proxy_tables(
    base_url: &str,
    api_key: Option<String>,
    ws: Option<Rc<WsLink>>,
) -> Result<(RouteTable, McpRoutes), ApiError> {
    let routes = RouteTable::proxy(base_url, api_key.clone())?;
    let base_url = match &routes {
        RouteTable::Proxy { base_url, .. } => base_url.clone(),
        RouteTable::Direct { .. } => base_url.to_owned(),
    };
    Ok((
        routes,
        McpRoutes::Proxy {
            base_url,
            api_key,
            ws,
        },
    ))
}

impl ClientCore {
    /// Checks the options and builds the routing tables for their mode.
    pub fn new(options: ClientOptions) -> Result<Self, ApiError> {
        let mut fallback = None;
        let mut ws = None;
        let (routes, mcp, retry) = match options {
            ClientOptions::Direct(d) => {
                d.check_secrets()?;
                (
                    RouteTable::direct(d.providers)?,
                    McpRoutes::direct(d.mcp_servers)?,
                    d.retry,
                )
            }
            ClientOptions::Proxy(p) => {
                if p.transport == Transport::Websocket {
                    // The URL is checked as the HTTP routes' before the link is built from it.
                    RouteTable::proxy(&p.base_url, None)?;
                    ws = Some(Rc::new(WsLink::new(&p.base_url, p.api_key.clone())?));
                }
                let (routes, mcp) = proxy_tables(&p.base_url, p.api_key, ws.clone())?;
                (routes, mcp, p.retry)
            }
            ClientOptions::Auto(a) => {
                let direct = DirectOptions {
                    providers: a.providers,
                    mcp_servers: a.mcp_servers,
                    retry: a.retry,
                    allow_browser_secrets: a.allow_browser_secrets,
                };
                direct.check_secrets()?;
                let (proxy_routes, proxy_mcp) =
                    proxy_tables(&a.proxy.base_url, a.proxy.api_key, None)?;
                fallback = Some(Rc::new(Fallback {
                    routes: proxy_routes,
                    mcp: proxy_mcp,
                    state: RouteState::default(),
                }));
                (
                    RouteTable::direct(direct.providers)?,
                    McpRoutes::direct(direct.mcp_servers)?,
                    direct.retry,
                )
            }
        };
        let retry = retry.unwrap_or_default().policy()?;
        Ok(ClientCore {
            routes,
            mcp,
            retry,
            fallback,
            ws,
        })
    }

    /// How `upstream` (a provider or MCP server name) is reached now: always the mode's route in
    /// direct and proxy mode; in auto mode, direct until a direct call failed for a reason the
    /// proxy fixes.
    pub fn route_of(&self, upstream: &str) -> Route {
        match (&self.fallback, &self.routes) {
            (Some(fallback), _) => fallback.state.route_of(upstream),
            (None, RouteTable::Direct { .. }) => Route::Direct,
            (None, RouteTable::Proxy { .. }) => Route::Proxy,
        }
    }

    /// Calls `listener` whenever an upstream changes route (auto mode only; otherwise never).
    pub fn on_route_change(&self, listener: RouteListener) {
        if let Some(fallback) = &self.fallback {
            fallback.state.set_listener(listener);
        }
    }

    /// Sends a chat request by the route of its provider: in auto mode, a direct attempt that
    /// reached nothing (or would be blocked as mixed content) moves the provider to the proxy
    /// and is sent there once; any other outcome is the answer.
    async fn open(
        &self,
        req: &ChatRequest,
        stream: bool,
        signal: Option<&AbortSignal>,
    ) -> Result<(PreparedRequest, fetch::Response), ApiError> {
        let Some(fallback) = &self.fallback else {
            let prepared = self.routes.chat(req, stream)?;
            let resp = self.send(&prepared, signal, false).await?;
            return Ok((prepared, resp));
        };
        let provider = ModelId::parse(&req.model)?.provider.to_owned();
        if fallback.state.route_of(&provider) == Route::Direct {
            let direct = self.routes.chat(req, stream)?;
            let reason = if is_mixed_content(&direct.http.url) {
                RouteReason::MixedContent
            } else {
                match self.send(&direct, signal, true).await {
                    Err(e) => RouteReason::of(&e).ok_or(e)?,
                    Ok(resp) => return Ok((direct, resp)),
                }
            };
            fallback.state.switch(&provider, reason);
        }
        let prepared = fallback.routes.chat(req, stream)?;
        let resp = self.send(&prepared, signal, false).await?;
        Ok((prepared, resp))
    }

    /// Sends `prepared` until it gets an answer the retry policy accepts or gives up on; the
    /// answer is returned before any of its body is read, so a stream is never retried once
    /// it has begun. With `fall_back`, an unreachable server is not retried: the caller sends
    /// the request by another route instead.
    async fn send(
        &self,
        prepared: &PreparedRequest,
        signal: Option<&AbortSignal>,
        fall_back: bool,
    ) -> Result<fetch::Response, ApiError> {
        let started = js_sys::Date::now();
        let mut attempts = 1;
        loop {
            let (result, failure) = match fetch::send(&prepared.http, signal).await {
                Ok(resp) if (200..300).contains(&resp.status) => return Ok(resp),
                Ok(resp) => {
                    let failure = if prepared.format == WireFormat::Switchyard && !resp.json {
                        // Not the proxy's own answer: a load balancer in front of it.
                        Failure::from_gateway(resp.status)
                    } else {
                        Failure::from_status(
                            prepared.format,
                            resp.status,
                            resp.retry_after.as_deref(),
                        )
                    };
                    (Ok(resp), failure)
                }
                // `fetch`'s bare TypeError, with the server found unreachable: nothing was sent.
                Err(e) if e.code == ErrorCode::NetworkError && !fall_back => {
                    (Err(e), Failure::NotSent)
                }
                Err(e) => return Err(e),
            };
            if failure == Failure::Final {
                return result;
            }
            // Date.now() is in ms; a clock set back counts as no time spent.
            let elapsed = Duration::from_millis((js_sys::Date::now() - started).max(0.0) as u64);
            let delay = match self
                .retry
                .decide(attempts, elapsed, failure, js_sys::Math::random())
            {
                Decision::RetryAfter(delay) => delay,
                Decision::GiveUp => return result,
            };
            if let Ok(resp) = result {
                resp.discard();
            }
            fetch::sleep(delay, signal).await?;
            attempts += 1;
        }
    }

    /// The MCP side of the client.
    pub fn mcp(&self) -> crate::mcp::McpClient<'_> {
        crate::mcp::McpClient {
            routes: &self.mcp,
            fallback: self.fallback.as_deref(),
        }
    }

    /// A complete chat answer.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        signal: Option<&AbortSignal>,
    ) -> Result<ChatResponse, ApiError> {
        if let Some(ws) = &self.ws {
            req.validate()?;
            return ws.call(&Operation::Chat(req.clone()), signal).await;
        }
        let (prepared, resp) = self.open(req, false, signal).await?;
        let (status, retry_after) = (resp.status, resp.retry_after.clone());
        let body = resp.bytes().await?;
        prepared.decode_response(status, retry_after.as_deref(), &body)
    }

    /// Starts a streamed chat answer; resolves once the response headers arrive, so errors the
    /// server reports up front (bad request, rate limits) reject here.
    pub async fn chat_stream(
        &self,
        req: &ChatRequest,
        signal: Option<&AbortSignal>,
    ) -> Result<ChatStreamCore, ApiError> {
        if let Some(ws) = &self.ws {
            req.validate()?;
            let request = ws.start(&Operation::ChatStream(req.clone()), signal)?;
            let mut stream = ChatStreamCore {
                source: Source::Ws(request),
                pending: VecDeque::new(),
                acc: ChatAccumulator::new(),
                finished: false,
            };
            // As over HTTP, an error the proxy reports before the first event rejects here.
            if let Err(error) = stream.pull().await {
                stream.finished = true;
                return Err(error);
            }
            return Ok(stream);
        }
        let (prepared, resp) = self.open(req, true, signal).await?;
        if !(200..300).contains(&resp.status) {
            let (status, retry_after) = (resp.status, resp.retry_after.clone());
            let body = resp.bytes().await?;
            return Err(prepared.decode_error(status, retry_after.as_deref(), &body));
        }
        Ok(ChatStreamCore {
            source: Source::Http {
                reader: resp.into_reader()?,
                decoder: prepared.stream_decoder(),
            },
            pending: VecDeque::new(),
            acc: ChatAccumulator::new(),
            finished: false,
        })
    }
}

/// A streamed answer being read.
pub struct ChatStreamCore {
    source: Source,
    pending: VecDeque<StreamEvent>,
    acc: ChatAccumulator,
    finished: bool,
}

/// Where a stream's events come from.
enum Source {
    /// A server-sent event stream, or a provider's own stream format.
    Http {
        reader: BodyReader,
        decoder: ChatStreamDecoder,
    },
    /// A `chat_stream` on the proxy's WebSocket.
    Ws(WsRequest),
}

impl ChatStreamCore {
    /// The next event; `Ok(None)` after `finish`; `Err` if the stream failed (the `error` event
    /// becomes the error, so callers handle failures one way).
    pub async fn next(&mut self) -> Result<Option<StreamEvent>, ApiError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.acc.push(&event);
                if let StreamEvent::Error { error } = event {
                    self.stop();
                    return Err(error);
                }
                if event.is_terminal() {
                    self.stop();
                }
                return Ok(Some(event));
            }
            if self.finished {
                return match self.acc.result() {
                    Err(e) => Err(e),
                    Ok(_) => Ok(None),
                };
            }
            if let Err(error) = self.pull().await {
                self.pending.push_back(StreamEvent::Error { error });
                self.finished = true;
            }
        }
    }

    /// Reads what comes next into `pending`; `Err` if reading failed (an abort stays an abort;
    /// any other failure cut the stream short).
    async fn pull(&mut self) -> Result<(), ApiError> {
        match &mut self.source {
            Source::Http { reader, decoder } => match reader.next_chunk().await? {
                Some(chunk) => self.pending.extend(decoder.push(&chunk)),
                None => {
                    self.pending.extend(decoder.finish());
                    self.finished = true;
                }
            },
            Source::Ws(request) => match request.next().await? {
                Some(Answer::Event(StreamItem::Chat(event))) => self.pending.push_back(event),
                None => self.finished = true,
                Some(_) => {
                    return Err(ApiError::new(
                        ErrorCode::UpstreamError,
                        "the proxy sent a frame that is not a chat event",
                    ));
                }
            },
        }
        Ok(())
    }

    /// Reads the rest of the stream and returns the whole answer.
    pub async fn final_message(&mut self) -> Result<ChatResponse, ApiError> {
        while self.next().await?.is_some() {}
        self.acc.result()
    }

    /// Stops reading; the connection is closed so the server stops generating.
    pub fn cancel(&mut self) {
        if !self.finished {
            self.acc.push(&StreamEvent::Error {
                error: fetch::aborted(),
            });
        }
        self.stop();
    }

    fn stop(&mut self) {
        self.finished = true;
        match &mut self.source {
            Source::Http { reader, .. } => reader.cancel(),
            Source::Ws(request) => request.cancel(),
        }
    }
}
