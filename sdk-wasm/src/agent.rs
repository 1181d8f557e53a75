//! The agent loop in the browser: `shared`'s [`AgentLoop`] decides, this module does the I/O with
//! the client's own chat streams and MCP calls, so the loop is the same in both modes (in proxy
//! mode every request goes through the proxy). Events are pulled one at a time, which gives the
//! TypeScript layer its `AsyncIterable` and lets a slow consumer hold the loop back.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use rmcp::model::CallToolResult;
use switchyard_shared::agent::{
    AgentEvent, AgentLoop, AgentStep, AgentStopReason, AgentTool, PlannedCall, ToolCallStatus,
};
use switchyard_shared::mcp::McpToolCall;
use switchyard_shared::{ApiError, ChatRequest, ChatResponse, StreamEvent, Usage};
use web_sys::{AbortController, AbortSignal};

use crate::client::{ChatStreamCore, ClientCore};
use crate::fetch;

/// A future of the browser's single thread.
type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// Decides whether a tool call may run: `Ok(false)` refuses it (the model is told), an error
/// ends the run.
pub type Approver = Box<dyn Fn(&PlannedCall) -> LocalFuture<Result<bool, ApiError>>>;

/// What a run is for, besides its chat request.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// The MCP servers whose tools the model is offered.
    pub mcp_servers: Vec<String>,
    /// Model answers allowed (default [`switchyard_shared::agent::DEFAULT_MAX_STEPS`]).
    pub max_steps: Option<u32>,
}

impl Drop for AgentRunCore {
    /// An abandoned run stops its request and its tool calls.
    fn drop(&mut self) {
        self.controller.abort();
    }
}

/// One tool call's end: the call, its outcome and how long it took (milliseconds).
type Finished = (PlannedCall, Result<CallToolResult, ApiError>, f64);

enum State {
    /// The tools are still to be listed.
    Starting {
        request: ChatRequest,
        options: AgentOptions,
    },
    /// The model's answer of the current step is streaming in.
    Answering {
        agent: AgentLoop,
        stream: Box<ChatStreamCore>,
    },
    /// The calls of a step: first asked for approval one by one, then run together.
    Calling {
        agent: AgentLoop,
        to_approve: VecDeque<PlannedCall>,
        approved: Vec<(PlannedCall, bool)>,
        running: FuturesUnordered<LocalFuture<Finished>>,
    },
    /// Nothing follows.
    Ended,
}

/// A running agent: call [`AgentRunCore::next`] until it returns `Ok(None)`.
pub struct AgentRunCore {
    client: ClientCore,
    state: State,
    events: VecDeque<AgentEvent>,
    /// Stops every request of the run: the caller's signal, or [`AgentRunCore::cancel`].
    signal: AbortSignal,
    controller: AbortController,
    approve: Option<Approver>,
    usage: Option<Usage>,
}

impl AgentRunCore {
    /// Prepares a run; nothing is sent until the first [`AgentRunCore::next`].
    pub fn new(
        client: ClientCore,
        request: ChatRequest,
        options: AgentOptions,
        signal: Option<&AbortSignal>,
        approve: Option<Approver>,
    ) -> Result<Self, ApiError> {
        let controller = AbortController::new()
            .map_err(|_| ApiError::internal("could not create an AbortController"))?;
        let signal = match signal {
            Some(user) => fetch::any_signal(user, &controller.signal()),
            None => controller.signal(),
        };
        Ok(AgentRunCore {
            client,
            state: State::Starting { request, options },
            events: VecDeque::new(),
            signal,
            controller,
            approve,
            usage: None,
        })
    }

    /// The next event, or `Ok(None)` after `done`. An error ends the run (an abort is
    /// `aborted`); running tool calls are cancelled on their servers.
    pub async fn next(&mut self) -> Result<Option<AgentEvent>, ApiError> {
        loop {
            // Nothing is delivered after an abort, not even events already produced.
            let pending = !self.events.is_empty() || !matches!(self.state, State::Ended);
            if pending && self.signal.aborted() {
                self.events.clear();
                self.end();
                return Err(fetch::aborted());
            }
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            if matches!(self.state, State::Ended) {
                return Ok(None);
            }
            if let Err(error) = self.advance().await {
                self.end();
                return Err(error);
            }
        }
    }

    /// Stops the run: the current request and running tool calls are aborted.
    pub fn cancel(&mut self) {
        self.events.clear();
        self.end();
    }

    /// Ends the run. Tool calls still running are aborted and tell their servers on their own
    /// tasks.
    fn end(&mut self) {
        self.controller.abort();
        self.state = State::Ended;
    }

    /// Moves the run one step further, queueing the events it produces.
    async fn advance(&mut self) -> Result<(), ApiError> {
        match std::mem::replace(&mut self.state, State::Ended) {
            State::Ended => Ok(()),
            State::Starting { request, options } => {
                let tools =
                    fetch::until_aborted(&self.signal, self.list_tools(&options.mcp_servers))
                        .await??;
                let agent = AgentLoop::new(request, tools, options.max_steps)?;
                self.ask_model(agent).await
            }
            State::Answering { agent, stream } => self.read_answer(agent, stream).await,
            State::Calling {
                agent,
                to_approve,
                approved,
                running,
            } => self.run_calls(agent, to_approve, approved, running).await,
        }
    }

    /// Every tool of every server, listed concurrently.
    async fn list_tools(&self, servers: &[String]) -> Result<Vec<AgentTool>, ApiError> {
        let mcp = self.client.mcp();
        let lists = futures_util::future::join_all(servers.iter().map(|s| mcp.list_tools(s))).await;
        let mut tools = Vec::new();
        for (server, list) in servers.iter().zip(lists) {
            tools.extend(list?.into_iter().map(|tool| AgentTool {
                server: server.clone(),
                tool,
            }));
        }
        Ok(tools)
    }

    async fn ask_model(&mut self, agent: AgentLoop) -> Result<(), ApiError> {
        let stream = self
            .client
            .chat_stream(agent.request(), Some(&self.signal))
            .await?;
        self.state = State::Answering {
            agent,
            stream: Box::new(stream),
        };
        Ok(())
    }

    async fn read_answer(
        &mut self,
        mut agent: AgentLoop,
        mut stream: Box<ChatStreamCore>,
    ) -> Result<(), ApiError> {
        let step = agent.steps() + 1;
        match stream.next().await? {
            Some(event) => {
                match event {
                    StreamEvent::TextDelta { text } => {
                        self.events.push_back(AgentEvent::TextDelta { step, text });
                    }
                    StreamEvent::Usage { usage } => {
                        self.add_usage(&usage);
                        self.events.push_back(AgentEvent::Usage { step, usage });
                    }
                    _ => {}
                }
                self.state = State::Answering { agent, stream };
                Ok(())
            }
            None => {
                let answer = stream.final_message().await?;
                let next = agent.on_model_response(&answer)?;
                self.events.push_back(AgentEvent::StepFinished {
                    step,
                    finish_reason: answer.finish_reason,
                    tool_calls: u32::try_from(answer.message.tool_calls.len()).unwrap_or(u32::MAX),
                });
                match next {
                    AgentStep::Done(answer) => {
                        self.finish(&agent, answer, AgentStopReason::Answered);
                        Ok(())
                    }
                    AgentStep::MaxStepsReached(answer) => {
                        self.finish(&agent, answer, AgentStopReason::MaxSteps);
                        Ok(())
                    }
                    // Every call was answered without running anything (e.g. an unknown tool).
                    AgentStep::CallTools(calls) if calls.is_empty() => self.ask_model(agent).await,
                    AgentStep::CallTools(calls) => {
                        self.state = State::Calling {
                            agent,
                            to_approve: calls.into(),
                            approved: Vec::new(),
                            running: FuturesUnordered::new(),
                        };
                        Ok(())
                    }
                }
            }
        }
    }

    /// Approval first (one call at a time, in the model's order), then every approved call at
    /// once; each result is reported as it arrives, and the next step starts after the last.
    async fn run_calls(
        &mut self,
        mut agent: AgentLoop,
        mut to_approve: VecDeque<PlannedCall>,
        mut approved: Vec<(PlannedCall, bool)>,
        mut running: FuturesUnordered<LocalFuture<Finished>>,
    ) -> Result<(), ApiError> {
        let step = agent.steps();
        if let Some(call) = to_approve.pop_front() {
            let allowed = match &self.approve {
                // A dialog left open must not hold an aborted run.
                Some(approve) => fetch::until_aborted(&self.signal, approve(&call)).await??,
                None => true,
            };
            approved.push((call, allowed));
            if to_approve.is_empty() {
                for (call, allowed) in approved.drain(..) {
                    self.events.push_back(AgentEvent::ToolCallStarted {
                        step,
                        call_id: call.call_id.clone(),
                        server: call.server.clone(),
                        tool: call.tool.clone(),
                        arguments: call.arguments.clone().unwrap_or_default(),
                    });
                    if allowed {
                        running.push(self.start_call(call));
                    } else {
                        agent.on_tool_denied(&call.call_id, None)?;
                        self.events.push_back(result_event(
                            step,
                            call,
                            ToolCallStatus::Denied,
                            0.0,
                        ));
                    }
                }
            }
            self.state = State::Calling {
                agent,
                to_approve,
                approved,
                running,
            };
            return Ok(());
        }
        match running.next().await {
            Some((call, outcome, duration_ms)) => {
                let event = match outcome {
                    Ok(result) => {
                        agent.on_tool_result(&call.call_id, &result)?;
                        let status = if result.is_error == Some(true) {
                            ToolCallStatus::Error
                        } else {
                            ToolCallStatus::Ok
                        };
                        let mut event = result_event(step, call, status, duration_ms);
                        if let AgentEvent::ToolResult { result: slot, .. } = &mut event {
                            *slot = Some(result);
                        }
                        event
                    }
                    // The run was aborted; a tool's own `aborted` failure is just a failure.
                    Err(error) if self.signal.aborted() => {
                        self.state = State::Calling {
                            agent,
                            to_approve,
                            approved,
                            running,
                        };
                        return Err(error);
                    }
                    Err(error) => {
                        agent.on_tool_error(&call.call_id, &error)?;
                        let mut event =
                            result_event(step, call, ToolCallStatus::Error, duration_ms);
                        if let AgentEvent::ToolResult { error: slot, .. } = &mut event {
                            *slot = Some(error);
                        }
                        event
                    }
                };
                self.events.push_back(event);
                self.state = State::Calling {
                    agent,
                    to_approve,
                    approved,
                    running,
                };
                Ok(())
            }
            None => self.ask_model(agent).await,
        }
    }

    /// Starts the call at once, on its own task: it runs while the consumer handles events,
    /// and an abort reaches it (and its server) even after the run is dropped.
    fn start_call(&self, call: PlannedCall) -> LocalFuture<Finished> {
        let client = self.client.clone();
        let signal = self.signal.clone();
        let (done, finished) = futures_channel::oneshot::channel();
        let call_id = call.call_id.clone();
        let (server, tool) = (call.server.clone(), call.tool.clone());
        wasm_bindgen_futures::spawn_local(async move {
            let started = js_sys::Date::now();
            let request = McpToolCall {
                server: call.server.clone(),
                name: call.tool.clone(),
                arguments: call.arguments.clone(),
            };
            let outcome = client.mcp().call_tool(request, Some(&signal), None).await;
            // Nobody listens once the run has ended.
            let _ = done.send((call, outcome, js_sys::Date::now() - started));
        });
        Box::pin(async move {
            finished.await.unwrap_or_else(|_| {
                let call = PlannedCall {
                    call_id,
                    server,
                    tool,
                    arguments: None,
                };
                (call, Err(fetch::aborted()), 0.0)
            })
        })
    }

    fn finish(&mut self, agent: &AgentLoop, answer: ChatResponse, reason: AgentStopReason) {
        self.events.push_back(AgentEvent::Done {
            reason,
            steps: agent.steps(),
            messages: agent.conversation(&answer),
            message: answer.message,
            usage: self.usage,
        });
    }

    fn add_usage(&mut self, usage: &Usage) {
        let total = self.usage.get_or_insert_with(Usage::default);
        total.prompt_tokens = total.prompt_tokens.saturating_add(usage.prompt_tokens);
        total.completion_tokens = total
            .completion_tokens
            .saturating_add(usage.completion_tokens);
        total.total_tokens = total.total_tokens.saturating_add(usage.total_tokens);
    }
}

fn result_event(
    step: u32,
    call: PlannedCall,
    status: ToolCallStatus,
    duration_ms: f64,
) -> AgentEvent {
    AgentEvent::ToolResult {
        step,
        call_id: call.call_id,
        server: call.server,
        tool: call.tool,
        status,
        duration_ms,
        result: None,
        error: None,
    }
}
