//! The agent loop as a state machine: the model is offered MCP tools as functions, its tool calls
//! are turned into MCP calls to run, their results go back to the model, until it answers or the
//! step budget is spent. No I/O: the SDK (in either mode) runs the chat requests and tool calls
//! this describes, so the loop behaves the same whether it goes direct or through the proxy.
//!
//! ```text
//! let mut agent = AgentLoop::new(request, tools, None)?;
//! loop {
//!     let answer = chat(agent.request()).await?;
//!     match agent.on_model_response(&answer)? {
//!         AgentStep::Done(answer) | AgentStep::MaxStepsReached(answer) => return answer,
//!         AgentStep::CallTools(calls) => for call in calls {          // concurrently, in practice
//!             match mcp.call_tool(&call.server, &call.tool, call.arguments).await {
//!                 Ok(result) => agent.on_tool_result(&call.call_id, &result)?,
//!                 Err(error) => agent.on_tool_error(&call.call_id, &error)?,
//!             }
//!         },
//!     }
//! }
//! ```

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, ResourceContents, Tool};
use serde::{Deserialize, Serialize};

#[cfg(feature = "wasm")]
use tsify::Tsify;

use crate::chat::{
    AssistantMessage, ChatRequest, ChatResponse, FinishReason, Message, ToolDefinition, Usage,
};
use crate::error::ApiError;
use crate::mcp::namespace;

/// Steps (model answers) allowed when the caller does not say.
pub const DEFAULT_MAX_STEPS: u32 = 10;

/// Function names must match `^[a-zA-Z0-9_-]{1,64}$` at OpenAI-compatible providers.
const MAX_TOOL_NAME: usize = 64;

/// An MCP tool offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentTool {
    /// The MCP server that has it.
    pub server: String,
    /// The tool as the server lists it.
    pub tool: Tool,
}

/// A tool call the model asked for, to be run on an MCP server.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedCall {
    /// The model's id for the call; results are reported against it.
    pub call_id: String,
    /// The MCP server.
    pub server: String,
    /// The tool's name on that server.
    pub tool: String,
    /// The arguments the model gave (a JSON object).
    pub arguments: Option<JsonObject>,
}

/// What to do after a model answer.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentStep {
    /// Run these calls (concurrently is fine) and report each result; then ask the model again.
    /// May be empty when every call was answered without running anything (e.g. bad arguments).
    CallTools(Vec<PlannedCall>),
    /// The model answered without asking for tools: this is the final answer.
    Done(ChatResponse),
    /// The model still wants tools, but the step budget is spent: its last answer stands.
    MaxStepsReached(ChatResponse),
}

/// What a running agent reports, in order. Steps (model answers) are numbered from 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// More of the model's answer text.
    TextDelta {
        /// The step it belongs to.
        step: u32,
        /// The new text.
        text: String,
    },
    /// A tool call the model asked for starts (after `approve`, when given, was asked about
    /// every call of the step). Its `tool_result` follows; a refused call's says `denied`.
    ToolCallStarted {
        /// The step it belongs to.
        step: u32,
        /// The model's id for the call.
        call_id: String,
        /// The MCP server.
        server: String,
        /// The tool's name on that server.
        tool: String,
        /// The arguments the model gave.
        #[cfg_attr(feature = "wasm", tsify(type = "Record<string, unknown>"))]
        arguments: JsonObject,
    },
    /// A tool call ended: ran (`ok`, or `error` when the tool failed), failed to run (`error`
    /// with `error`), or was refused by `approve` (`denied`).
    ToolResult {
        /// The step it belongs to.
        step: u32,
        /// The model's id for the call.
        call_id: String,
        /// The MCP server.
        server: String,
        /// The tool's name on that server.
        tool: String,
        /// How it ended.
        status: ToolCallStatus,
        /// Milliseconds from the start of the call to its end (0 when it did not run).
        duration_ms: f64,
        /// What the tool returned, when it ran.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "wasm", tsify(optional, type = "CallToolResult"))]
        result: Option<CallToolResult>,
        /// Why the call could not be made.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "wasm", tsify(optional))]
        error: Option<ApiError>,
    },
    /// The model's answer of a step is complete.
    StepFinished {
        /// The step.
        step: u32,
        /// Why the model stopped.
        finish_reason: FinishReason,
        /// How many tools it asked for.
        tool_calls: u32,
    },
    /// Token counts of a step.
    Usage {
        /// The step.
        step: u32,
        /// The counts.
        usage: Usage,
    },
    /// The run is over; nothing follows.
    Done {
        /// Why it ended.
        reason: AgentStopReason,
        /// Model answers it took.
        steps: u32,
        /// The last answer.
        message: AssistantMessage,
        /// The whole conversation, ready to continue with another user message.
        messages: Vec<Message>,
        /// Token counts summed over the steps, when the provider reported them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "wasm", tsify(optional))]
        usage: Option<Usage>,
    },
}

/// How a tool call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[serde(rename_all = "snake_case")]
pub enum ToolCallStatus {
    /// The tool ran and succeeded.
    Ok,
    /// The tool reported a failure, or the call could not be made.
    Error,
    /// The caller's `approve` refused it.
    Denied,
}

/// Why an agent run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[serde(rename_all = "snake_case")]
pub enum AgentStopReason {
    /// The model answered without asking for tools.
    Answered,
    /// The step budget was spent while the model still asked for tools.
    MaxSteps,
}

/// The loop's state: the conversation so far, the tools on offer and the calls in flight.
#[derive(Debug, Clone)]
pub struct AgentLoop {
    request: ChatRequest,
    /// `(offered name, server, tool)` for every tool on offer.
    names: Vec<(String, String, String)>,
    steps: u32,
    max_steps: u32,
    /// Calls of the current step, in the model's order, with their answers once known.
    round: Vec<(String, Option<String>)>,
}

impl AgentLoop {
    /// Starts a loop over `request` (its messages and sampling settings) offering `tools`.
    ///
    /// The request may not carry tools of its own: the loop can only run MCP tools.
    pub fn new(
        mut request: ChatRequest,
        tools: Vec<AgentTool>,
        max_steps: Option<u32>,
    ) -> Result<Self, ApiError> {
        if !request.tools.is_empty() {
            return Err(ApiError::bad_request(
                "the agent loop offers the tools of its MCP servers; `tools` must be empty",
            ));
        }
        let max_steps = max_steps.unwrap_or(DEFAULT_MAX_STEPS);
        if max_steps == 0 {
            return Err(ApiError::bad_request("`maxSteps` must be at least 1"));
        }
        request.validate()?;
        let mut names: Vec<(String, String, String)> = Vec::with_capacity(tools.len());
        for t in tools {
            let offered = unique_name(&namespace::qualify(&t.server, &t.tool.name), &names);
            request.tools.push(ToolDefinition {
                name: offered.clone(),
                description: t.tool.description.as_deref().map(str::to_owned),
                parameters: serde_json::Value::Object((*t.tool.input_schema).clone()),
            });
            names.push((offered, t.server, t.tool.name.into_owned()));
        }
        Ok(AgentLoop {
            request,
            names,
            steps: 0,
            max_steps,
            round: Vec::new(),
        })
    }

    /// The next request to send to the model.
    pub fn request(&self) -> &ChatRequest {
        &self.request
    }

    /// Model answers handled so far.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// Whether every call of the current step has its result (the next request may be sent).
    pub fn ready(&self) -> bool {
        self.round.iter().all(|(_, answer)| answer.is_some())
    }

    /// The conversation to hand back once the loop has ended with `last`: the request's
    /// messages and the last answer. Calls of an answer the budget cut short are answered as
    /// not run, so the conversation stays valid to continue.
    pub fn conversation(&self, last: &ChatResponse) -> Vec<Message> {
        let mut messages = self.request.messages.clone();
        messages.push(last.message.clone().into());
        for call in &last.message.tool_calls {
            messages.push(Message::Tool {
                tool_call_id: call.id.clone(),
                content: "error: not run: the step budget (maxSteps) was spent".to_owned(),
            });
        }
        messages
    }

    /// Takes the model's answer; says what to do next.
    pub fn on_model_response(&mut self, answer: &ChatResponse) -> Result<AgentStep, ApiError> {
        if !self.ready() {
            return Err(ApiError::internal(
                "a model answer arrived while tool calls were still running",
            ));
        }
        self.steps += 1;
        let calls = &answer.message.tool_calls;
        if calls.is_empty() {
            return Ok(AgentStep::Done(answer.clone()));
        }
        if self.steps >= self.max_steps {
            return Ok(AgentStep::MaxStepsReached(answer.clone()));
        }
        self.request.messages.push(answer.message.clone().into());
        self.round.clear();
        let mut planned = Vec::with_capacity(calls.len());
        for call in calls {
            let target = self
                .names
                .iter()
                .find(|(offered, _, _)| *offered == call.name)
                .map(|(_, server, tool)| (server.clone(), tool.clone()));
            let arguments = parse_arguments(&call.arguments);
            match (target, arguments) {
                (Some((server, tool)), Ok(arguments)) => {
                    self.round.push((call.id.clone(), None));
                    planned.push(PlannedCall {
                        call_id: call.id.clone(),
                        server,
                        tool,
                        arguments,
                    });
                }
                // The model is told what was wrong and may try again; nothing runs.
                (None, _) => self.round.push((
                    call.id.clone(),
                    Some(format!("error: there is no tool named {:?}", call.name)),
                )),
                (_, Err(why)) => self.round.push((
                    call.id.clone(),
                    Some(format!("error: the arguments are not a JSON object: {why}")),
                )),
            }
        }
        self.flush_round();
        Ok(AgentStep::CallTools(planned))
    }

    /// Reports a tool's result (a failure of the tool itself has `is_error`).
    pub fn on_tool_result(
        &mut self,
        call_id: &str,
        result: &CallToolResult,
    ) -> Result<(), ApiError> {
        let text = result_text(result);
        let text = if result.is_error == Some(true) {
            format!("error: {text}")
        } else {
            text
        };
        self.answer(call_id, text)
    }

    /// Reports that a call could not be made (server down, timeout, not found...).
    pub fn on_tool_error(&mut self, call_id: &str, error: &ApiError) -> Result<(), ApiError> {
        self.answer(call_id, format!("error: {}: {}", error.code, error.message))
    }

    /// Reports that the caller refused to run a call.
    pub fn on_tool_denied(&mut self, call_id: &str, reason: Option<&str>) -> Result<(), ApiError> {
        let text = match reason {
            Some(r) => format!("error: the user did not allow this call: {r}"),
            None => "error: the user did not allow this call".to_owned(),
        };
        self.answer(call_id, text)
    }

    fn answer(&mut self, call_id: &str, text: String) -> Result<(), ApiError> {
        let slot = self
            .round
            .iter_mut()
            .find(|(id, answer)| id == call_id && answer.is_none())
            .ok_or_else(|| ApiError::internal(format!("no tool call {call_id:?} is waiting")))?;
        slot.1 = Some(text);
        self.flush_round();
        Ok(())
    }

    /// Once every call of the step is answered, the answers join the conversation in the order
    /// the model made the calls (whatever order they finished in).
    fn flush_round(&mut self) {
        if self.round.is_empty() || !self.ready() {
            return;
        }
        for (id, answer) in self.round.drain(..) {
            self.request.messages.push(Message::Tool {
                tool_call_id: id,
                content: answer.unwrap_or_default(),
            });
        }
    }
}

/// `server__tool`, made to fit providers' function-name rules and unique among `taken`.
fn unique_name(wanted: &str, taken: &[(String, String, String)]) -> String {
    let clean: String = wanted
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_TOOL_NAME)
        .collect();
    let free = |name: &str| !taken.iter().any(|(offered, _, _)| offered == name);
    if free(&clean) {
        return clean;
    }
    (2..)
        .map(|n| {
            let suffix = format!("_{n}");
            let keep = MAX_TOOL_NAME - suffix.len();
            format!("{}{suffix}", &clean[..clean.len().min(keep)])
        })
        .find(|name| free(name))
        .unwrap_or(clean)
}

/// The model's arguments text as a JSON object (empty text means no arguments).
fn parse_arguments(text: &str) -> Result<Option<JsonObject>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    match crate::json::from_slice::<serde_json::Value>(text.as_bytes()) {
        Ok(serde_json::Value::Object(map)) => Ok(Some(map)),
        Ok(other) => Err(format!("got {}", crate::json::text(&other))),
        Err(e) => Err(e.to_string()),
    }
}

/// What the model reads of a tool result: its text, and a note for content it cannot read.
fn result_text(result: &CallToolResult) -> String {
    let mut parts: Vec<String> = result
        .content
        .iter()
        .map(|block| match block {
            ContentBlock::Text(t) => t.text.clone(),
            ContentBlock::Image(i) => format!("[image: {}]", i.mime_type),
            ContentBlock::Audio(a) => format!("[audio: {}]", a.mime_type),
            ContentBlock::Resource(r) => match &r.resource {
                ResourceContents::TextResourceContents { text, .. } => text.clone(),
                ResourceContents::BlobResourceContents { uri, .. } => format!("[resource: {uri}]"),
                #[allow(unreachable_patterns)]
                _ => "[resource]".to_owned(),
            },
            ContentBlock::ResourceLink(link) => format!("[resource link: {}]", link.uri),
            #[allow(unreachable_patterns)]
            _ => "[content]".to_owned(),
        })
        .collect();
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        parts.push(crate::json::text(structured));
    }
    parts.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{AssistantMessage, FinishReason, ToolCall};
    use serde_json::json;

    fn tool(server: &str, name: &str) -> AgentTool {
        let schema = json!({"type": "object", "properties": {"message": {"type": "string"}}});
        let tool = Tool::new(
            name.to_owned(),
            format!("{name} tool"),
            std::sync::Arc::new(schema.as_object().cloned().unwrap_or_default()),
        );
        AgentTool {
            server: server.into(),
            tool,
        }
    }

    fn start(tools: Vec<AgentTool>, max_steps: Option<u32>) -> AgentLoop {
        let request = ChatRequest {
            model: "p/m".into(),
            messages: vec![Message::user("what's up?")],
            ..Default::default()
        };
        AgentLoop::new(request, tools, max_steps).unwrap()
    }

    fn answer(text: Option<&str>, calls: &[(&str, &str, &str)]) -> ChatResponse {
        ChatResponse {
            id: "r".into(),
            model: "p/m".into(),
            message: AssistantMessage {
                content: text.map(str::to_owned),
                tool_calls: calls
                    .iter()
                    .map(|(id, name, args)| ToolCall {
                        id: (*id).into(),
                        name: (*name).into(),
                        arguments: (*args).into(),
                    })
                    .collect(),
            },
            finish_reason: if calls.is_empty() {
                FinishReason::Stop
            } else {
                FinishReason::ToolCalls
            },
            usage: None,
        }
    }

    fn tool_messages(agent: &AgentLoop) -> Vec<(String, String)> {
        agent
            .request()
            .messages
            .iter()
            .filter_map(|m| match m {
                Message::Tool {
                    tool_call_id,
                    content,
                } => Some((tool_call_id.clone(), content.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn mcp_tools_are_offered_under_namespaced_names_with_their_schemas() {
        let agent = start(
            vec![tool("everything", "echo"), tool("notes", "search")],
            None,
        );
        let offered: Vec<&str> = agent
            .request()
            .tools
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(offered, ["everything__echo", "notes__search"]);
        assert_eq!(agent.request().tools[0].parameters["type"], "object");
        assert_eq!(
            agent.request().tools[0].description.as_deref(),
            Some("echo tool")
        );
    }

    #[test]
    fn names_fit_provider_rules_and_stay_unique() {
        let long = "x".repeat(80);
        let agent = start(
            vec![
                tool("my server", "get.sum"),
                tool("my-server", "get_sum"),
                tool("a", &long),
                tool("a", &format!("{long}y")),
            ],
            None,
        );
        let offered: Vec<&str> = agent
            .request()
            .tools
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(offered[0], "my_server__get_sum");
        assert_eq!(offered[1], "my-server__get_sum");
        assert!(offered.iter().all(|n| {
            n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }));
        assert_ne!(offered[2], offered[3]);
    }

    #[test]
    fn a_tool_call_runs_and_its_result_goes_back_to_the_model() {
        let mut agent = start(vec![tool("everything", "echo")], None);
        let step = agent
            .on_model_response(&answer(
                None,
                &[("c1", "everything__echo", r#"{"message":"hi"}"#)],
            ))
            .unwrap();
        let AgentStep::CallTools(calls) = step else {
            panic!("{step:?}")
        };
        assert_eq!(calls.len(), 1);
        assert_eq!(
            (calls[0].server.as_str(), calls[0].tool.as_str()),
            ("everything", "echo")
        );
        assert_eq!(calls[0].arguments.as_ref().unwrap()["message"], "hi");
        assert!(!agent.ready());
        agent
            .on_tool_result(
                "c1",
                &CallToolResult::success(vec![ContentBlock::text("Echo: hi")]),
            )
            .unwrap();
        assert!(agent.ready());
        assert_eq!(tool_messages(&agent), [("c1".into(), "Echo: hi".into())]);
        let step = agent
            .on_model_response(&answer(Some("It said hi."), &[]))
            .unwrap();
        assert!(
            matches!(step, AgentStep::Done(a) if a.message.content.as_deref() == Some("It said hi."))
        );
        assert_eq!(agent.steps(), 2);
    }

    #[test]
    fn parallel_results_join_in_the_order_of_the_calls() {
        let mut agent = start(vec![tool("s", "a"), tool("s", "b")], None);
        let step = agent
            .on_model_response(&answer(None, &[("c1", "s__a", "{}"), ("c2", "s__b", "")]))
            .unwrap();
        assert!(
            matches!(&step, AgentStep::CallTools(c) if c.len() == 2 && c[1].arguments.is_none())
        );
        agent
            .on_tool_result(
                "c2",
                &CallToolResult::success(vec![ContentBlock::text("B")]),
            )
            .unwrap();
        assert!(
            tool_messages(&agent).is_empty(),
            "nothing joins before the whole step is answered"
        );
        agent
            .on_tool_result(
                "c1",
                &CallToolResult::success(vec![ContentBlock::text("A")]),
            )
            .unwrap();
        assert_eq!(
            tool_messages(&agent),
            [("c1".into(), "A".into()), ("c2".into(), "B".into())]
        );
        assert!(
            agent
                .on_tool_result("c1", &CallToolResult::success(vec![]))
                .is_err()
        );
    }

    #[test]
    fn the_step_budget_ends_the_loop() {
        let mut agent = start(vec![tool("s", "a")], Some(2));
        let first = agent
            .on_model_response(&answer(None, &[("c1", "s__a", "{}")]))
            .unwrap();
        assert!(matches!(first, AgentStep::CallTools(_)));
        agent
            .on_tool_result("c1", &CallToolResult::success(vec![]))
            .unwrap();
        let second = agent
            .on_model_response(&answer(None, &[("c2", "s__a", "{}")]))
            .unwrap();
        assert!(matches!(second, AgentStep::MaxStepsReached(_)));
    }

    #[test]
    fn bad_calls_are_answered_to_the_model_without_running_anything() {
        let mut agent = start(vec![tool("s", "a")], None);
        let step = agent
            .on_model_response(&answer(
                None,
                &[("c1", "s__nope", "{}"), ("c2", "s__a", "[1, 2]")],
            ))
            .unwrap();
        assert_eq!(step, AgentStep::CallTools(Vec::new()));
        assert!(agent.ready());
        let answers = tool_messages(&agent);
        assert!(
            answers[0].1.contains("no tool named \"s__nope\""),
            "{answers:?}"
        );
        assert!(answers[1].1.contains("not a JSON object"), "{answers:?}");
    }

    #[test]
    fn failures_and_refusals_reach_the_model_as_errors() {
        let mut agent = start(vec![tool("s", "a")], None);
        agent
            .on_model_response(&answer(
                None,
                &[
                    ("c1", "s__a", "{}"),
                    ("c2", "s__a", "{}"),
                    ("c3", "s__a", "{}"),
                ],
            ))
            .unwrap();
        let mut failed = CallToolResult::success(vec![ContentBlock::text("disk full")]);
        failed.is_error = Some(true);
        agent.on_tool_result("c1", &failed).unwrap();
        agent
            .on_tool_error(
                "c2",
                &ApiError::new(crate::ErrorCode::UpstreamTimeout, "too slow"),
            )
            .unwrap();
        agent.on_tool_denied("c3", Some("not now")).unwrap();
        let answers: Vec<String> = tool_messages(&agent).into_iter().map(|(_, t)| t).collect();
        assert_eq!(answers[0], "error: disk full");
        assert_eq!(answers[1], "error: upstream_timeout: too slow");
        assert!(answers[2].contains("did not allow") && answers[2].contains("not now"));
    }

    #[test]
    fn the_conversation_handed_back_can_be_continued() {
        let mut agent = start(vec![tool("s", "a")], Some(1));
        let last = answer(Some("let me look"), &[("c1", "s__a", "{}")]);
        assert!(matches!(
            agent.on_model_response(&last).unwrap(),
            AgentStep::MaxStepsReached(_)
        ));
        let messages = agent.conversation(&last);
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(
            matches!(&messages[1], Message::Assistant { tool_calls, .. } if tool_calls.len() == 1)
        );
        assert!(
            matches!(&messages[2], Message::Tool { tool_call_id, content } if tool_call_id == "c1" && content.contains("not run"))
        );
        let done = answer(Some("hi"), &[]);
        assert_eq!(start(vec![], None).conversation(&done).len(), 2);
    }

    #[test]
    fn events_have_the_documented_wire_shape() {
        let event = AgentEvent::ToolResult {
            step: 1,
            call_id: "c1".into(),
            server: "s".into(),
            tool: "a".into(),
            status: ToolCallStatus::Denied,
            duration_ms: 0.0,
            result: None,
            error: None,
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({"type": "tool_result", "step": 1, "call_id": "c1", "server": "s", "tool": "a",
                   "status": "denied", "duration_ms": 0.0})
        );
    }

    #[test]
    fn requests_with_their_own_tools_or_no_steps_are_refused() {
        let mut request = ChatRequest {
            model: "p/m".into(),
            messages: vec![Message::user("x")],
            ..Default::default()
        };
        assert!(AgentLoop::new(request.clone(), vec![], Some(0)).is_err());
        request.tools.push(ToolDefinition {
            name: "f".into(),
            description: None,
            parameters: json!({}),
        });
        assert!(AgentLoop::new(request, vec![], None).is_err());
    }
}
