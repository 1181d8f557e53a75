//! Direct-mode MCP: one Streamable HTTP session per server, driven by `shared`'s sans-IO client
//! over `fetch`. This module only moves bytes between the two.

use std::cell::RefCell;
use std::rc::Rc;

use rmcp::model::{CallToolResult, GetPromptResult, JsonObject, ReadResourceResult};
use serde::de::DeserializeOwned;
use switchyard_shared::mcp::{McpCall, McpHttpClient, McpRawCall, McpRawResult, Step};
use switchyard_shared::{ApiError, ErrorCode};
use web_sys::AbortSignal;

use crate::fetch::{self, BodyReader};
use crate::mcp::{McpProgress, McpServerEndpoint};

/// A server reached from the browser; clones share the session.
#[derive(Clone)]
pub(crate) struct DirectMcpServer {
    inner: Rc<Inner>,
}

struct Inner {
    name: String,
    url: String,
    client: RefCell<McpHttpClient>,
    /// Tool names as last listed: an unknown tool is refused with `not_found` as the proxy does,
    /// rather than reaching servers that answer it with an `isError` result.
    tools: RefCell<Option<Vec<String>>>,
}

impl DirectMcpServer {
    /// Checks the endpoint; nothing is sent until the first call.
    pub(crate) fn new(endpoint: McpServerEndpoint) -> Result<Self, ApiError> {
        let headers = endpoint
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let client = McpHttpClient::new(&endpoint.url, headers).map_err(|e| {
            ApiError::bad_request(format!("MCP server {:?}: {}", endpoint.name, e.message))
        })?;
        Ok(DirectMcpServer {
            inner: Rc::new(Inner {
                name: endpoint.name,
                url: endpoint.url,
                client: RefCell::new(client),
                tools: RefCell::new(None),
            }),
        })
    }

    /// The configured name.
    pub(crate) fn name(&self) -> &str {
        &self.inner.name
    }

    /// The configured endpoint.
    pub(crate) fn url(&self) -> &str {
        &self.inner.url
    }

    /// The session, to start a call with; the borrow must end before the call is driven.
    pub(crate) fn client(&self) -> std::cell::Ref<'_, McpHttpClient> {
        self.inner.client.borrow()
    }

    /// Runs one operation to its end and reads its result.
    pub(crate) async fn run<T: DeserializeOwned>(
        &self,
        start: impl FnOnce(&McpHttpClient) -> McpCall<T>,
        signal: Option<&AbortSignal>,
        on_progress: Option<&dyn Fn(McpProgress)>,
    ) -> Result<T, ApiError> {
        let call = start(&self.inner.client.borrow()).into_raw();
        self.run_raw(call, signal, on_progress).await?.decode()
    }

    /// Runs one operation to its end: the exchanges it needs (negotiation, re-initialization
    /// included), progress as it arrives, and `notifications/cancelled` if aborted. The result
    /// is left undecoded, so this loop exists once for every result type.
    pub(crate) async fn run_raw(
        &self,
        mut call: McpRawCall,
        signal: Option<&AbortSignal>,
        on_progress: Option<&dyn Fn(McpProgress)>,
    ) -> Result<McpRawResult, ApiError> {
        let result = self.drive(&mut call, signal, on_progress).await;
        if let Err(e) = &result
            && e.code == ErrorCode::Aborted
        {
            // Session-based servers are told; for stateless ones the closed stream says it.
            let cancel = call.cancel(
                &self.inner.client.borrow(),
                Some("aborted by the caller".into()),
            );
            if let Some(req) = cancel {
                wasm_bindgen_futures::spawn_local(async move {
                    // Best effort: the caller already has its answer.
                    let _ = fetch::send(&req, None).await;
                });
            }
        }
        result
    }

    async fn drive(
        &self,
        call: &mut McpRawCall,
        signal: Option<&AbortSignal>,
        on_progress: Option<&dyn Fn(McpProgress)>,
    ) -> Result<McpRawResult, ApiError> {
        let mut body: Option<BodyReader> = None;
        loop {
            // The borrow ends before any await: other calls may use the session meanwhile.
            let step = call.poll(&mut self.inner.client.borrow_mut());
            match step {
                Step::Send(req) => {
                    drop(body.take());
                    let resp = fetch::send(&req, signal).await?;
                    call.on_response(resp.status, &resp.headers());
                    body = Some(resp.into_reader()?);
                }
                Step::Receive => match body.as_mut() {
                    Some(reader) => match reader.next_chunk().await? {
                        Some(chunk) => call.on_body(&chunk),
                        None => call.on_end(),
                    },
                    None => call.on_end(),
                },
                Step::Progress(p) => {
                    if let Some(report) = on_progress {
                        report(McpProgress {
                            progress: p.progress,
                            total: p.total,
                            message: p.message,
                        });
                    }
                }
                Step::Done(value) => return Ok(value),
                Step::Failed(e) => return Err(e),
            }
        }
    }

    /// Refuses a tool the server does not list (listing again once, in case it changed).
    async fn check_tool(&self, name: &str) -> Result<(), ApiError> {
        let known = |tools: &Option<Vec<String>>| {
            tools.as_ref().is_some_and(|t| t.iter().any(|n| n == name))
        };
        if known(&self.inner.tools.borrow()) {
            return Ok(());
        }
        let mut names = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .run(|c| c.list_tools(cursor.take()), None, None)
                .await?;
            names.extend(page.tools.into_iter().map(|t| t.name.into_owned()));
            match page.next_cursor.filter(|c| !c.is_empty()) {
                Some(c) if names.len() < 100_000 => cursor = Some(c),
                _ => break,
            }
        }
        let found = names.iter().any(|n| n == name);
        *self.inner.tools.borrow_mut() = Some(names);
        if found {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "the MCP server {:?} has no tool named {name:?}",
                    self.inner.name
                ),
            ))
        }
    }

    /// Calls a tool.
    pub(crate) async fn call_tool(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
        signal: Option<&AbortSignal>,
        on_progress: Option<&dyn Fn(McpProgress)>,
    ) -> Result<CallToolResult, ApiError> {
        self.check_tool(name).await?;
        let with_progress = on_progress.is_some();
        self.run(
            |c| c.call_tool(name, arguments, with_progress),
            signal,
            on_progress,
        )
        .await
    }

    /// Reads a resource.
    pub(crate) async fn read_resource(&self, uri: &str) -> Result<ReadResourceResult, ApiError> {
        self.run(|c| c.read_resource(uri), None, None).await
    }

    /// Gets a prompt.
    pub(crate) async fn get_prompt(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
    ) -> Result<GetPromptResult, ApiError> {
        self.run(|c| c.get_prompt(name, arguments), None, None)
            .await
    }
}
