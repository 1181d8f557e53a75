//! The real `switchyard` binary's audit lines: with `--log-format json` and the default filter,
//! one JSON line per chat and per tool call on stderr, with target `switchyard::audit`.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const CONTENT_MARKER: &str = "binarycontent4d2e";

/// Kills the child when the test ends, even on a failed assertion.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const CONFIG: &str = r#"
[[providers]]
name = "mock"
kind = "mock"
models = ["scripted"]
[providers.mock]
chunk_delay_ms = 1
[[providers.mock.rules]]
match = '(?i)^say (.+)$'
reply = "You asked me to say: {1}"

[[mcp_servers]]
name = "demo"
transport = "builtin"
server = "demo"
"#;

#[tokio::test]
async fn the_binary_writes_one_json_audit_line_per_chat_and_tool_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let child = Running(child);
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let chat = json!({"model": "mock/scripted",
                      "messages": [{"role": "user", "content": format!("say {CONTENT_MARKER}")}]});
    let post = |path: &str, id: &str, body: &Value| {
        client
            .post(format!("{base}{path}"))
            .header("x-request-id", id)
            .json(body)
            .send()
    };
    let answer: Value = post("/api/llm/chat", "bin-chat", &chat)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let streamed = post("/api/llm/stream", "bin-stream", &chat)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(streamed.contains("\"finish\""), "{streamed}");
    let call = json!({"server": "demo", "name": "calculate", "arguments": {"expression": "6*7"}});
    let result: Value = post("/api/mcp/tool", "bin-tool", &call)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(result["isError"], json!(false), "{result}");
    drop(child);
    let logs = logs.join().unwrap();

    let audit: Vec<Value> = logs
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap_or_else(|_| panic!("{line}")))
        .filter(|line| line["target"] == "switchyard::audit")
        .map(|line| line["fields"].clone())
        .collect();
    assert_eq!(audit.len(), 3, "{logs}");
    let by_id = |id: &str| {
        audit
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("no audit line for {id}:\n{logs}"))
    };
    let chat = by_id("bin-chat");
    assert_eq!(
        (
            &chat["kind"],
            &chat["user"],
            &chat["model"],
            &chat["outcome"]
        ),
        (
            &json!("chat"),
            &json!("anonymous"),
            &json!("mock/scripted"),
            &json!("ok")
        )
    );
    assert_eq!(chat["total_tokens"], answer["usage"]["total_tokens"]);
    let stream = by_id("bin-stream");
    assert_eq!(
        (&stream["stream"], &stream["outcome"]),
        (&json!(true), &json!("ok"))
    );
    assert!(
        stream["completion_tokens"].as_u64().is_some_and(|n| n > 0),
        "{stream}"
    );
    let tool = by_id("bin-tool");
    assert_eq!(
        (
            &tool["kind"],
            &tool["upstream"],
            &tool["tool"],
            &tool["outcome"]
        ),
        (
            &json!("tool_call"),
            &json!("demo"),
            &json!("calculate"),
            &json!("ok")
        )
    );
    assert!(tool.get("arguments").is_none(), "{tool}");
    assert!(
        !logs.contains(CONTENT_MARKER),
        "message contents are in the log"
    );
    assert!(!logs.contains("6*7"), "tool arguments are in the log");
}
