//! The agent loop in the browser, in both modes: the test upstream's `agent` model asks for the
//! tool calls its user message spells out, against the reference MCP server (`everything`) and
//! the rmcp test server (`stateless`). Every case runs directly and through the proxy.

#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;

use switchyard_sdk_wasm::{AgentOptions, AgentRunCore, Approver, ClientCore};
use switchyard_shared::agent::{AgentEvent, AgentStopReason, ToolCallStatus};
use switchyard_shared::mcp::McpToolCall;
use switchyard_shared::{ApiError, ChatRequest, ErrorCode, FinishReason, Message};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[macro_use]
mod common;
use common::{Mode, fake_provider, mcp_servers, sleep_ms};

/// Both modes know the provider `fake` and the servers `everything` and `stateless`.
fn client(mode: Mode) -> ClientCore {
    common::client(mode, vec![fake_provider()], mcp_servers())
}

/// A run of the `agent` model on `instructions`, offered the tools of `servers`.
fn run(
    client: &ClientCore,
    instructions: &str,
    servers: &[&str],
    max_steps: Option<u32>,
    signal: Option<&web_sys::AbortSignal>,
    approve: Option<Approver>,
) -> AgentRunCore {
    let request = ChatRequest {
        model: "fake/agent".into(),
        messages: vec![Message::user(instructions)],
        ..Default::default()
    };
    let options = AgentOptions {
        mcp_servers: servers.iter().map(|s| (*s).to_owned()).collect(),
        max_steps,
    };
    AgentRunCore::new(client.clone(), request, options, signal, approve).expect("a run")
}

/// Every event of a run, and how it ended.
async fn events_of(mut run: AgentRunCore) -> (Vec<AgentEvent>, Result<(), ApiError>) {
    let mut events = Vec::new();
    loop {
        match run.next().await {
            Ok(Some(event)) => events.push(event),
            Ok(None) => return (events, Ok(())),
            Err(e) => return (events, Err(e)),
        }
    }
}

fn text(events: &[AgentEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::TextDelta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// `(status, tool, result text or error code)` of each `tool_result`, in arrival order.
fn results(events: &[AgentEvent]) -> Vec<(ToolCallStatus, String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolResult {
                status,
                tool,
                result,
                error,
                ..
            } => {
                let detail = match (result, error) {
                    (Some(r), _) => r
                        .content
                        .iter()
                        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    (None, Some(e)) => e.code.as_str().to_owned(),
                    (None, None) => String::new(),
                };
                Some((*status, tool.clone(), detail))
            }
            _ => None,
        })
        .collect()
}

fn done(events: &[AgentEvent]) -> (AgentStopReason, u32, Vec<Message>) {
    match events.last() {
        Some(AgentEvent::Done {
            reason,
            steps,
            messages,
            ..
        }) => (*reason, *steps, messages.clone()),
        other => panic!("the last event is not `done`: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The cases, each run in both modes.

async fn without_tool_calls_the_answer_streams_and_the_run_ends(mode: Mode) {
    let (events, end) = events_of(run(
        &client(mode),
        "hello",
        &["stateless"],
        None,
        None,
        None,
    ))
    .await;
    end.unwrap();
    assert_eq!(text(&events), "echo: hello");
    assert!(
        events
            .iter()
            .filter(|e| matches!(e, AgentEvent::TextDelta { .. }))
            .count()
            > 1,
        "the text arrives in pieces: {events:?}"
    );
    assert!(events.iter().any(|e| matches!(
        e,
        AgentEvent::StepFinished {
            step: 1,
            finish_reason: FinishReason::Stop,
            tool_calls: 0
        }
    )));
    assert!(results(&events).is_empty());
    let (reason, steps, messages) = done(&events);
    assert_eq!(
        (reason, steps, messages.len()),
        (AgentStopReason::Answered, 1, 2)
    );
    let Some(AgentEvent::Done { usage, .. }) = events.last() else {
        unreachable!()
    };
    assert!(usage.is_some_and(|u| u.completion_tokens == 2), "{usage:?}");
}

async fn a_tool_call_runs_and_its_result_reaches_the_model(mode: Mode) {
    let instructions = r#"call stateless__echo {"message":"hi"}"#;
    let (events, end) = events_of(run(
        &client(mode),
        instructions,
        &["stateless"],
        None,
        None,
        None,
    ))
    .await;
    end.unwrap();
    let started = events
        .iter()
        .find_map(|e| match e {
            AgentEvent::ToolCallStarted {
                step,
                server,
                tool,
                arguments,
                ..
            } => Some((*step, server.clone(), tool.clone(), arguments.clone())),
            _ => None,
        })
        .expect("tool_call_started");
    assert_eq!(
        (started.0, started.1.as_str(), started.2.as_str()),
        (1, "stateless", "echo")
    );
    assert_eq!(started.3["message"], "hi");
    assert_eq!(
        results(&events),
        [(ToolCallStatus::Ok, "echo".into(), "Echo: hi".into())]
    );
    let duration = events.iter().find_map(|e| match e {
        AgentEvent::ToolResult { duration_ms, .. } => Some(*duration_ms),
        _ => None,
    });
    assert!(duration.is_some_and(|d| d >= 0.0), "{duration:?}");
    assert_eq!(text(&events), "tool said: Echo: hi");
    let (reason, steps, messages) = done(&events);
    assert_eq!((reason, steps), (AgentStopReason::Answered, 2));
    // user, the assistant's call, the tool's result, the answer
    assert_eq!(messages.len(), 4, "{messages:?}");
    assert!(matches!(&messages[2], Message::Tool { content, .. } if content == "Echo: hi"));
}

async fn parallel_calls_run_together_and_reach_the_model_in_call_order(mode: Mode) {
    // The slow call is asked for first; run together, the quick one finishes first.
    let instructions = "call stateless__slow {\"steps\":3,\"delay_ms\":150}\n\
                        call everything__echo {\"message\":\"quick\"}";
    let (events, end) = events_of(run(
        &client(mode),
        instructions,
        &["stateless", "everything"],
        None,
        None,
        None,
    ))
    .await;
    end.unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolCallStarted { tool, .. } => Some(if tool == "slow" {
                "start slow"
            } else {
                "start echo"
            }),
            AgentEvent::ToolResult { tool, .. } => Some(if tool == "slow" {
                "end slow"
            } else {
                "end echo"
            }),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["start slow", "start echo", "end echo", "end slow"]);
    assert_eq!(text(&events), "tool said: done after 3 steps | Echo: quick");
}

async fn the_step_budget_ends_a_run_that_keeps_calling(mode: Mode) {
    let instructions = "call stateless__echo {\"message\":\"again\"}\nloop";
    let (events, end) = events_of(run(
        &client(mode),
        instructions,
        &["stateless"],
        Some(3),
        None,
        None,
    ))
    .await;
    end.unwrap();
    assert_eq!(
        results(&events).len(),
        2,
        "two steps ran tools, the third was cut"
    );
    let (reason, steps, messages) = done(&events);
    assert_eq!((reason, steps), (AgentStopReason::MaxSteps, 3));
    assert!(
        matches!(messages.last(), Some(Message::Tool { content, .. }) if content.contains("not run")),
        "{messages:?}"
    );
}

async fn a_failing_tool_is_reported_and_the_model_hears_of_it(mode: Mode) {
    let instructions = r#"call stateless__add {"a":"not a number","b":1}"#;
    let (events, end) = events_of(run(
        &client(mode),
        instructions,
        &["stateless"],
        None,
        None,
        None,
    ))
    .await;
    end.unwrap();
    let results = results(&events);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].0, ToolCallStatus::Error, "{results:?}");
    let answer = text(&events);
    assert!(answer.starts_with("tool said: error: "), "{answer}");
    assert_eq!(done(&events).0, AgentStopReason::Answered);
}

async fn approve_can_refuse_a_call(mode: Mode) {
    let asked: Rc<RefCell<Vec<String>>> = Rc::default();
    let seen = Rc::clone(&asked);
    let approve: Approver = Box::new(move |call| {
        seen.borrow_mut()
            .push(format!("{}/{}", call.server, call.tool));
        let allowed = call.tool != "echo";
        Box::pin(async move { Ok(allowed) })
    });
    let instructions = "call stateless__echo {\"message\":\"no\"}\n\
                        call stateless__add {\"a\":1,\"b\":2}";
    let (events, end) = events_of(run(
        &client(mode),
        instructions,
        &["stateless"],
        None,
        None,
        Some(approve),
    ))
    .await;
    end.unwrap();
    assert_eq!(*asked.borrow(), ["stateless/echo", "stateless/add"]);
    assert_eq!(
        results(&events),
        [
            (ToolCallStatus::Denied, "echo".into(), String::new()),
            (ToolCallStatus::Ok, "add".into(), "3".into()),
        ]
    );
    assert_eq!(
        text(&events),
        "tool said: error: the user did not allow this call | 3"
    );
}

async fn aborting_mid_tool_stops_the_run_and_cancels_the_call(mode: Mode) {
    let client = client(mode);
    let cancelled_before = cancelled_calls(&client).await;
    let controller = web_sys::AbortController::new().unwrap();
    let signal = controller.signal();
    let instructions = r#"call stateless__slow {"steps":50,"delay_ms":100}"#;
    let mut run = run(
        &client,
        instructions,
        &["stateless"],
        None,
        Some(&signal),
        None,
    );
    loop {
        match run.next().await {
            Ok(Some(AgentEvent::ToolCallStarted { .. })) => break,
            Ok(Some(_)) => {}
            other => panic!("the tool call never started: {other:?}"),
        }
    }
    let abort_soon = async {
        sleep_ms(300).await;
        controller.abort();
    };
    let (next, ()) = futures::future::join(run.next(), abort_soon).await;
    assert_eq!(next.unwrap_err().code, ErrorCode::Aborted);
    assert!(
        matches!(run.next().await, Ok(None)),
        "nothing follows an abort"
    );
    // The server learns of it (the slow call's cancellation is counted), within a bounded wait.
    let mut cancelled = cancelled_before;
    for _ in 0..30 {
        cancelled = cancelled_calls(&client).await;
        if cancelled > cancelled_before {
            break;
        }
        sleep_ms(100).await;
    }
    assert!(
        cancelled > cancelled_before,
        "the server never saw the cancellation"
    );
}

async fn aborting_while_approve_is_pending_stops_the_run(mode: Mode) {
    let controller = web_sys::AbortController::new().unwrap();
    let signal = controller.signal();
    // A dialog nobody answers.
    let approve: Approver = Box::new(|_| Box::pin(std::future::pending()));
    let instructions = r#"call stateless__echo {"message":"never"}"#;
    let mut run = run(
        &client(mode),
        instructions,
        &["stateless"],
        None,
        Some(&signal),
        Some(approve),
    );
    let abort_soon = async {
        sleep_ms(300).await;
        controller.abort();
    };
    let drain = async {
        loop {
            match run.next().await {
                Ok(Some(AgentEvent::ToolCallStarted { .. } | AgentEvent::ToolResult { .. })) => {
                    panic!("the call ran without approval")
                }
                Ok(Some(_)) => {}
                other => return other,
            }
        }
    };
    let (end, ()) = futures::future::join(drain, abort_soon).await;
    assert_eq!(end.unwrap_err().code, ErrorCode::Aborted);
    assert!(matches!(run.next().await, Ok(None)));
}

async fn an_unknown_server_fails_the_run(mode: Mode) {
    let (events, end) = events_of(run(&client(mode), "hello", &["nope"], None, None, None)).await;
    assert!(events.is_empty());
    assert_eq!(end.unwrap_err().code, ErrorCode::NotFound);
}

/// How many `slow` calls the `stateless` server saw cancelled so far.
async fn cancelled_calls(client: &ClientCore) -> u64 {
    let result = client
        .mcp()
        .call_tool(
            McpToolCall {
                server: "stateless".into(),
                name: "stats".into(),
                arguments: None,
            },
            None,
            None,
        )
        .await
        .unwrap();
    let text = result.content[0].as_text().unwrap().text.clone();
    let stats: serde_json::Value = serde_json::from_str(&text).unwrap();
    stats["cancelled"].as_u64().unwrap()
}

in_both_modes!(
    without_tool_calls_the_answer_streams_and_the_run_ends,
    a_tool_call_runs_and_its_result_reaches_the_model,
    parallel_calls_run_together_and_reach_the_model_in_call_order,
    the_step_budget_ends_a_run_that_keeps_calling,
    a_failing_tool_is_reported_and_the_model_hears_of_it,
    approve_can_refuse_a_call,
    aborting_mid_tool_stops_the_run_and_cancels_the_call,
    aborting_while_approve_is_pending_stops_the_run,
    an_unknown_server_fails_the_run,
);
