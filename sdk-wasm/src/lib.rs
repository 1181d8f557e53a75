//! Switchyard's browser client, compiled to WebAssembly.
//!
//! This module is the JavaScript boundary only: it converts values (typed for TypeScript by
//! `tsify`) and turns [`ApiError`]s into JS errors. The hand-written TypeScript layer in `js/` wraps these exports
//! into the public face (`createClient`, async iterators, `Error` subclasses).

mod agent;
mod auto;
mod client;
mod direct_mcp;
mod fetch;
mod mcp;
mod ws;

pub use agent::{AgentOptions, AgentRunCore, Approver};
pub use auto::{Route, RouteChange, RouteListener, RouteReason};
pub use client::{
    AutoOptions, ChatStreamCore, ClientCore, ClientOptions, DirectOptions, FallbackProxy,
    ProxyOptions, RetryOptions, Transport,
};
pub use mcp::{McpClient, McpProgress, McpServerEndpoint};

use serde::{Deserialize, Serialize};
use switchyard_shared::agent::{AgentEvent, PlannedCall};
use switchyard_shared::{ApiError, ChatRequest, ChatResponse, ErrorCode, StreamEvent};
use tsify::{Ts, Tsify};
use wasm_bindgen::prelude::*;
use web_sys::AbortSignal;

/// A configured client (the TypeScript layer exposes it as `SwitchyardClient`).
#[wasm_bindgen]
pub struct Client {
    core: ClientCore,
}

#[wasm_bindgen]
impl Client {
    /// Validates the options and builds the client.
    #[wasm_bindgen(constructor)]
    pub fn new(options: Ts<ClientOptions>) -> Result<Client, JsValue> {
        let options = from_js::<ClientOptions>(options.into()).map_err(|e| {
            to_js(ApiError::bad_request(format!(
                "invalid client options: {e}"
            )))
        })?;
        ClientCore::new(options)
            .map(|core| Client { core })
            .map_err(to_js)
    }

    /// How `upstream` (a provider or MCP server name) is reached now.
    #[wasm_bindgen(js_name = routeOf, unchecked_return_type = "Route")]
    pub fn route_of(&self, upstream: &str) -> String {
        self.core.route_of(upstream).as_str().to_owned()
    }

    /// Calls `listener` with a `RouteChange` whenever auto mode moves an upstream to the proxy.
    #[wasm_bindgen(js_name = onRouteChange)]
    pub fn on_route_change(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(change: RouteChange) => void")]
        listener: js_sys::Function,
    ) {
        self.core
            .on_route_change(std::rc::Rc::new(move |change: &RouteChange| {
                if let Ok(value) = to_json_value(change) {
                    // A throwing listener is the caller's bug; it must not fail the call.
                    let _ = listener.call1(&JsValue::NULL, &value);
                }
            }));
    }

    /// A complete chat answer.
    pub async fn chat(
        &self,
        request: Ts<ChatRequest>,
        signal: Option<AbortSignal>,
    ) -> Result<Ts<ChatResponse>, JsValue> {
        let request = parse_request(request)?;
        let response = self
            .core
            .chat(&request, signal.as_ref())
            .await
            .map_err(to_js)?;
        to_ts(&response)
    }

    /// Starts a streamed chat answer.
    #[wasm_bindgen(js_name = chatStream)]
    pub async fn chat_stream(
        &self,
        request: Ts<ChatRequest>,
        signal: Option<AbortSignal>,
    ) -> Result<ChatStream, JsValue> {
        let request = parse_request(request)?;
        let core = self
            .core
            .chat_stream(&request, signal.as_ref())
            .await
            .map_err(to_js)?;
        Ok(ChatStream { core })
    }
}

#[wasm_bindgen]
impl Client {
    /// Starts an agent run: the model is offered the tools of `mcp_servers` and its tool calls
    /// are run until it answers or `max_steps` answers were used. Nothing is sent until the
    /// first `next()`.
    #[wasm_bindgen(js_name = runAgent)]
    pub fn run_agent(
        &self,
        request: Ts<ChatRequest>,
        mcp_servers: Vec<String>,
        max_steps: Option<u32>,
        signal: Option<AbortSignal>,
        #[wasm_bindgen(
            unchecked_param_type = "((call: AgentToolCall) => boolean | Promise<boolean>) | undefined"
        )]
        approve: JsValue,
    ) -> Result<AgentRun, JsValue> {
        let request = parse_request(request)?;
        let approve = approve.dyn_into::<js_sys::Function>().ok().map(js_approver);
        let options = AgentOptions {
            mcp_servers,
            max_steps,
        };
        let core = AgentRunCore::new(
            self.core.clone(),
            request,
            options,
            signal.as_ref(),
            approve,
        )
        .map_err(to_js)?;
        Ok(AgentRun { core })
    }
}

/// A tool call waiting for `approve`.
#[derive(Debug, Clone, Serialize, Deserialize, Tsify)]
pub struct AgentToolCall {
    /// The model's id for the call.
    pub call_id: String,
    /// The MCP server.
    pub server: String,
    /// The tool's name on that server.
    pub tool: String,
    /// The arguments the model gave.
    #[tsify(type = "Record<string, unknown>")]
    pub arguments: rmcp::model::JsonObject,
}

/// Wraps a JavaScript `approve` callback: only `true` (or a promise of it) lets a call run, so a
/// callback that forgets to return refuses rather than allows.
fn js_approver(f: js_sys::Function) -> Approver {
    Box::new(move |call: &PlannedCall| {
        let f = f.clone();
        let call = AgentToolCall {
            call_id: call.call_id.clone(),
            server: call.server.clone(),
            tool: call.tool.clone(),
            arguments: call.arguments.clone().unwrap_or_default(),
        };
        Box::pin(async move {
            let failed = |e: JsValue| {
                // A thrown non-`Error` is shown as JSON (`Debug` of a `JsValue` would bring
                // wasm-bindgen's value printer into the package for this one message).
                let why = e
                    .dyn_ref::<js_sys::Error>()
                    .map(|e| String::from(e.message()))
                    .or_else(|| js_sys::JSON::stringify(&e).ok().and_then(|s| s.as_string()))
                    .unwrap_or_else(|| "a value that is not an Error".to_owned());
                ApiError::new(ErrorCode::Internal, format!("`approve` failed: {why}"))
            };
            let value = f
                .call1(
                    &JsValue::NULL,
                    &to_json_value(&call)
                        .map_err(|_| ApiError::internal("could not convert the tool call"))?,
                )
                .map_err(failed)?;
            let value = match value.dyn_into::<js_sys::Promise>() {
                Ok(promise) => wasm_bindgen_futures::JsFuture::from(promise)
                    .await
                    .map_err(failed)?,
                Err(value) => value,
            };
            Ok(value == JsValue::TRUE)
        })
    })
}

/// A running agent; the TypeScript layer makes it `AsyncIterable`.
#[wasm_bindgen]
pub struct AgentRun {
    core: AgentRunCore,
}

#[wasm_bindgen]
impl AgentRun {
    /// The next event, or `undefined` after `done`. Rejects if the run failed or was aborted.
    pub async fn next(&mut self) -> Result<Option<Ts<AgentEvent>>, JsValue> {
        match self.core.next().await.map_err(to_js)? {
            Some(event) => Ok(Some(to_ts(&event)?)),
            None => Ok(None),
        }
    }

    /// Stops the run: the current request and running tool calls are aborted.
    pub fn cancel(&mut self) {
        self.core.cancel();
    }
}

#[wasm_bindgen]
impl Client {
    /// The MCP servers this client can use.
    #[wasm_bindgen(js_name = mcpListServers, unchecked_return_type = "McpServerInfo[]")]
    pub async fn mcp_list_servers(&self) -> Result<JsValue, JsValue> {
        to_json_value(&self.core.mcp().list_servers().await.map_err(to_js)?)
    }

    /// Every tool of a server.
    #[wasm_bindgen(js_name = mcpListTools, unchecked_return_type = "McpTool[]")]
    pub async fn mcp_list_tools(&self, server: String) -> Result<JsValue, JsValue> {
        to_json_value(&self.core.mcp().list_tools(&server).await.map_err(to_js)?)
    }

    /// Calls a tool; `on_progress` is called with each progress report.
    #[wasm_bindgen(js_name = mcpCallTool, unchecked_return_type = "CallToolResult")]
    pub async fn mcp_call_tool(
        &self,
        server: String,
        name: String,
        #[wasm_bindgen(unchecked_param_type = "Record<string, unknown> | undefined")]
        arguments: JsValue,
        signal: Option<AbortSignal>,
        #[wasm_bindgen(unchecked_param_type = "((progress: McpProgress) => void) | undefined")]
        on_progress: JsValue,
    ) -> Result<JsValue, JsValue> {
        let arguments = optional_object(arguments, "arguments")?;
        let callback = on_progress.dyn_into::<js_sys::Function>().ok();
        let report = |p: McpProgress| {
            if let (Some(f), Ok(value)) = (&callback, to_json_value(&p)) {
                // A throwing callback is the caller's bug; it must not abort the tool call.
                let _ = f.call1(&JsValue::NULL, &value);
            }
        };
        let call = switchyard_shared::mcp::McpToolCall {
            server,
            name,
            arguments,
        };
        let result = self
            .core
            .mcp()
            .call_tool(
                call,
                signal.as_ref(),
                callback
                    .is_some()
                    .then_some(&report as &dyn Fn(McpProgress)),
            )
            .await
            .map_err(to_js)?;
        to_json_value(&result)
    }

    /// Every resource of a server.
    #[wasm_bindgen(js_name = mcpListResources, unchecked_return_type = "McpResource[]")]
    pub async fn mcp_list_resources(&self, server: String) -> Result<JsValue, JsValue> {
        to_json_value(
            &self
                .core
                .mcp()
                .list_resources(&server)
                .await
                .map_err(to_js)?,
        )
    }

    /// Reads a resource.
    #[wasm_bindgen(js_name = mcpReadResource, unchecked_return_type = "ReadResourceResult")]
    pub async fn mcp_read_resource(&self, server: String, uri: String) -> Result<JsValue, JsValue> {
        to_json_value(
            &self
                .core
                .mcp()
                .read_resource(&server, &uri)
                .await
                .map_err(to_js)?,
        )
    }

    /// Every prompt of a server.
    #[wasm_bindgen(js_name = mcpListPrompts, unchecked_return_type = "McpPrompt[]")]
    pub async fn mcp_list_prompts(&self, server: String) -> Result<JsValue, JsValue> {
        to_json_value(&self.core.mcp().list_prompts(&server).await.map_err(to_js)?)
    }

    /// Gets a prompt with its arguments filled in.
    #[wasm_bindgen(js_name = mcpGetPrompt, unchecked_return_type = "GetPromptResult")]
    pub async fn mcp_get_prompt(
        &self,
        server: String,
        name: String,
        #[wasm_bindgen(unchecked_param_type = "Record<string, string> | undefined")]
        arguments: JsValue,
    ) -> Result<JsValue, JsValue> {
        let arguments = optional_object(arguments, "arguments")?;
        to_json_value(
            &self
                .core
                .mcp()
                .get_prompt(&server, &name, arguments)
                .await
                .map_err(to_js)?,
        )
    }
}

/// MCP's own result shapes, as the spec defines them (they come from `rmcp`, which has no
/// TypeScript declarations of its own).
#[wasm_bindgen(typescript_custom_section)]
const MCP_TYPES: &str = include_str!("mcp_types.d.ts");

/// A streamed answer; the TypeScript layer makes it `AsyncIterable`.
#[wasm_bindgen]
pub struct ChatStream {
    core: ChatStreamCore,
}

#[wasm_bindgen]
impl ChatStream {
    /// The next event, or `undefined` once the answer is complete. Rejects if the stream failed.
    pub async fn next(&mut self) -> Result<Option<Ts<StreamEvent>>, JsValue> {
        match self.core.next().await.map_err(to_js)? {
            Some(event) => Ok(Some(to_ts(&event)?)),
            None => Ok(None),
        }
    }

    /// Reads the rest of the stream and returns the whole answer.
    #[wasm_bindgen(js_name = finalMessage)]
    pub async fn final_message(&mut self) -> Result<Ts<ChatResponse>, JsValue> {
        let response = self.core.final_message().await.map_err(to_js)?;
        to_ts(&response)
    }

    /// Stops reading and closes the connection.
    pub fn cancel(&mut self) {
        self.core.cancel();
    }
}

fn parse_request(request: Ts<ChatRequest>) -> Result<ChatRequest, JsValue> {
    from_js(request.into())
        .map_err(|e| to_js(ApiError::bad_request(format!("invalid chat request: {e}"))))
}

fn to_ts<T: tsify::Tsify + serde::Serialize>(value: &T) -> Result<Ts<T>, JsValue> {
    to_json_value(value).map(Ts::new_unchecked)
}

/// A value for JavaScript, through JSON (the same rules as on the wire).
fn to_json_value<T: serde::Serialize>(value: &T) -> Result<JsValue, JsValue> {
    json_to_js(serde_json::to_string(value))
}

/// The part of [`to_json_value`] that does not depend on the type, compiled once.
fn json_to_js(text: serde_json::Result<String>) -> Result<JsValue, JsValue> {
    let text = text.map_err(|e| {
        to_js(ApiError::internal(format!(
            "could not convert the answer: {e}"
        )))
    })?;
    js_sys::JSON::parse(&text)
        .map_err(|_| to_js(ApiError::internal("could not convert the answer")))
}

/// A value from JavaScript, through JSON, so that the same `serde` rules apply as on the wire
/// (`deny_unknown_fields` included). `Ts<T>` values come this way too rather than through
/// tsify's `to_rust`, which reads with `from_str`: with one reader, as for bodies off the
/// network, each type's reading code is compiled once. What JSON cannot write (`undefined`, a
/// function) reads as `null`, as in `to_rust`.
fn from_js<T: serde::de::DeserializeOwned>(value: JsValue) -> Result<T, String> {
    switchyard_shared::json::from_slice(js_json(value)?.as_bytes()).map_err(|e| e.to_string())
}

/// The JSON text of a JavaScript value, for [`from_js`].
fn js_json(value: JsValue) -> Result<String, String> {
    Ok(js_sys::JSON::stringify(&value)
        .map_err(|_| "not serializable to JSON (a cycle, or a BigInt)".to_owned())?
        .as_string()
        .unwrap_or_else(|| "null".to_owned()))
}

/// `undefined`/`null`, or a plain object.
fn optional_object(value: JsValue, what: &str) -> Result<Option<rmcp::model::JsonObject>, JsValue> {
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    from_js(value).map(Some).map_err(|e| {
        to_js(ApiError::bad_request(format!(
            "`{what}` must be an object: {e}"
        )))
    })
}

/// An `Error` carrying the taxonomy's fields; the TypeScript layer turns it into the matching
/// `SwitchyardError` subclass.
fn to_js(e: ApiError) -> JsValue {
    let err = js_sys::Error::new(&e.message);
    err.set_name("SwitchyardError");
    let obj: &JsValue = err.as_ref();
    let set = |key: &str, value: JsValue| {
        // Setting a property on a fresh Error object cannot fail.
        let _ = js_sys::Reflect::set(obj, &JsValue::from_str(key), &value);
    };
    set("code", JsValue::from_str(e.code.as_str()));
    set("status", JsValue::from(e.http_status()));
    set("retryable", JsValue::from_bool(e.retryable));
    if let Some(s) = e.retry_after {
        set("retryAfter", JsValue::from(s as f64));
    }
    err.into()
}
