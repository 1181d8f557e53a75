//! The client in Rust terms: options, chat and chat streams, the same in both modes. The wasm
//! boundary (`lib.rs`) only converts values; the browser tests drive this layer directly.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use switchyard_shared::{
    ApiError, ChatAccumulator, ChatRequest, ChatResponse, ChatStreamDecoder, ProviderEndpoint,
    RouteTable, StreamEvent,
};

use crate::mcp::{McpRoutes, McpServerEndpoint};
use tsify::Tsify;
use web_sys::AbortSignal;

use crate::fetch::{self, BodyReader};

/// How the client reaches LLMs: `"direct"` to the providers, or `"proxy"` through Switchyard.
#[derive(Debug, Clone, Serialize, Deserialize, Tsify)]
#[serde(tag = "mode", rename_all = "camelCase")]
pub enum ClientOptions {
    /// The browser calls the providers itself.
    Direct(DirectOptions),
    /// The browser calls a Switchyard proxy, which holds the upstream keys.
    Proxy(ProxyOptions),
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
}

/// A configured client.
#[derive(Clone)]
pub struct ClientCore {
    routes: RouteTable,
    mcp: McpRoutes,
}

impl ClientCore {
    /// Checks the options and builds the routing tables for their mode.
    pub fn new(options: ClientOptions) -> Result<Self, ApiError> {
        let (routes, mcp) = match options {
            ClientOptions::Direct(d) => (
                RouteTable::direct(d.providers)?,
                McpRoutes::direct(d.mcp_servers)?,
            ),
            ClientOptions::Proxy(p) => {
                let routes = RouteTable::proxy(&p.base_url, p.api_key.clone())?;
                let base_url = match &routes {
                    RouteTable::Proxy { base_url, .. } => base_url.clone(),
                    RouteTable::Direct { .. } => p.base_url,
                };
                let mcp = McpRoutes::Proxy {
                    base_url,
                    api_key: p.api_key,
                };
                (routes, mcp)
            }
        };
        Ok(ClientCore { routes, mcp })
    }

    /// The MCP side of the client.
    pub fn mcp(&self) -> crate::mcp::McpClient<'_> {
        crate::mcp::McpClient { routes: &self.mcp }
    }

    /// A complete chat answer.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        signal: Option<&AbortSignal>,
    ) -> Result<ChatResponse, ApiError> {
        let prepared = self.routes.chat(req, false)?;
        let resp = fetch::send(&prepared.http, signal).await?;
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
        let prepared = self.routes.chat(req, true)?;
        let resp = fetch::send(&prepared.http, signal).await?;
        if !(200..300).contains(&resp.status) {
            let (status, retry_after) = (resp.status, resp.retry_after.clone());
            let body = resp.bytes().await?;
            return Err(prepared.decode_error(status, retry_after.as_deref(), &body));
        }
        Ok(ChatStreamCore {
            reader: resp.into_reader()?,
            decoder: prepared.stream_decoder(),
            pending: VecDeque::new(),
            acc: ChatAccumulator::new(),
            finished: false,
        })
    }
}

/// A streamed answer being read.
pub struct ChatStreamCore {
    reader: BodyReader,
    decoder: ChatStreamDecoder,
    pending: VecDeque<StreamEvent>,
    acc: ChatAccumulator,
    finished: bool,
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
            match self.reader.next_chunk().await {
                Ok(Some(chunk)) => self.pending.extend(self.decoder.push(&chunk)),
                Ok(None) => {
                    self.pending.extend(self.decoder.finish());
                    self.finished = true;
                }
                Err(e) => {
                    // An abort stays an abort; any other read failure cut the stream short.
                    self.pending.push_back(StreamEvent::Error { error: e });
                    self.finished = true;
                }
            }
        }
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
        self.reader.cancel();
    }
}
