//! The client's flows against scripted servers: each test lists the answers a server gives, in
//! order, and checks the requests the client made and the outcome. Bodies are fed in chunks of
//! many sizes, so every flow is also checked for any split of the bytes.

use super::*;
use serde_json::{Value, json};

const URL: &str = "http://127.0.0.1:9/mcp";

/// One scripted HTTP answer.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Builds the answer to a request (it sees the request, to echo its id and progress token).
type Responder = Box<dyn Fn(&HttpRequest) -> Reply>;

/// A case of a table: its name and the server's answer.
type NamedAnswer = (&'static str, fn() -> Responder);

fn request_json(request: &HttpRequest) -> Value {
    serde_json::from_str(request.body.as_deref().unwrap_or("null")).unwrap()
}

fn header<'a>(request: &'a HttpRequest, name: &str) -> Option<&'a str> {
    headers::find(&request.headers, name)
}

fn response_to(request: &HttpRequest, result: &Value) -> Value {
    json!({"jsonrpc": "2.0", "id": request_json(request)["id"], "result": result})
}

fn json_result(result: Value) -> Responder {
    Box::new(move |r| Reply {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: response_to(r, &result).to_string().into_bytes(),
    })
}

/// An event stream: a priming event, the messages `before` builds, then the response.
fn sse_result(before: impl Fn(&HttpRequest) -> Vec<Value> + 'static, result: Value) -> Responder {
    Box::new(move |r| {
        let mut body = String::from("id: prime-0\nretry: 1000\ndata: \n\n: keep-alive\n\n");
        for m in before(r).into_iter().chain([response_to(r, &result)]) {
            body.push_str(&crate::sse::encode(None, &m.to_string()));
        }
        Reply {
            status: 200,
            headers: vec![("Content-Type".into(), "text/event-stream".into())],
            body: body.into_bytes(),
        }
    })
}

fn rpc_error(status: u16, code: i64, message: &str, data: Option<Value>) -> Responder {
    let message = message.to_owned();
    Box::new(move |r| {
        let mut error = json!({"code": code, "message": message});
        if let Some(d) = &data {
            error["data"] = d.clone();
        }
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: json!({"jsonrpc": "2.0", "id": request_json(r)["id"], "error": error})
                .to_string()
                .into_bytes(),
        }
    })
}

fn raw(status: u16, content_type: &str, body: &str) -> Responder {
    let (content_type, body) = (content_type.to_owned(), body.to_owned());
    Box::new(move |_| Reply {
        status,
        headers: if content_type.is_empty() {
            Vec::new()
        } else {
            vec![("content-type".into(), content_type.clone())]
        },
        body: body.clone().into_bytes(),
    })
}

fn accepted() -> Responder {
    raw(202, "", "")
}

fn with_header(responder: Responder, name: &str, value: &str) -> Responder {
    let (name, value) = (name.to_owned(), value.to_owned());
    Box::new(move |r| {
        let mut reply = responder(r);
        reply.headers.push((name.clone(), value.clone()));
        reply
    })
}

/// The TypeScript SDK's answer to anything but `initialize` on a fresh transport.
fn not_initialized() -> Responder {
    rpc_error(400, -32000, "Bad Request: Server not initialized", None)
}

fn initialize_result(version: &str) -> Value {
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": true}, "resources": {}, "prompts": {}},
        "serverInfo": {"name": "everything", "version": "1.0.0"},
        "instructions": "be nice"
    })
}

fn initialize_ok(version: &str, session: Option<&str>) -> Responder {
    let r = json_result(initialize_result(version));
    match session {
        Some(s) => with_header(r, "Mcp-Session-Id", s),
        None => r,
    }
}

fn discover_ok(versions: &[&str]) -> Responder {
    json_result(json!({
        "resultType": "complete",
        "supportedVersions": versions,
        "capabilities": {"tools": {}},
        "instructions": "stateless",
        "ttlMs": 60000,
        "cacheScope": "public",
        "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "modern", "version": "2.0.0"}}
    }))
}

fn tools_page(names: &[&str], next: Option<&str>) -> Value {
    let tools: Vec<Value> = names
        .iter()
        .map(|n| json!({"name": n, "inputSchema": {"type": "object"}}))
        .collect();
    let mut page = json!({"tools": tools});
    if let Some(c) = next {
        page["nextCursor"] = json!(c);
    }
    page
}

fn text_result(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}]})
}

/// The messages an "everything"-like server streams before a tool result: progress for the
/// request's token, and things the client must ignore.
fn noisy_progress(r: &HttpRequest) -> Vec<Value> {
    let token = request_json(r)["params"]["_meta"]["progressToken"].clone();
    let mut out = Vec::new();
    if !token.is_null() {
        out.push(json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": token, "progress": 1, "total": 3, "message": "one"}}));
    }
    out.push(json!({"jsonrpc": "2.0", "method": "notifications/message",
        "params": {"level": "info", "data": "working"}}));
    out.push(
        json!({"jsonrpc": "2.0", "id": 77, "method": "sampling/createMessage",
        "params": {"messages": [], "maxTokens": 1}}),
    );
    out.push(json!({"jsonrpc": "2.0", "method": "notifications/progress",
        "params": {"progressToken": "someone-else", "progress": 9}}));
    out.push(json!({"jsonrpc": "2.0", "id": 999, "result": {}}));
    if !token.is_null() {
        out.push(json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": token, "progress": 2, "total": 3}}));
    }
    out
}

/// What a driven call did.
struct Run<T> {
    sent: Vec<HttpRequest>,
    progress: Vec<ProgressNotificationParam>,
    outcome: Result<T, ApiError>,
}

/// Drives `call` as a runtime would, answering its requests with `replies` in order and feeding
/// each body in chunks of `split` bytes.
fn drive<T: DeserializeOwned>(
    client: &mut McpHttpClient,
    mut call: McpCall<T>,
    replies: Vec<Responder>,
    split: usize,
) -> Run<T> {
    let mut replies = replies.into_iter();
    let mut sent = Vec::new();
    let mut progress = Vec::new();
    let mut body: VecDeque<Vec<u8>> = VecDeque::new();
    for _ in 0..10_000 {
        match call.poll(client) {
            Step::Send(request) => {
                let Some(responder) = replies.next() else {
                    panic!(
                        "unexpected request {}: {}",
                        sent.len() + 1,
                        request.body.as_deref().unwrap_or("")
                    );
                };
                let reply = responder(&request);
                sent.push(request);
                call.on_response(reply.status, &reply.headers);
                body = reply
                    .body
                    .chunks(split.max(1))
                    .map(<[u8]>::to_vec)
                    .collect();
            }
            Step::Receive => match body.pop_front() {
                Some(chunk) => call.on_body(&chunk),
                None => call.on_end(),
            },
            Step::Progress(p) => progress.push(p),
            Step::Done(value) => {
                assert!(replies.next().is_none(), "a scripted answer was not used");
                return Run {
                    sent,
                    progress,
                    outcome: Ok(value),
                };
            }
            Step::Failed(error) => {
                assert!(replies.next().is_none(), "a scripted answer was not used");
                return Run {
                    sent,
                    progress,
                    outcome: Err(error),
                };
            }
        }
    }
    panic!("the call never finished");
}

const SPLITS: [usize; 6] = [1, 2, 3, 7, 64, usize::MAX];

fn client() -> McpHttpClient {
    McpHttpClient::new(URL, vec![("Authorization".into(), "Bearer t0ken".into())]).unwrap()
}

/// A client that has negotiated a session `s-1` (version 2025-11-25) with a legacy server.
fn session_client() -> McpHttpClient {
    let mut c = client();
    let call = c.connect();
    let run = drive(
        &mut c,
        call,
        vec![
            not_initialized(),
            initialize_ok("2025-11-25", Some("s-1")),
            accepted(),
        ],
        usize::MAX,
    );
    run.outcome.unwrap();
    c
}

/// A client that has discovered a stateless server.
fn stateless_client() -> McpHttpClient {
    let mut c = client();
    let call = c.connect();
    drive(&mut c, call, vec![discover_ok(&["2026-07-28"])], usize::MAX)
        .outcome
        .unwrap();
    c
}

fn err<T: std::fmt::Debug>(run: Run<T>) -> ApiError {
    run.outcome.unwrap_err()
}

#[test]
fn session_flow_negotiates_then_sends_session_headers() {
    for split in SPLITS {
        for sse in [false, true] {
            let mut c = client();
            let answer = if sse {
                sse_result(|_| Vec::new(), tools_page(&["echo"], None))
            } else {
                json_result(tools_page(&["echo"], None))
            };
            let call = c.list_tools(None);
            let run = drive(
                &mut c,
                call,
                vec![
                    not_initialized(),
                    initialize_ok("2025-11-25", Some("s-1")),
                    accepted(),
                    answer,
                ],
                split,
            );
            assert_eq!(run.outcome.unwrap().tools[0].name, "echo");
            let [discover, init, initialized, list] = &run.sent[..] else {
                panic!("{} requests", run.sent.len());
            };
            for r in &run.sent {
                assert_eq!(r.method, Method::Post);
                assert_eq!(r.url, URL);
                assert_eq!(header(r, "content-type"), Some("application/json"));
                assert_eq!(
                    header(r, "accept"),
                    Some("application/json, text/event-stream")
                );
                assert_eq!(header(r, "authorization"), Some("Bearer t0ken"));
            }
            assert_eq!(request_json(discover)["method"], "server/discover");

            let body = request_json(init);
            assert_eq!(body["method"], "initialize");
            assert_eq!(body["params"]["protocolVersion"], "2025-11-25");
            assert_eq!(body["params"]["capabilities"], json!({}));
            assert_eq!(body["params"]["clientInfo"]["name"], "switchyard");
            assert_eq!(header(init, headers::PROTOCOL_VERSION), None);
            assert_eq!(header(init, headers::SESSION_ID), None);

            assert_eq!(
                request_json(initialized),
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
            );
            for r in [initialized, list] {
                assert_eq!(header(r, headers::SESSION_ID), Some("s-1"));
                assert_eq!(header(r, headers::PROTOCOL_VERSION), Some("2025-11-25"));
                assert_eq!(header(r, headers::METHOD), None);
            }
            let body = request_json(list);
            assert_eq!(body["method"], "tools/list");
            assert_eq!(body["params"], json!({}));
            assert_eq!(c.protocol_version(), Some("2025-11-25"));
            assert_eq!(c.session_id(), Some("s-1"));
            let peer = c.peer_info().unwrap();
            assert_eq!(peer.instructions.as_deref(), Some("be nice"));
            assert!(peer.capabilities.tools.is_some());
        }
    }
}

#[test]
fn later_calls_reuse_the_negotiation_and_pass_cursors() {
    let mut c = session_client();
    let call = c.list_tools(Some("page-2".into()));
    let run = drive(
        &mut c,
        call,
        vec![json_result(tools_page(&["b"], Some("page-3")))],
        5,
    );
    assert_eq!(run.outcome.unwrap().next_cursor.as_deref(), Some("page-3"));
    assert_eq!(run.sent.len(), 1);
    assert_eq!(
        request_json(&run.sent[0])["params"],
        json!({"cursor": "page-2"})
    );

    let call = c.list_resources(Some("r2".into()));
    let run = drive(
        &mut c,
        call,
        vec![json_result(json!({"resources": [
            {"uri": "demo://a", "name": "a"}], "nextCursor": "r3"}))],
        3,
    );
    let page = run.outcome.unwrap();
    assert_eq!(
        (page.resources.len(), page.next_cursor.as_deref()),
        (1, Some("r3"))
    );
    let body = request_json(&run.sent[0]);
    assert_eq!(
        (body["method"].as_str(), &body["params"]),
        (Some("resources/list"), &json!({"cursor": "r2"}))
    );

    let call = c.list_prompts(None);
    let run = drive(
        &mut c,
        call,
        vec![json_result(json!({"prompts": [{"name": "simple"}]}))],
        2,
    );
    assert_eq!(run.outcome.unwrap().prompts[0].name, "simple");
    assert_eq!(request_json(&run.sent[0])["method"], "prompts/list");
}

#[test]
fn each_operation_sends_its_method_and_params() {
    let mut c = session_client();
    let call = c.read_resource("demo://static/1");
    let run = drive(
        &mut c,
        call,
        vec![json_result(json!({"contents": [
            {"uri": "demo://static/1", "mimeType": "text/plain", "text": "hello"}]}))],
        4,
    );
    assert_eq!(run.outcome.unwrap().contents.len(), 1);
    let body = request_json(&run.sent[0]);
    assert_eq!(body["method"], "resources/read");
    assert_eq!(body["params"], json!({"uri": "demo://static/1"}));

    let call = c.get_prompt("args", json!({"city": "Paris"}).as_object().cloned());
    let run = drive(
        &mut c,
        call,
        vec![json_result(json!({"messages": [
            {"role": "user", "content": {"type": "text", "text": "Weather in Paris?"}}]}))],
        4,
    );
    assert_eq!(run.outcome.unwrap().messages.len(), 1);
    let body = request_json(&run.sent[0]);
    assert_eq!(body["method"], "prompts/get");
    assert_eq!(
        body["params"],
        json!({"name": "args", "arguments": {"city": "Paris"}})
    );

    let call = c.call_tool("echo", json!({"message": "hi"}).as_object().cloned(), false);
    let run = drive(&mut c, call, vec![json_result(text_result("Echo: hi"))], 4);
    let result = run.outcome.unwrap();
    assert_eq!(result.content[0].as_text().unwrap().text, "Echo: hi");
    assert_eq!(
        request_json(&run.sent[0])["params"],
        json!({"name": "echo", "arguments": {"message": "hi"}})
    );
}

#[test]
fn progress_comes_in_order_before_the_result_and_noise_is_ignored() {
    for split in (1..=16).chain([64, usize::MAX]) {
        let mut c = session_client();
        let call = c.call_tool("long", None, true);
        let run = drive(
            &mut c,
            call,
            vec![sse_result(noisy_progress, text_result("done"))],
            split,
        );
        assert_eq!(
            run.outcome.unwrap().content[0].as_text().unwrap().text,
            "done"
        );
        let seen: Vec<(f64, Option<f64>, Option<&str>)> = run
            .progress
            .iter()
            .map(|p| (p.progress, p.total, p.message.as_deref()))
            .collect();
        assert_eq!(
            seen,
            vec![(1.0, Some(3.0), Some("one")), (2.0, Some(3.0), None)],
            "split {split}"
        );
        let body = request_json(&run.sent[0]);
        assert_eq!(
            body["params"]["_meta"],
            json!({"progressToken": body["id"]})
        );
    }
}

#[test]
fn without_progress_no_token_is_sent_and_no_progress_is_returned() {
    let mut c = session_client();
    let call = c.call_tool("long", None, false);
    let run = drive(
        &mut c,
        call,
        vec![sse_result(noisy_progress, text_result("done"))],
        3,
    );
    assert!(run.outcome.is_ok());
    assert!(run.progress.is_empty());
    assert_eq!(
        request_json(&run.sent[0])["params"],
        json!({"name": "long"})
    );
}

/// Properties over generated splits (proptest builds natively only).
#[cfg(not(target_arch = "wasm32"))]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any split of an event stream gives the same progress and result.
        #[test]
        fn any_split_of_a_stream_gives_the_same_steps(
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..24),
        ) {
            let mut c = session_client();
            let mut call = c.call_tool("long", None, true);
            let Step::Send(request) = call.poll(&mut c) else { panic!("no request") };
            let reply = sse_result(noisy_progress, text_result("done"))(&request);
            call.on_response(reply.status, &reply.headers);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(reply.body.len() + 1)).collect();
            points.sort_unstable();
            let mut start = 0;
            let mut progress = Vec::new();
            let mut done = false;
            for p in points.into_iter().chain([reply.body.len()]) {
                if done {
                    // The runtime stops reading once the call is over.
                    break;
                }
                call.on_body(&reply.body[start..p]);
                start = p;
                loop {
                    match call.poll(&mut c) {
                        Step::Progress(p) => progress.push(p.progress),
                        Step::Receive => break,
                        Step::Done(_) => {
                            done = true;
                            break;
                        }
                        other => panic!("{other:?}"),
                    }
                }
            }
            prop_assert_eq!(progress, vec![1.0, 2.0]);
            prop_assert!(done);
        }
    }
}

#[test]
fn an_expired_session_is_reinitialized_once_and_the_request_resent() {
    let expiries: Vec<NamedAnswer> = vec![
        ("404 without body", || raw(404, "", "")),
        ("404 Session not found", || {
            rpc_error(404, -32001, "Session not found", None)
        }),
        ("400 No valid session ID", || {
            rpc_error(
                400,
                -32000,
                "Bad Request: No valid session ID provided",
                None,
            )
        }),
        ("400 text naming the session", || {
            raw(400, "text/plain", "Invalid or missing session")
        }),
    ];
    for (case, expiry) in expiries {
        let mut c = session_client();
        let call = c.list_tools(None);
        let run = drive(
            &mut c,
            call,
            vec![
                expiry(),
                initialize_ok("2025-11-25", Some("s-2")),
                accepted(),
                json_result(tools_page(&["echo"], None)),
            ],
            3,
        );
        assert!(run.outcome.is_ok(), "{case}: {:?}", run.outcome.err());
        let [first, init, initialized, again] = &run.sent[..] else {
            panic!("{case}: {} requests", run.sent.len());
        };
        assert_eq!(header(first, headers::SESSION_ID), Some("s-1"), "{case}");
        // No new discovery: the server is known to be session-based.
        assert_eq!(request_json(init)["method"], "initialize", "{case}");
        assert_eq!(header(init, headers::SESSION_ID), None, "{case}");
        assert_eq!(header(initialized, headers::SESSION_ID), Some("s-2"));
        assert_eq!(header(again, headers::SESSION_ID), Some("s-2"));
        assert_eq!(request_json(again)["method"], "tools/list");
        assert_ne!(request_json(again)["id"], request_json(first)["id"]);
        assert_eq!(c.session_id(), Some("s-2"), "{case}");
    }
}

#[test]
fn a_session_refused_again_after_reinitializing_fails() {
    let mut c = session_client();
    let call = c.list_tools(None);
    let run = drive(
        &mut c,
        call,
        vec![
            raw(404, "", ""),
            initialize_ok("2025-11-25", Some("s-2")),
            accepted(),
            rpc_error(404, -32001, "Session not found", None),
        ],
        usize::MAX,
    );
    assert_eq!(run.sent.len(), 4);
    let e = err(run);
    assert_eq!(e.code, ErrorCode::UpstreamError);
    assert!(e.message.contains("session"), "{}", e.message);
}

#[test]
fn a_400_that_is_not_about_the_session_is_an_ordinary_error() {
    let mut c = session_client();
    let call = c.call_tool("nope", None, false);
    let run = drive(
        &mut c,
        call,
        vec![rpc_error(400, -32602, "Unknown tool: nope", None)],
        usize::MAX,
    );
    assert_eq!(run.sent.len(), 1);
    let e = err(run);
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(e.message.contains("Unknown tool: nope"));
}

#[test]
fn without_a_session_id_a_404_is_not_an_expiry() {
    let mut c = client();
    let call = c.list_tools(None);
    let run = drive(
        &mut c,
        call,
        vec![
            raw(405, "", ""),
            initialize_ok("2025-06-18", None),
            accepted(),
            raw(404, "text/plain", "Not Found"),
        ],
        usize::MAX,
    );
    let [.., initialized, list] = &run.sent[..] else {
        panic!()
    };
    for r in [initialized, list] {
        assert_eq!(header(r, headers::SESSION_ID), None);
        assert_eq!(header(r, headers::PROTOCOL_VERSION), Some("2025-06-18"));
    }
    assert_eq!(err(run).code, ErrorCode::NotFound);
}

#[test]
fn stateless_flow_discovers_then_sends_context_and_standard_headers() {
    for split in SPLITS {
        let mut c = client();
        let call = c.call_tool("echo", json!({"message": "hi"}).as_object().cloned(), true);
        let run = drive(
            &mut c,
            call,
            vec![
                discover_ok(&["2026-07-28", "2025-11-25"]),
                sse_result(noisy_progress, text_result("Echo: hi")),
            ],
            split,
        );
        assert_eq!(
            run.outcome.unwrap().content[0].as_text().unwrap().text,
            "Echo: hi"
        );
        assert_eq!(run.progress.len(), 2);
        let [discover, call] = &run.sent[..] else {
            panic!("{} requests", run.sent.len())
        };
        let body = request_json(discover);
        assert_eq!(body["method"], "server/discover");
        let meta = &body["params"]["_meta"];
        assert_eq!(
            meta["io.modelcontextprotocol/protocolVersion"],
            "2026-07-28"
        );
        assert_eq!(
            meta["io.modelcontextprotocol/clientCapabilities"],
            json!({})
        );
        assert_eq!(
            meta["io.modelcontextprotocol/clientInfo"]["name"],
            "switchyard"
        );
        assert_eq!(header(discover, headers::METHOD), Some("server/discover"));
        assert_eq!(
            header(discover, headers::PROTOCOL_VERSION),
            Some("2026-07-28")
        );

        let body = request_json(call);
        let meta = &body["params"]["_meta"];
        assert_eq!(
            meta["io.modelcontextprotocol/protocolVersion"],
            "2026-07-28"
        );
        assert_eq!(
            meta["io.modelcontextprotocol/clientCapabilities"],
            json!({})
        );
        assert!(meta["io.modelcontextprotocol/clientInfo"].is_object());
        assert_eq!(meta["progressToken"], body["id"]);
        assert_eq!(body["params"]["arguments"], json!({"message": "hi"}));
        assert_eq!(header(call, headers::PROTOCOL_VERSION), Some("2026-07-28"));
        assert_eq!(header(call, headers::METHOD), Some("tools/call"));
        assert_eq!(header(call, headers::NAME), Some("echo"));
        for r in &run.sent {
            assert_eq!(header(r, headers::SESSION_ID), None);
        }
        assert_eq!(c.protocol_version(), Some("2026-07-28"));
        assert_eq!(c.session_id(), None);
        let peer = c.peer_info().unwrap();
        assert_eq!(peer.server_info.as_ref().unwrap().name, "modern");
        assert_eq!(peer.instructions.as_deref(), Some("stateless"));
    }
}

#[test]
fn stateless_requests_name_their_target_in_mcp_name() {
    let mut c = stateless_client();
    let cases: Vec<(McpCall<Value>, &str, Option<&str>)> = vec![
        (c.list_tools(None).retype(), "tools/list", None),
        (
            c.read_resource("file:///données/a.txt").retype(),
            "resources/read",
            Some("=?base64?ZmlsZTovLy9kb25uw6llcy9hLnR4dA==?="),
        ),
        (
            c.get_prompt("simple", None).retype(),
            "prompts/get",
            Some("simple"),
        ),
        (
            c.call_tool(" padded", None, false).retype(),
            "tools/call",
            Some("=?base64?IHBhZGRlZA==?="),
        ),
    ];
    for (call, method, name) in cases {
        let run = drive(&mut c, call, vec![json_result(json!({}))], 7);
        let r = &run.sent[0];
        assert_eq!(header(r, headers::METHOD), Some(method));
        assert_eq!(header(r, headers::NAME), name, "{method}");
        let meta = &request_json(r)["params"]["_meta"];
        assert!(meta.get("progressToken").is_none());
        assert_eq!(
            meta["io.modelcontextprotocol/protocolVersion"],
            "2026-07-28"
        );
    }
}

impl<T> McpCall<T> {
    /// The same call, read as a JSON value (for tables of different operations).
    fn retype(self) -> McpCall<Value> {
        assert!(self.describe.is_none(), "connect cannot be retyped");
        McpCall {
            raw: self.raw,
            describe: None,
        }
    }
}

#[test]
fn discovery_failures_that_mean_an_older_server_fall_back_to_initialize() {
    let legacy: Vec<NamedAnswer> = vec![
        ("400 Server not initialized", not_initialized),
        ("400 Mcp-Session-Id header is required", || {
            rpc_error(
                400,
                -32000,
                "Bad Request: Mcp-Session-Id header is required",
                None,
            )
        }),
        ("404 plain", || raw(404, "text/plain", "Not Found")),
        ("405 empty", || raw(405, "", "")),
        ("406", || raw(406, "text/plain", "Not Acceptable")),
        ("200 method not found", || {
            rpc_error(200, -32601, "Method not found", None)
        }),
        ("200 invalid request", || {
            rpc_error(200, -32600, "Invalid request", None)
        }),
        ("404 method not found", || {
            rpc_error(404, -32601, "Method not found", None)
        }),
    ];
    for (case, answer) in legacy {
        let mut c = client();
        let call = c.connect();
        let run = drive(
            &mut c,
            call,
            vec![answer(), initialize_ok("2025-11-25", Some("s")), accepted()],
            2,
        );
        let peer = run.outcome.unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(
            peer.protocol_version,
            ProtocolVersion::V_2025_11_25,
            "{case}"
        );
        assert_eq!(request_json(&run.sent[1])["method"], "initialize", "{case}");
    }
}

#[test]
fn discovery_failures_that_are_not_about_the_revision_fail() {
    let cases: Vec<(&str, Responder, ErrorCode)> = vec![
        (
            "401",
            rpc_error(401, -32000, "token t0ken is wrong", None),
            ErrorCode::UpstreamUnauthorized,
        ),
        ("403", raw(403, "", ""), ErrorCode::UpstreamUnauthorized),
        (
            "429",
            with_header(raw(429, "", ""), "Retry-After", "5"),
            ErrorCode::RateLimited,
        ),
        (
            "500",
            raw(500, "text/plain", "boom"),
            ErrorCode::UpstreamError,
        ),
        (
            "503 JSON-RPC",
            rpc_error(503, -32603, "overloaded", None),
            ErrorCode::UpstreamError,
        ),
        (
            "header mismatch",
            rpc_error(400, -32020, "Mcp-Method does not match", None),
            ErrorCode::UpstreamError,
        ),
        (
            "missing capability",
            rpc_error(400, -32021, "Missing required client capability", None),
            ErrorCode::UpstreamError,
        ),
        (
            "cut stream",
            raw(200, "text/event-stream", "id: 1\ndata: \n\n"),
            ErrorCode::StreamInterrupted,
        ),
        (
            "html",
            raw(200, "text/html", "<html></html>"),
            ErrorCode::UpstreamError,
        ),
    ];
    for (case, answer, code) in cases {
        let mut c = client();
        let call = c.connect();
        let run = drive(&mut c, call, vec![answer], 3);
        assert_eq!(run.sent.len(), 1, "{case}");
        let e = err(run);
        assert_eq!(e.code, code, "{case}: {e}");
        assert!(!e.message.contains("t0ken"), "{case}: {e}");
        if case == "429" {
            assert_eq!(e.retry_after, Some(5));
        }
        assert!(c.peer_info().is_none());
    }
}

#[test]
fn unsupported_version_errors_choose_between_fallback_and_failure() {
    // The server lists an older revision this client speaks: initialize, and accept its choice.
    let mut c = client();
    let call = c.list_tools(None);
    let run = drive(
        &mut c,
        call,
        vec![
            rpc_error(
                400,
                -32022,
                "Unsupported protocol version",
                Some(json!({"supported": ["2025-06-18"], "requested": "2026-07-28"})),
            ),
            initialize_ok("2025-06-18", Some("s")),
            accepted(),
            json_result(tools_page(&[], None)),
        ],
        4,
    );
    assert!(run.outcome.is_ok());
    assert_eq!(
        request_json(&run.sent[1])["params"]["protocolVersion"],
        "2025-11-25"
    );
    assert_eq!(
        header(&run.sent[3], headers::PROTOCOL_VERSION),
        Some("2025-06-18")
    );

    // Only versions this client does not speak: fail, naming them.
    let mut c = client();
    let call = c.connect();
    let run = drive(
        &mut c,
        call,
        vec![rpc_error(
            400,
            -32022,
            "Unsupported protocol version",
            Some(json!({"supported": ["2024-11-05", "2027-01-01"], "requested": "2026-07-28"})),
        )],
        4,
    );
    let e = err(run);
    assert_eq!((e.code, e.retryable), (ErrorCode::UpstreamError, false));
    assert!(e.message.contains("2024-11-05, 2027-01-01"), "{e}");

    // A discovery result without 2026-07-28 but with an older revision: initialize.
    let mut c = client();
    let call = c.connect();
    let run = drive(
        &mut c,
        call,
        vec![
            discover_ok(&["2025-11-25"]),
            initialize_ok("2025-11-25", Some("s")),
            accepted(),
        ],
        4,
    );
    assert_eq!(run.outcome.unwrap().protocol_version.as_str(), "2025-11-25");
}

#[test]
fn initialize_answers_with_a_version_this_client_does_not_speak_fail() {
    for version in ["2025-03-26", "2024-11-05", "2026-07-28", "2099-01-01"] {
        let mut c = client();
        let call = c.connect();
        let run = drive(
            &mut c,
            call,
            vec![not_initialized(), initialize_ok(version, Some("s"))],
            4,
        );
        let e = err(run);
        assert_eq!((e.code, e.retryable), (ErrorCode::UpstreamError, false));
        assert!(e.message.contains(version), "{e}");
        assert!(c.peer_info().is_none());
    }
}

#[test]
fn initialize_errors_are_reported() {
    let mut c = client();
    let call = c.connect();
    let run = drive(
        &mut c,
        call,
        vec![
            not_initialized(),
            rpc_error(200, -32602, "Invalid params: clientInfo", None),
        ],
        4,
    );
    assert_eq!(err(run).code, ErrorCode::BadRequest);

    let mut c = client();
    let call = c.connect();
    let run = drive(
        &mut c,
        call,
        vec![
            not_initialized(),
            initialize_ok("2025-11-25", Some("s")),
            raw(500, "text/plain", "initialized went wrong"),
        ],
        4,
    );
    let e = err(run);
    assert_eq!(e.code, ErrorCode::UpstreamError);
    assert!(e.message.contains("initialized went wrong"));
}

#[test]
fn a_pinned_version_skips_what_does_not_apply_to_it() {
    // A session-based pin: no discovery; the server must answer with the pinned version.
    let mut c = client()
        .with_protocol_version(ProtocolVersion::V_2025_06_18)
        .unwrap();
    let call = c.connect();
    let run = drive(
        &mut c,
        call,
        vec![initialize_ok("2025-11-25", Some("s"))],
        4,
    );
    assert_eq!(
        request_json(&run.sent[0])["params"]["protocolVersion"],
        "2025-06-18"
    );
    assert_eq!(err(run).code, ErrorCode::UpstreamError);

    let call = c.connect();
    let run = drive(
        &mut c,
        call,
        vec![initialize_ok("2025-06-18", Some("s")), accepted()],
        4,
    );
    assert!(run.outcome.is_ok());
    assert_eq!(c.protocol_version(), Some("2025-06-18"));

    // A stateless pin never falls back.
    let mut c = client()
        .with_protocol_version(ProtocolVersion::V_2026_07_28)
        .unwrap();
    let call = c.connect();
    let run = drive(&mut c, call, vec![not_initialized()], 4);
    let e = err(run);
    assert!(e.message.contains("2026-07-28"), "{e}");

    assert!(
        client()
            .with_protocol_version(ProtocolVersion::V_2024_11_05)
            .is_err()
    );
}

#[test]
fn a_stateless_server_that_drops_the_version_is_rediscovered_once() {
    let unsupported = || {
        rpc_error(
            400,
            -32022,
            "Unsupported protocol version",
            Some(json!({"supported": ["2025-11-25"], "requested": "2026-07-28"})),
        )
    };
    let mut c = stateless_client();
    let call = c.list_tools(None);
    let run = drive(
        &mut c,
        call,
        vec![
            unsupported(),
            discover_ok(&["2026-07-28"]),
            json_result(tools_page(&["x"], None)),
        ],
        4,
    );
    assert!(run.outcome.is_ok());
    assert_eq!(request_json(&run.sent[1])["method"], "server/discover");

    let call = c.list_tools(None);
    let run = drive(
        &mut c,
        call,
        vec![unsupported(), discover_ok(&["2026-07-28"]), unsupported()],
        4,
    );
    assert_eq!(err(run).code, ErrorCode::UpstreamError);
}

#[test]
fn jsonrpc_errors_map_into_the_taxonomy() {
    let cases: Vec<(u16, i64, &str, ErrorCode)> = vec![
        (200, -32602, "Unknown tool: x", ErrorCode::BadRequest),
        (200, -32601, "Method not found", ErrorCode::NotFound),
        (200, -32002, "Resource not found", ErrorCode::NotFound),
        (200, -32603, "Internal error", ErrorCode::UpstreamError),
        (200, -32001, "Request timed out", ErrorCode::UpstreamTimeout),
        (
            500,
            -32603,
            "Internal server error",
            ErrorCode::UpstreamError,
        ),
        (404, -32601, "Method not found", ErrorCode::NotFound),
        (408, -32000, "slow", ErrorCode::UpstreamTimeout),
        (413, -32000, "too big", ErrorCode::PayloadTooLarge),
        (
            403,
            -32000,
            "key t0ken lacks scope",
            ErrorCode::UpstreamUnauthorized,
        ),
    ];
    for stateless in [false, true] {
        for (status, code, message, expected) in &cases {
            let mut c = if stateless {
                stateless_client()
            } else {
                session_client()
            };
            let call = c.call_tool("x", None, false);
            let run = drive(
                &mut c,
                call,
                vec![rpc_error(*status, *code, message, None)],
                5,
            );
            let e = err(run);
            assert_eq!(e.code, *expected, "{status} {code}: {e}");
            assert!(!e.message.contains("t0ken"));
        }
    }
}

#[test]
fn answers_that_are_not_mcp_fail_clearly() {
    let cases: Vec<(&str, Responder, ErrorCode, &str)> = vec![
        (
            "plain 502",
            raw(502, "text/plain", "bad gateway"),
            ErrorCode::UpstreamError,
            "bad gateway",
        ),
        (
            "html 500",
            raw(500, "text/html", "<html><body>oops</body></html>"),
            ErrorCode::UpstreamError,
            "server error",
        ),
        (
            "429",
            with_header(
                raw(429, "application/json", "{\"error\":\"slow down\"}"),
                "retry-after",
                "2",
            ),
            ErrorCode::RateLimited,
            "slow down",
        ),
        (
            "html 200",
            raw(200, "text/html", "<html></html>"),
            ErrorCode::UpstreamError,
            "text/html",
        ),
        (
            "empty json",
            raw(200, "application/json", ""),
            ErrorCode::StreamInterrupted,
            "ended",
        ),
        (
            "cut stream",
            raw(
                200,
                "text/event-stream",
                "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\ndata: {\"jsonrpc\"",
            ),
            ErrorCode::StreamInterrupted,
            "ended",
        ),
        (
            "garbage event",
            raw(200, "text/event-stream", "data: hello\n\n"),
            ErrorCode::UpstreamError,
            "not JSON-RPC",
        ),
        (
            "input required",
            json_result(json!({"resultType": "input_required", "inputRequests": {}})),
            ErrorCode::UpstreamError,
            "input_required",
        ),
        (
            "wrong shape",
            json_result(json!({"tools": "none"})),
            ErrorCode::UpstreamError,
            "tools/list result is unreadable",
        ),
        (
            "202 to a request",
            accepted(),
            ErrorCode::StreamInterrupted,
            "ended",
        ),
    ];
    for (case, answer, code, needle) in cases {
        let mut c = session_client();
        let call = c.list_tools(None);
        let run = drive(&mut c, call, vec![answer], 6);
        let e = err(run);
        assert_eq!(e.code, code, "{case}: {e}");
        assert!(e.message.contains(needle), "{case}: {e}");
        if case == "429" {
            assert_eq!(e.retry_after, Some(2));
        }
        if case == "html 500" {
            assert!(!e.message.contains("<html>"));
        }
    }
}

#[test]
fn cancelling_a_session_request_yields_notifications_cancelled() {
    let mut c = session_client();
    let mut call = c.call_tool("long", None, true);
    let Step::Send(request) = call.poll(&mut c) else {
        panic!()
    };
    let id = request_json(&request)["id"].clone();
    call.on_response(200, &[("content-type".into(), "text/event-stream".into())]);
    assert!(matches!(call.poll(&mut c), Step::Receive));

    let notice = call.cancel(&c, Some("user gave up".into())).unwrap();
    assert_eq!(
        request_json(&notice),
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
               "params": {"requestId": id, "reason": "user gave up"}})
    );
    assert_eq!(header(&notice, headers::SESSION_ID), Some("s-1"));
    assert_eq!(
        header(&notice, headers::PROTOCOL_VERSION),
        Some("2025-11-25")
    );
    assert_eq!(header(&notice, "authorization"), Some("Bearer t0ken"));
    match call.poll(&mut c) {
        Step::Failed(e) => assert_eq!(e.code, ErrorCode::Aborted),
        other => panic!("{other:?}"),
    }
    // Bytes arriving after the cancellation change nothing.
    call.on_body(b"data: {}\n\n");
    assert!(matches!(call.poll(&mut c), Step::Failed(e) if e.code == ErrorCode::Internal));

    // Without a reason, the field is left out.
    let mut call = c.list_tools(None);
    let _ = call.poll(&mut c);
    let notice = call.cancel(&c, None).unwrap();
    assert!(request_json(&notice)["params"].get("reason").is_none());
}

#[test]
fn cancelling_has_nothing_to_send_when_stateless_negotiating_or_answered() {
    // Stateless: closing the response is the cancellation.
    let mut c = stateless_client();
    let mut call = c.call_tool("long", None, true);
    assert!(matches!(call.poll(&mut c), Step::Send(_)));
    assert!(call.cancel(&c, Some("x".into())).is_none());
    assert!(matches!(call.poll(&mut c), Step::Failed(e) if e.code == ErrorCode::Aborted));

    // During negotiation (initialize must never be cancelled).
    let mut c = client();
    let mut call = c.list_tools(None);
    assert!(matches!(call.poll(&mut c), Step::Send(_)));
    assert!(call.cancel(&c, None).is_none());

    // Once the answer is in, the request is no longer running.
    let mut c = session_client();
    let mut call = c.list_tools(None);
    let Step::Send(request) = call.poll(&mut c) else {
        panic!()
    };
    let reply = json_result(tools_page(&[], None))(&request);
    call.on_response(reply.status, &reply.headers);
    call.on_body(&reply.body);
    call.on_end();
    assert!(call.cancel(&c, None).is_none());
}

#[test]
fn close_deletes_the_session_and_the_next_call_initializes_again() {
    let mut c = session_client();
    let delete = c.close().unwrap();
    assert_eq!(SessionDelete::METHOD, "DELETE");
    assert_eq!(delete.url, URL);
    assert_eq!(
        headers::find(&delete.headers, headers::SESSION_ID),
        Some("s-1")
    );
    assert_eq!(
        headers::find(&delete.headers, headers::PROTOCOL_VERSION),
        Some("2025-11-25")
    );
    assert_eq!(
        headers::find(&delete.headers, "authorization"),
        Some("Bearer t0ken")
    );
    assert!(!format!("{delete:?}").contains("s-1"));
    assert_eq!((c.session_id(), c.protocol_version()), (None, None));
    assert!(c.close().is_none());

    let call = c.list_tools(None);
    let run = drive(
        &mut c,
        call,
        vec![
            initialize_ok("2025-11-25", Some("s-2")),
            accepted(),
            json_result(tools_page(&[], None)),
        ],
        4,
    );
    assert!(run.outcome.is_ok());
    assert_eq!(c.session_id(), Some("s-2"));

    let mut c = stateless_client();
    assert!(c.close().is_none());
}

#[test]
fn connect_completes_at_once_when_negotiated() {
    let mut c = session_client();
    let mut call = c.connect();
    match call.poll(&mut c) {
        Step::Done(peer) => {
            assert_eq!(peer.server_info.unwrap().name, "everything");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(call.poll(&mut c), Step::Failed(e) if e.code == ErrorCode::Internal));
}

/// Sends the call's next request and answers it whole.
fn feed<T: DeserializeOwned>(
    call: &mut McpCall<T>,
    c: &mut McpHttpClient,
    responder: Responder,
) -> HttpRequest {
    let Step::Send(request) = call.poll(c) else {
        panic!("expected a request")
    };
    let reply = responder(&request);
    call.on_response(reply.status, &reply.headers);
    call.on_body(&reply.body);
    call.on_end();
    request
}

#[test]
fn concurrent_first_calls_keep_the_first_negotiation() {
    let mut c = client();
    let mut a = c.list_tools(None);
    let mut b = c.list_prompts(None);
    feed(&mut a, &mut c, not_initialized());
    feed(&mut b, &mut c, not_initialized());
    feed(&mut a, &mut c, initialize_ok("2025-11-25", Some("s-a")));
    feed(&mut b, &mut c, initialize_ok("2025-11-25", Some("s-b")));
    feed(&mut a, &mut c, accepted());
    let b_initialized = feed(&mut b, &mut c, accepted());
    assert_eq!(header(&b_initialized, headers::SESSION_ID), Some("s-b"));
    let a_list = feed(&mut a, &mut c, json_result(tools_page(&[], None)));
    let b_list = feed(&mut b, &mut c, json_result(json!({"prompts": []})));
    assert_eq!(header(&a_list, headers::SESSION_ID), Some("s-a"));
    assert_eq!(header(&b_list, headers::SESSION_ID), Some("s-a"));
    assert!(matches!(a.poll(&mut c), Step::Done(_)));
    assert!(matches!(b.poll(&mut c), Step::Done(_)));
    assert_eq!(c.session_id(), Some("s-a"));
}

#[test]
fn client_construction_checks_its_inputs_and_hides_secrets() {
    assert!(McpHttpClient::new("127.0.0.1:3000/mcp", Vec::new()).is_err());
    assert!(McpHttpClient::new("http:///mcp", Vec::new()).is_err());
    assert!(McpHttpClient::new("https://example.com/mcp", Vec::new()).is_ok());
    for reserved in [
        "Mcp-Session-Id",
        "accept",
        "MCP-Protocol-Version",
        "Mcp-Method",
    ] {
        let e = McpHttpClient::new(URL, vec![(reserved.into(), "x".into())]).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest, "{reserved}");
    }
    let c = session_client();
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("t0ken") && !shown.contains("s-1"),
        "{shown}"
    );
    assert!(shown.contains("authorization"));
    let call = c.list_tools(None);
    assert!(format!("{call:?}").contains("tools/list"));
}

#[test]
fn client_info_can_be_replaced() {
    let mut c = client().with_client_info(Implementation::new("my-app", "9.9.9"));
    let call = c.connect();
    let run = drive(
        &mut c,
        call,
        vec![
            not_initialized(),
            initialize_ok("2025-11-25", None),
            accepted(),
        ],
        usize::MAX,
    );
    let meta = &request_json(&run.sent[0])["params"]["_meta"];
    assert_eq!(meta["io.modelcontextprotocol/clientInfo"]["name"], "my-app");
    assert_eq!(
        request_json(&run.sent[1])["params"]["clientInfo"],
        json!({"name": "my-app", "version": "9.9.9"})
    );
}

#[test]
fn progress_converts_to_the_proxys_tool_event() {
    let p = ProgressNotificationParam::new(ProgressToken(NumberOrString::Number(1)), 2.0)
        .with_total(4.0)
        .with_message("half");
    assert_eq!(
        McpToolEvent::from(p),
        McpToolEvent::Progress {
            progress: 2.0,
            total: Some(4.0),
            message: Some("half".into())
        }
    );
}
