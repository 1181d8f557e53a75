//! MCP in Rust terms: list and call tools, read resources, get prompts, the same in both modes.
//! Direct mode drives `shared`'s sans-IO Streamable HTTP client (one session per server) over
//! `fetch`; proxy mode calls the proxy's `/api/mcp/*` routes, described in `shared` too.

use std::collections::BTreeMap;
use std::rc::Rc;

use rmcp::model::{
    CallToolResult, GetPromptResult, JsonObject, ListPromptsResult, ListResourcesResult,
    ListToolsResult, Prompt, ReadResourceResult, Resource, Tool,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use switchyard_shared::mcp::{
    McpGetPrompt, McpHttpClient, McpProxyOp, McpRawCall, McpRawResult, McpReadResource,
    McpServerInfo, McpServerList, McpToolCall, McpToolEvent, McpToolStreamDecoder, McpTransport,
    decode_proxy_error, decode_proxy_result, proxy_request,
};
use switchyard_shared::{ApiError, ErrorCode, HttpRequest};
use tsify::Tsify;
use web_sys::AbortSignal;

use crate::auto::{Route, RouteReason, is_mixed_content};
use crate::client::Fallback;
use crate::direct_mcp::DirectMcpServer;
use crate::fetch;
use crate::ws::{Answer, WsLink, WsRequest};
use switchyard_shared::mcp::McpListQuery;
use switchyard_shared::ws::{Operation, StreamItem};

/// An MCP server the browser reaches itself (Streamable HTTP).
#[derive(Debug, Clone, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct McpServerEndpoint {
    /// The name calls refer to.
    pub name: String,
    /// The Streamable HTTP endpoint, e.g. `https://example.com/mcp`.
    pub url: String,
    /// Extra headers sent with every request (e.g. `Authorization`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[tsify(optional, type = "Record<string, string>")]
    pub headers: BTreeMap<String, String>,
}

/// A progress report of a running tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Tsify)]
pub struct McpProgress {
    /// Progress so far; increases with every report.
    pub progress: f64,
    /// The total, when the server knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub total: Option<f64>,
    /// A human-readable note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub message: Option<String>,
}

/// Servers in one mode or the other.
#[derive(Clone)]
pub(crate) enum McpRoutes {
    /// The browser's own sessions, by server name.
    Direct(Rc<Vec<DirectMcpServer>>),
    /// Through the proxy.
    Proxy {
        base_url: String,
        api_key: Option<String>,
        /// With `transport: "websocket"`: the socket every call takes.
        ws: Option<Rc<WsLink>>,
    },
}

/// MCP operations of a client (`ClientCore::mcp`).
pub struct McpClient<'a> {
    pub(crate) routes: &'a McpRoutes,
    /// Auto mode only: the proxy, and which servers use it.
    pub(crate) fallback: Option<&'a Fallback>,
}

/// Runs `$call` with `$routes` bound to `$server`'s route; in auto mode, a direct call that
/// reached nothing is run once more through the proxy (`$call` is written out twice).
macro_rules! routed {
    ($self:ident, $server:expr, |$routes:ident| $call:expr) => {{
        let $routes = $self.pick($server);
        match $call.await {
            Err(e) => match $self.fall_back($server, $routes, &e) {
                Some($routes) => $call.await,
                None => Err(e),
            },
            done => done,
        }
    }};
}

impl<'a> McpClient<'a> {
    /// The route a call to `server` starts on; in auto mode a server the browser would block as
    /// mixed content moves to the proxy before anything is sent.
    fn pick(&self, server: &str) -> &'a McpRoutes {
        let Some(fallback) = self.fallback else {
            return self.routes;
        };
        if fallback.state.route_of(server) == Route::Proxy {
            return &fallback.mcp;
        }
        if self
            .routes
            .direct_url(server)
            .is_some_and(|url| is_mixed_content(&url))
        {
            fallback.state.switch(server, RouteReason::MixedContent);
            return &fallback.mcp;
        }
        self.routes
    }

    /// After a call on `used` failed with `e`: the proxy, when this was a direct call in auto
    /// mode that reached nothing (`server` then stays on the proxy); otherwise `None`, and `e`
    /// is the answer.
    fn fall_back(&self, server: &str, used: &McpRoutes, e: &ApiError) -> Option<&'a McpRoutes> {
        let fallback = self.fallback?;
        if std::ptr::eq(used, &fallback.mcp) {
            return None;
        }
        fallback.state.switch(server, RouteReason::of(e)?);
        Some(&fallback.mcp)
    }

    /// The servers this client can use.
    pub async fn list_servers(&self) -> Result<Vec<McpServerInfo>, ApiError> {
        self.routes.list_servers().await
    }

    /// Every tool of `server` (all pages).
    pub async fn list_tools(&self, server: &str) -> Result<Vec<Tool>, ApiError> {
        routed!(self, server, |routes| routes.list_tools(server))
    }

    /// Calls a tool; `on_progress` receives progress reports as they arrive.
    pub async fn call_tool(
        &self,
        call: McpToolCall,
        signal: Option<&AbortSignal>,
        on_progress: Option<&dyn Fn(McpProgress)>,
    ) -> Result<CallToolResult, ApiError> {
        let server = call.server.clone();
        routed!(self, &server, |routes| routes.call_tool(
            call.clone(),
            signal,
            on_progress
        ))
    }

    /// Every resource of `server` (all pages).
    pub async fn list_resources(&self, server: &str) -> Result<Vec<Resource>, ApiError> {
        routed!(self, server, |routes| routes.list_resources(server))
    }

    /// Reads one resource.
    pub async fn read_resource(
        &self,
        server: &str,
        uri: &str,
    ) -> Result<ReadResourceResult, ApiError> {
        routed!(self, server, |routes| routes.read_resource(server, uri))
    }

    /// Every prompt of `server` (all pages).
    pub async fn list_prompts(&self, server: &str) -> Result<Vec<Prompt>, ApiError> {
        routed!(self, server, |routes| routes.list_prompts(server))
    }

    /// Gets a prompt with its arguments filled in.
    pub async fn get_prompt(
        &self,
        server: &str,
        name: &str,
        arguments: Option<JsonObject>,
    ) -> Result<GetPromptResult, ApiError> {
        routed!(self, server, |routes| routes.get_prompt(
            server,
            name,
            arguments.clone()
        ))
    }
}

/// A lister that never ends (a server repeating a cursor) must not hang the page.
const MAX_PAGES: usize = 1000;

/// One page of a paginated MCP list.
trait Page: DeserializeOwned {
    type Item;
    fn into_parts(self) -> (Vec<Self::Item>, Option<String>);
}

macro_rules! page {
    ($result:ty, $field:ident, $item:ty) => {
        impl Page for $result {
            type Item = $item;
            fn into_parts(self) -> (Vec<$item>, Option<String>) {
                (self.$field, self.next_cursor)
            }
        }
    };
}
page!(ListToolsResult, tools, Tool);
page!(ListResourcesResult, resources, Resource);
page!(ListPromptsResult, prompts, Prompt);

/// Which list a paginated call reads.
#[derive(Clone, Copy)]
enum ListKind {
    Tools,
    Resources,
    Prompts,
}

impl ListKind {
    /// The direct-mode request for one page.
    fn request(self, client: &McpHttpClient, cursor: Option<String>) -> McpRawCall {
        match self {
            ListKind::Tools => client.list_tools(cursor).into_raw(),
            ListKind::Resources => client.list_resources(cursor).into_raw(),
            ListKind::Prompts => client.list_prompts(cursor).into_raw(),
        }
    }

    /// The request for one page on the proxy's WebSocket.
    fn ws_op(self, server: &str, cursor: Option<String>) -> Operation {
        let query = McpListQuery {
            server: server.to_owned(),
            cursor,
        };
        match self {
            ListKind::Tools => Operation::McpListTools(query),
            ListKind::Resources => Operation::McpListResources(query),
            ListKind::Prompts => Operation::McpListPrompts(query),
        }
    }

    /// The proxy-mode request for one page.
    fn proxy_op<'a>(self, server: &'a str, cursor: Option<&'a str>) -> McpProxyOp<'a> {
        match self {
            ListKind::Tools => McpProxyOp::ListTools { server, cursor },
            ListKind::Resources => McpProxyOp::ListResources { server, cursor },
            ListKind::Prompts => McpProxyOp::ListPrompts { server, cursor },
        }
    }
}

/// A result as it arrived, in either mode; the operation that asked for it reads it as its type.
/// Everything up to here is the same code for every result type.
enum RawAnswer {
    /// A JSON-RPC response from the server itself.
    Direct(McpRawResult),
    /// The body of the proxy's 2xx answer.
    Proxy(Vec<u8>),
}

impl RawAnswer {
    fn decode<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        match self {
            RawAnswer::Direct(result) => result.decode(),
            RawAnswer::Proxy(body) => decode_proxy_result(body),
        }
    }
}

impl McpRoutes {
    /// Checks the direct-mode servers.
    pub(crate) fn direct(servers: Vec<McpServerEndpoint>) -> Result<Self, ApiError> {
        let mut out: Vec<DirectMcpServer> = Vec::with_capacity(servers.len());
        for s in servers {
            if s.name.is_empty() || out.iter().any(|o| o.name() == s.name) {
                return Err(ApiError::bad_request(format!(
                    "MCP server names must be unique and non-empty, got {:?}",
                    s.name
                )));
            }
            out.push(DirectMcpServer::new(s)?);
        }
        Ok(McpRoutes::Direct(Rc::new(out)))
    }

    fn direct_server(servers: &[DirectMcpServer], name: &str) -> Result<DirectMcpServer, ApiError> {
        servers
            .iter()
            .find(|s| s.name() == name)
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!("no MCP server named {name:?} is configured"),
                )
            })
    }

    /// The endpoint of direct server `name`, if this is the direct route and knows it.
    fn direct_url(&self, name: &str) -> Option<String> {
        match self {
            McpRoutes::Direct(servers) => servers
                .iter()
                .find(|s| s.name() == name)
                .map(|s| s.url().to_owned()),
            McpRoutes::Proxy { .. } => None,
        }
    }

    fn proxy(&self) -> Option<(&str, Option<&str>)> {
        match self {
            McpRoutes::Proxy {
                base_url, api_key, ..
            } => Some((base_url, api_key.as_deref())),
            McpRoutes::Direct(_) => None,
        }
    }

    /// The servers this client can use.
    pub(crate) async fn list_servers(&self) -> Result<Vec<McpServerInfo>, ApiError> {
        match self {
            McpRoutes::Direct(servers) => Ok(servers
                .iter()
                .map(|s| McpServerInfo {
                    name: s.name().to_owned(),
                    transport: McpTransport::StreamableHttp,
                })
                .collect()),
            McpRoutes::Proxy { ws: Some(ws), .. } => {
                let list: McpServerList = ws.call(&Operation::McpServers, None).await?;
                Ok(list.servers)
            }
            McpRoutes::Proxy {
                base_url, api_key, ..
            } => {
                let req = proxy_request(base_url, api_key.as_deref(), &McpProxyOp::ListServers);
                let list: McpServerList = decode_proxy_result(&proxy_body(&req, None).await?)?;
                Ok(list.servers)
            }
        }
    }

    /// Every item of a list, all pages.
    async fn list_all<P: Page>(
        &self,
        server: &str,
        kind: ListKind,
    ) -> Result<Vec<P::Item>, ApiError> {
        let mut items = Vec::new();
        let mut take = |answer: RawAnswer| {
            let (mut page_items, next) = answer.decode::<P>()?.into_parts();
            items.append(&mut page_items);
            Ok(next)
        };
        self.read_pages(server, kind, &mut take).await?;
        Ok(items)
    }

    /// Fetches the pages of a list, handing each to `take`, which returns the next cursor.
    async fn read_pages(
        &self,
        server: &str,
        kind: ListKind,
        take: &mut dyn FnMut(RawAnswer) -> Result<Option<String>, ApiError>,
    ) -> Result<(), ApiError> {
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let answer = match self {
                McpRoutes::Direct(servers) => {
                    let s = Self::direct_server(servers, server)?;
                    let call = kind.request(&s.client(), cursor.take());
                    RawAnswer::Direct(s.run_raw(call, None, None).await?)
                }
                McpRoutes::Proxy { ws: Some(ws), .. } => {
                    let op = kind.ws_op(server, cursor.clone());
                    RawAnswer::Proxy(ws.call_raw(&op, None).await?)
                }
                McpRoutes::Proxy {
                    base_url, api_key, ..
                } => {
                    let op = kind.proxy_op(server, cursor.as_deref());
                    let req = proxy_request(base_url, api_key.as_deref(), &op);
                    RawAnswer::Proxy(proxy_body(&req, None).await?)
                }
            };
            match take(answer)?.filter(|c| !c.is_empty()) {
                Some(c) => cursor = Some(c),
                None => return Ok(()),
            }
        }
        Err(ApiError::new(
            ErrorCode::UpstreamError,
            format!("the MCP server {server:?} returned more than {MAX_PAGES} pages"),
        ))
    }

    /// Every tool of `server` (all pages).
    pub(crate) async fn list_tools(&self, server: &str) -> Result<Vec<Tool>, ApiError> {
        self.list_all::<ListToolsResult>(server, ListKind::Tools)
            .await
    }

    /// Every resource of `server` (all pages).
    pub(crate) async fn list_resources(&self, server: &str) -> Result<Vec<Resource>, ApiError> {
        self.list_all::<ListResourcesResult>(server, ListKind::Resources)
            .await
    }

    /// Every prompt of `server` (all pages).
    pub(crate) async fn list_prompts(&self, server: &str) -> Result<Vec<Prompt>, ApiError> {
        self.list_all::<ListPromptsResult>(server, ListKind::Prompts)
            .await
    }

    /// Calls a tool; `on_progress` receives progress reports as they arrive.
    pub(crate) async fn call_tool(
        &self,
        call: McpToolCall,
        signal: Option<&AbortSignal>,
        on_progress: Option<&dyn Fn(McpProgress)>,
    ) -> Result<CallToolResult, ApiError> {
        match self {
            McpRoutes::Direct(servers) => {
                let s = Self::direct_server(servers, &call.server)?;
                s.call_tool(&call.name, call.arguments, signal, on_progress)
                    .await
            }
            McpRoutes::Proxy { ws: Some(ws), .. } => match on_progress {
                None => ws.call(&Operation::McpCall(call), signal).await,
                Some(report) => {
                    let request = ws.start(&Operation::McpCallStream(call), signal)?;
                    ws_tool_stream(request, report).await
                }
            },
            McpRoutes::Proxy {
                base_url, api_key, ..
            } => {
                let stream = on_progress.is_some();
                let op = McpProxyOp::CallTool {
                    call: &call,
                    stream,
                };
                let req = proxy_request(base_url, api_key.as_deref(), &op);
                match on_progress {
                    None => decode_proxy_result(&proxy_body(&req, signal).await?),
                    Some(report) => proxy_tool_stream(&req, signal, report).await,
                }
            }
        }
    }

    /// Reads one resource.
    pub(crate) async fn read_resource(
        &self,
        server: &str,
        uri: &str,
    ) -> Result<ReadResourceResult, ApiError> {
        match self {
            McpRoutes::Direct(servers) => {
                Self::direct_server(servers, server)?
                    .read_resource(uri)
                    .await
            }
            McpRoutes::Proxy { .. } => {
                let body = McpReadResource {
                    server: server.to_owned(),
                    uri: uri.to_owned(),
                };
                let op = Operation::McpReadResource(body.clone());
                self.proxy_call(&McpProxyOp::ReadResource(&body), op).await
            }
        }
    }

    /// Gets a prompt with its arguments filled in.
    pub(crate) async fn get_prompt(
        &self,
        server: &str,
        name: &str,
        arguments: Option<JsonObject>,
    ) -> Result<GetPromptResult, ApiError> {
        match self {
            McpRoutes::Direct(servers) => {
                Self::direct_server(servers, server)?
                    .get_prompt(name, arguments)
                    .await
            }
            McpRoutes::Proxy { .. } => {
                let body = McpGetPrompt {
                    server: server.to_owned(),
                    name: name.to_owned(),
                    arguments,
                };
                let op = Operation::McpGetPrompt(body.clone());
                self.proxy_call(&McpProxyOp::GetPrompt(&body), op).await
            }
        }
    }

    /// A single call to the proxy: `op` over HTTP, or `ws_op` on the socket.
    async fn proxy_call<T: DeserializeOwned>(
        &self,
        op: &McpProxyOp<'_>,
        ws_op: Operation,
    ) -> Result<T, ApiError> {
        if let McpRoutes::Proxy { ws: Some(ws), .. } = self {
            return ws.call(&ws_op, None).await;
        }
        let (base_url, api_key) = self
            .proxy()
            .ok_or_else(|| ApiError::internal("proxy route used in direct mode"))?;
        decode_proxy_result(&proxy_body(&proxy_request(base_url, api_key, op), None).await?)
    }
}

/// Sends a request to the proxy: the body of its 2xx answer, or the error it reports.
async fn proxy_body(req: &HttpRequest, signal: Option<&AbortSignal>) -> Result<Vec<u8>, ApiError> {
    let resp = fetch::send(req, signal).await?;
    let (status, retry_after) = (resp.status, resp.retry_after.clone());
    let body = resp.bytes().await?;
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(decode_proxy_error(status, retry_after.as_deref(), &body))
    }
}

/// A tool call's progress events on the proxy's WebSocket, up to its result.
async fn ws_tool_stream(
    mut request: WsRequest,
    report: &dyn Fn(McpProgress),
) -> Result<CallToolResult, ApiError> {
    loop {
        match request.next().await? {
            Some(Answer::Event(StreamItem::Tool(event))) => match event {
                McpToolEvent::Progress {
                    progress,
                    total,
                    message,
                } => report(McpProgress {
                    progress,
                    total,
                    message,
                }),
                McpToolEvent::Result { result } => return Ok(result),
                McpToolEvent::Error { error } => return Err(error),
            },
            Some(_) | None => {
                return Err(ApiError::new(
                    ErrorCode::StreamInterrupted,
                    "the tool call's stream ended before its result",
                ));
            }
        }
    }
}

async fn proxy_tool_stream(
    req: &HttpRequest,
    signal: Option<&AbortSignal>,
    report: &dyn Fn(McpProgress),
) -> Result<CallToolResult, ApiError> {
    let resp = fetch::send(req, signal).await?;
    if !(200..300).contains(&resp.status) {
        let (status, retry_after) = (resp.status, resp.retry_after.clone());
        let body = resp.bytes().await?;
        return Err(decode_proxy_error(status, retry_after.as_deref(), &body));
    }
    let mut reader = resp.into_reader()?;
    let mut decoder = McpToolStreamDecoder::new();
    loop {
        let chunk = reader.next_chunk().await?;
        let ended = chunk.is_none();
        let events = match chunk {
            Some(chunk) => decoder.push(&chunk),
            None => decoder.finish().into_iter().collect(),
        };
        for event in events {
            match event {
                McpToolEvent::Progress {
                    progress,
                    total,
                    message,
                } => report(McpProgress {
                    progress,
                    total,
                    message,
                }),
                McpToolEvent::Result { result } => return Ok(result),
                McpToolEvent::Error { error } => return Err(error),
            }
        }
        if ended {
            // `finish` reports a missing result once; never read past the end again.
            return Err(ApiError::new(
                ErrorCode::StreamInterrupted,
                "the tool call's stream ended before its result",
            ));
        }
    }
}
