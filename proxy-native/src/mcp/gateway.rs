//! The MCP gateway: one MCP server (served at `/mcp`) that offers every configured MCP server
//! the caller may use, through the session pool, under names that say which server each tool,
//! prompt and resource is from (see `switchyard_shared::mcp::namespace`).
//!
//! - The caller is the one the authentication layer established for the HTTP request; rmcp
//!   hands the request's parts to the handler. A session (protocol versions up to 2025-11-25)
//!   belongs to the caller that opened it: `routes/mcp_gateway.rs` refuses another caller's
//!   requests in it before they reach rmcp, and the handler checks again.
//! - Lists are gathered from every server the caller may use, all pages (up to [`MAX_PAGES`] a
//!   server), in one answer; a server that fails is left out (and logged) rather than failing
//!   the whole list.
//! - Scopes apply as on `/api/mcp/*`: servers and tools outside them are neither listed nor
//!   callable. Tool calls are audited and counted like `/api/mcp/tool`'s.
//! - Progress of a tool call reaches the client under the client's own progress token; a client
//!   that cancels its request (`notifications/cancelled`; for a stateless request, closing the
//!   exchange) cancels the call upstream. A call reporting progress, like a `subscriptions/listen`,
//!   holds one of the caller's stream places (`limits.concurrent_streams`) while it runs, as
//!   `/api/mcp/tool/stream` does.
//! - Changed lists announced by a server reach the gateway's clients that may use it: on a
//!   session's event stream (2025-11-25 and before), or to `subscriptions/listen` (2026-07-28).

use std::sync::{Mutex, OnceLock, PoisonError};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use futures::StreamExt;
use futures::future::join_all;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ErrorCode as RpcCode, ErrorData,
    Extensions, GetPromptRequestParams, GetPromptResponse, Implementation, InitializeRequestParams,
    InitializeResult, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ProgressToken,
    PromptListChangedNotification, ReadResourceRequestParams, ReadResourceResponse,
    ResourceContents, ResourceListChangedNotification, ServerCapabilities, ServerConfig,
    ServerNotification, SubscriptionFilter, ToolListChangedNotification,
};
use rmcp::service::{
    NotificationContext, RequestContext, SubscriptionContext, SubscriptionSendError,
};
use rmcp::{Peer, RoleServer, ServerHandler};
use switchyard_shared::mcp::{McpToolCall, McpToolEvent, namespace};
use switchyard_shared::{ApiError, ErrorCode};
use tokio::sync::broadcast;
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::handler::{ListChanged, ListKind};
use crate::auth::Caller;
use crate::limits::{Budget, StreamPermit};
use crate::observability::{RequestFacts, ToolAudit};
use crate::state::AppState;

/// Pages read from one server for one list; a server that offers more is cut off there (and
/// logged), so one misbehaving server cannot keep the gateway listing forever.
const MAX_PAGES: usize = 32;

/// The gateway's handler: made per session (or per request, for stateless requests).
pub struct Gateway {
    state: AppState,
    /// The caller whose session it is, from its `initialize` on.
    owner: OnceLock<Caller>,
    /// The task passing changed lists to the session's client; stopped with the session.
    watcher: Mutex<Option<AbortHandle>>,
}

impl Gateway {
    /// A handler for one session or one stateless request.
    pub fn new(state: AppState) -> Self {
        Gateway {
            state,
            owner: OnceLock::new(),
            watcher: Mutex::new(None),
        }
    }

    /// The caller of the HTTP request behind `extensions`; refused when the session belongs to
    /// someone else.
    fn caller(&self, extensions: &Extensions) -> Result<Caller, ErrorData> {
        let caller = request_parts(extensions).and_then(|parts| Caller::of(&parts.extensions));
        // Only a route outside the authentication layer lacks them: refuse, never guess.
        let caller = caller.ok_or_else(|| {
            ErrorData::internal_error("the request carries no authenticated caller", None)
        })?;
        // A token minted for the session's owner is the owner (`Identity::principal`).
        if let Some(owner) = self.owner.get()
            && owner.identity.principal() != caller.identity.principal()
        {
            return Err(ErrorData::invalid_request(
                "this MCP session belongs to another caller",
                None,
            ));
        }
        Ok(caller)
    }

    /// The servers `caller` may use, in the configuration's order.
    fn servers<'a>(&'a self, caller: &'a Caller) -> impl Iterator<Item = &'a str> + 'a {
        self.state
            .mcp()
            .servers()
            .servers
            .iter()
            .map(|server| server.name.as_str())
            .filter(|name| caller.scopes().may_use_server(name))
    }

    /// The configured server named `server`, which `caller` may use; the same answer for a
    /// server that does not exist and one the caller may not see.
    fn server<'a>(&'a self, caller: &Caller, server: &str) -> Result<&'a str, ErrorData> {
        self.state
            .mcp()
            .servers()
            .servers
            .iter()
            .map(|s| s.name.as_str())
            .find(|name| *name == server && caller.scopes().may_use_server(name))
            .ok_or_else(|| {
                ErrorData::invalid_params(format!("no MCP server named '{server}'"), None)
            })
    }

    /// One of the caller's stream places, held while a call reports progress or a subscription
    /// is open; `None` for a request the authentication layer did not see (it has no limits).
    fn stream_permit(&self, extensions: &Extensions) -> Result<Option<StreamPermit>, ApiError> {
        let Some(budget) = request_parts(extensions).and_then(|p| Budget::of(&p.extensions)) else {
            return Ok(None);
        };
        self.state.limiter().stream(&budget).map(Some)
    }

    /// Counts a failed operation against its server, as `/api/mcp/*` does.
    fn counted(&self, server: &str, error: &ApiError) {
        self.state
            .observability()
            .metrics()
            .record_mcp_error(server, error.code);
    }

    /// Every page of one list of every server `caller` may use, each item renamed for the
    /// gateway; servers that fail are left out. Stops when the client cancels the request.
    async fn gather<T, F, Fut>(
        &self,
        context: &RequestContext<RoleServer>,
        caller: &Caller,
        what: &'static str,
        page: F,
    ) -> Result<Vec<T>, ErrorData>
    where
        F: Fn(String, Option<String>) -> Fut,
        Fut: Future<Output = Result<(Vec<T>, Option<String>), ApiError>>,
    {
        let lists = self.servers(caller).map(|server| {
            let page = &page;
            async move {
                let mut items = Vec::new();
                let mut cursor = None;
                for _ in 0..MAX_PAGES {
                    match page(server.to_owned(), cursor).await {
                        Ok((page_items, next)) => {
                            items.extend(page_items);
                            match next {
                                Some(next) => cursor = Some(next),
                                None => return items,
                            }
                        }
                        Err(error) => {
                            self.counted(server, &error);
                            tracing::warn!(server, what, error = %error.message, "left out of the MCP gateway's list");
                            // A part of a list would look whole to the client.
                            return Vec::new();
                        }
                    }
                }
                tracing::warn!(server, what, pages = MAX_PAGES, "list cut off in the MCP gateway");
                items
            }
        });
        let lists = unless_cancelled(context, join_all(lists)).await?;
        Ok(lists.into_iter().flatten().collect())
    }

    /// Calls a tool, passing its progress on under the client's token while it runs.
    async fn call(
        &self,
        caller: &Caller,
        call: McpToolCall,
        progress: Option<(ProgressToken, Peer<RoleServer>)>,
    ) -> Result<CallToolResult, ApiError> {
        let pool = self.state.mcp();
        let Some((token, peer)) = progress else {
            return pool.call_tool(&caller.identity, call).await;
        };
        let mut events = pool.call_tool_stream(&caller.identity, call).await?;
        while let Some(event) = events.next().await {
            match event {
                McpToolEvent::Progress {
                    progress,
                    total,
                    message,
                } => {
                    let mut params = ProgressNotificationParam::new(token.clone(), progress);
                    params.total = total;
                    params.message = message;
                    // A client that went away ends the call through cancellation, not here.
                    let _ = peer.notify_progress(params).await;
                }
                McpToolEvent::Result { result } => return Ok(result),
                McpToolEvent::Error { error } => return Err(error),
            }
        }
        Err(ApiError::internal("the tool call ended without a result"))
    }

    /// Starts passing changed lists on to this session's client.
    fn watch_changes(&self, caller: Caller, peer: Peer<RoleServer>) {
        let changes = self.state.mcp().list_changes();
        let task = tokio::spawn(forward_changes(changes, caller, move |notification| {
            let peer = peer.clone();
            async move { peer.send_notification(notification).await.is_ok() }
        }));
        let mut watcher = self.watcher.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(previous) = watcher.replace(task.abort_handle()) {
            previous.abort();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let watcher = self
            .watcher
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = watcher.take() {
            task.abort();
        }
    }
}

/// The HTTP request's parts, which rmcp's Streamable HTTP service puts into every message's
/// extensions.
fn request_parts(extensions: &Extensions) -> Option<&Parts> {
    extensions.get::<Parts>()
}

/// `work`, unless the client cancels the request first (then the work is dropped).
async fn unless_cancelled<T>(
    context: &RequestContext<RoleServer>,
    work: impl Future<Output = T>,
) -> Result<T, ErrorData> {
    tokio::select! {
        done = work => Ok(done),
        () = context.ct.cancelled() => Err(rpc_error(&ApiError::new(
            ErrorCode::Aborted,
            "the client cancelled the request",
        ))),
    }
}

/// Sends each change of a list `caller` may see through `send`, until `send` fails (the client
/// is gone).
async fn forward_changes<F, Fut>(
    mut changes: broadcast::Receiver<ListChanged>,
    caller: Caller,
    send: F,
) where
    F: Fn(ServerNotification) -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        let kinds: &[ListKind] = match changes.recv().await {
            Ok(change) => {
                let visible = caller.scopes().may_use_server(&change.server)
                    && change
                        .owner
                        .as_ref()
                        .is_none_or(|owner| *owner == caller.identity.principal());
                if !visible {
                    continue;
                }
                match change.kind {
                    ListKind::Tools => &[ListKind::Tools],
                    ListKind::Prompts => &[ListKind::Prompts],
                    ListKind::Resources => &[ListKind::Resources],
                }
            }
            // Announcements were missed: any list may have changed.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                &[ListKind::Tools, ListKind::Prompts, ListKind::Resources]
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        for kind in kinds {
            if !send(notification(*kind)).await {
                return;
            }
        }
    }
}

fn notification(kind: ListKind) -> ServerNotification {
    match kind {
        ListKind::Tools => {
            ServerNotification::ToolListChangedNotification(ToolListChangedNotification {
                method: Default::default(),
                extensions: Default::default(),
            })
        }
        ListKind::Prompts => {
            ServerNotification::PromptListChangedNotification(PromptListChangedNotification {
                method: Default::default(),
                extensions: Default::default(),
            })
        }
        ListKind::Resources => {
            ServerNotification::ResourceListChangedNotification(ResourceListChangedNotification {
                method: Default::default(),
                extensions: Default::default(),
            })
        }
    }
}

/// The JSON-RPC error for a refusal or failure: the taxonomy's code travels in `data`.
fn rpc_error(error: &ApiError) -> ErrorData {
    let code = match error.code {
        ErrorCode::BadRequest | ErrorCode::NotFound | ErrorCode::Forbidden => {
            RpcCode::INVALID_PARAMS
        }
        _ => RpcCode::INTERNAL_ERROR,
    };
    let mut data = serde_json::json!({
        "code": error.code.as_str(),
        "retryable": error.retryable,
    });
    if let Some(seconds) = error.retry_after {
        data["retryAfter"] = seconds.into();
    }
    ErrorData::new(code, error.message.clone(), Some(data))
}

/// `server`'s own name of a gateway tool or prompt name.
fn split_name<'a>(qualified: &'a str, what: &str) -> Result<(&'a str, &'a str), ErrorData> {
    namespace::split(qualified).ok_or_else(|| {
        ErrorData::invalid_params(
            format!("unknown {what} '{qualified}': gateway names are \"<server>__<name>\""),
            None,
        )
    })
}

impl ServerHandler for Gateway {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_prompts()
                .enable_prompts_list_changed()
                .enable_resources()
                .enable_resources_list_changed()
                .build(),
        )
        .with_server_info(
            Implementation::new("switchyard-gateway", env!("CARGO_PKG_VERSION"))
                .with_title("Switchyard MCP gateway"),
        )
        .with_instructions(
            "Every MCP server this proxy offers you, as one. Tools and prompts are named \
             \"<server>__<name>\"; resources \"switchyard://<server>/<the server's URI>\".",
        )
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        let caller = self.caller(&context.extensions)?;
        // The first `initialize` decides whose session it is; rmcp answers a repeated one.
        let _ = self.owner.set(caller);
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let Ok(caller) = self.caller(&context.extensions) else {
            return;
        };
        self.watch_changes(caller, context.peer);
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let caller = self.caller(&context.extensions)?;
        let pool = self.state.mcp();
        let caller_ref = &caller;
        let tools = self
            .gather(
                &context,
                &caller,
                "tools/list",
                |server, cursor| async move {
                    let mut page = pool
                        .list_tools(&caller_ref.identity, &server, cursor)
                        .await?;
                    caller_ref.scopes().filter_tools(&server, &mut page);
                    let tools = page.tools.into_iter().map(|mut tool| {
                        tool.name = namespace::qualify(&server, &tool.name).into();
                        tool
                    });
                    Ok((tools.collect(), page.next_cursor))
                },
            )
            .await?;
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let caller = self.caller(&context.extensions)?;
        let (server, tool) = split_name(&request.name, "tool")?;
        let call = McpToolCall {
            server: server.to_owned(),
            name: tool.to_owned(),
            arguments: request.arguments,
        };
        let facts = match request_parts(&context.extensions) {
            Some(parts) => {
                let mut parts = parts.clone();
                match RequestFacts::from_request_parts(&mut parts, &self.state).await {
                    Ok(facts) => facts,
                    Err(never) => match never {},
                }
            }
            None => return Err(ErrorData::internal_error("no request to audit", None)),
        };
        let progress = context.meta.get_progress_token();
        let audit = ToolAudit::new(facts, &call, progress.is_some());
        let permit = caller.scopes().check_tool(server, tool).and_then(|()| {
            if progress.is_some() {
                self.stream_permit(&context.extensions)
            } else {
                Ok(None)
            }
        });
        let _permit = match permit {
            Ok(permit) => permit,
            Err(error) => {
                audit.finish(Err(&error));
                return Err(rpc_error(&error));
            }
        };
        let span = tracing::info_span!("mcp", server, method = "tools/call", gateway = true);
        let progress = progress.map(|token| (token, context.peer.clone()));
        let result = tokio::select! {
            result = self.call(&caller, call, progress).instrument(span) => result,
            // Dropping the call cancels it upstream.
            () = context.ct.cancelled() => Err(ApiError::new(
                ErrorCode::Aborted,
                "the client cancelled the tool call",
            )),
        };
        audit.finish(result.as_ref());
        match result {
            Ok(result) => Ok(result.into()),
            Err(error) => Err(rpc_error(&error)),
        }
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let caller = self.caller(&context.extensions)?;
        let pool = self.state.mcp();
        let identity = &caller.identity;
        let prompts = self
            .gather(
                &context,
                &caller,
                "prompts/list",
                |server, cursor| async move {
                    let page = pool.list_prompts(identity, &server, cursor).await?;
                    let prompts = page.prompts.into_iter().map(|mut prompt| {
                        prompt.name = namespace::qualify(&server, &prompt.name);
                        prompt
                    });
                    Ok((prompts.collect(), page.next_cursor))
                },
            )
            .await?;
        Ok(ListPromptsResult::with_all_items(prompts))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let caller = self.caller(&context.extensions)?;
        let (server, prompt) = split_name(&request.name, "prompt")?;
        let server = self.server(&caller, server)?;
        let span = tracing::info_span!("mcp", server, method = "prompts/get", gateway = true);
        let getting = self
            .state
            .mcp()
            .get_prompt(
                &caller.identity,
                server,
                prompt.to_owned(),
                request.arguments,
            )
            .instrument(span);
        unless_cancelled(&context, getting)
            .await?
            .map(Into::into)
            .map_err(|error| {
                self.counted(server, &error);
                rpc_error(&error)
            })
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let caller = self.caller(&context.extensions)?;
        let pool = self.state.mcp();
        let identity = &caller.identity;
        let resources = self
            .gather(
                &context,
                &caller,
                "resources/list",
                |server, cursor| async move {
                    let page = pool.list_resources(identity, &server, cursor).await?;
                    let resources = page.resources.into_iter().map(|mut resource| {
                        resource.uri = namespace::qualify_uri(&server, &resource.uri);
                        resource
                    });
                    Ok((resources.collect(), page.next_cursor))
                },
            )
            .await?;
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let caller = self.caller(&context.extensions)?;
        let pool = self.state.mcp();
        let identity = &caller.identity;
        let templates = self
            .gather(
                &context,
                &caller,
                "resources/templates/list",
                |server, cursor| async move {
                    let page = pool
                        .list_resource_templates(identity, &server, cursor)
                        .await?;
                    let templates = page.resource_templates.into_iter().map(|mut template| {
                        template.uri_template =
                            namespace::qualify_uri(&server, &template.uri_template);
                        template
                    });
                    Ok((templates.collect(), page.next_cursor))
                },
            )
            .await?;
        Ok(ListResourceTemplatesResult::with_all_items(templates))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let caller = self.caller(&context.extensions)?;
        let (server, uri) = namespace::split_uri(&request.uri).ok_or_else(|| {
            ErrorData::invalid_params(
                format!(
                    "unknown resource '{}': gateway URIs are \"switchyard://<server>/<uri>\"",
                    request.uri
                ),
                None,
            )
        })?;
        let server = self.server(&caller, server)?;
        let span = tracing::info_span!("mcp", server, method = "resources/read", gateway = true);
        let reading = self
            .state
            .mcp()
            .read_resource(&caller.identity, server, uri.to_owned())
            .instrument(span);
        let mut result = unless_cancelled(&context, reading)
            .await?
            .map_err(|error| {
                self.counted(server, &error);
                rpc_error(&error)
            })?;
        // The contents name the URI the client knows.
        for contents in &mut result.contents {
            if let ResourceContents::TextResourceContents { uri, .. }
            | ResourceContents::BlobResourceContents { uri, .. } = contents
            {
                *uri = namespace::qualify_uri(server, uri);
            }
        }
        Ok(result.into())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        // Changed lists only: subscriptions to single resources are not passed upstream.
        let mut accepted = requested.clone();
        accepted.resource_subscriptions = None;
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let extensions = &context.request_context().extensions;
        let caller = self.caller(extensions)?;
        let _permit = self
            .stream_permit(extensions)
            .map_err(|error| rpc_error(&error))?;
        let changes = self.state.mcp().list_changes();
        let sink = context.sink().clone();
        let forwarding = forward_changes(changes, caller, move |notification| {
            let sink = sink.clone();
            async move {
                match sink.send(notification).await {
                    // The client did not ask for this kind: nothing to send, and no end.
                    Ok(())
                    | Err(SubscriptionSendError::NotificationNotAccepted(_))
                    | Err(SubscriptionSendError::UnsupportedNotification(_)) => true,
                    Err(_) => false,
                }
            }
        });
        tokio::select! {
            () = forwarding => {}
            () = context.cancelled() => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_their_code() {
        let error = rpc_error(&ApiError::new(ErrorCode::Forbidden, "not yours"));
        assert_eq!(error.code, RpcCode::INVALID_PARAMS);
        assert_eq!(error.message, "not yours");
        let data = error.data.expect("data");
        assert_eq!(data["code"], "forbidden");
        let error =
            rpc_error(&ApiError::new(ErrorCode::UpstreamTimeout, "slow").with_retry_after(Some(3)));
        assert_eq!(error.code, RpcCode::INTERNAL_ERROR);
        let data = error.data.expect("data");
        assert_eq!(data["code"], "upstream_timeout");
        assert_eq!(data["retryAfter"], 3);
    }
}
