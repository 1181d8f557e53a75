//! The real `switchyard` binary: start-up errors, a served health check, and what it logs.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// Kills the child when the test ends, even on a failed assertion.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_to_end(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A start-up error must end the process at once; never let a regression hang the suite.
    for _ in 0..200 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("switchyard did not exit within 10 s");
}

#[test]
fn a_broken_config_fails_naming_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        "[[providers]]\nname = \"local\"\nkind = \"openai\"\nbase_url = \"ftp://127.0.0.1/v1\"\n",
    )
    .unwrap();
    let out = run_to_end(&["serve", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("providers[0].base_url"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
}

#[test]
fn a_missing_key_variable_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    std::fs::write(
        &path,
        "[[providers]]\nname = \"local\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key_env = \"SWITCHYARD_CLI_TEST_KEY\"\n",
    )
    .unwrap();
    let out = run_to_end(&["serve", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("SWITCHYARD_CLI_TEST_KEY"), "{stderr}");
}

#[test]
fn listening_beyond_loopback_without_authentication_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.toml");
    std::fs::write(&path, "[server]\nlisten = \"0.0.0.0:3001\"\n").unwrap();
    for args in [
        vec!["serve", "--listen", "0.0.0.0:0"],
        vec!["serve", "--config", path.to_str().unwrap()],
    ] {
        let out = run_to_end(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        // The message says how to fix it: a loopback address, or a key.
        for says in [
            "0.0.0.0",
            "127.0.0.1",
            "authentication",
            "switchyard keys new",
            "[[keys]]",
            "allowed_hosts",
        ] {
            assert!(stderr.contains(says), "{args:?}: {says:?} in {stderr}");
        }
        assert!(String::from_utf8_lossy(&out.stdout).is_empty());
    }
}

/// What `switchyard keys new` printed: the key, and the `[[keys]]` block to paste.
fn new_key(name: &str) -> (String, String) {
    let out = run_to_end(&["keys", "new", "--name", name]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("sy_"))
        .unwrap_or_else(|| panic!("no key in {stdout}"))
        .to_owned();
    let block = &stdout[stdout.find("[[keys]]").expect("a [[keys]] block")..];
    assert!(
        !block.contains(&key),
        "the block holds the hash, not the key"
    );
    (key, block.to_owned())
}

#[test]
fn keys_new_prints_a_new_key_each_time() {
    let (a, block) = new_key("ci");
    let (b, _) = new_key("ci");
    assert_ne!(a, b);
    // `sy_` and 32 random bytes in unpadded base64url.
    assert_eq!(a.len(), 3 + 43, "{a}");
    assert!(block.contains("name = \"ci\""), "{block}");
    assert!(block.contains("hash = \"sha256:"), "{block}");
    let out = run_to_end(&["keys", "new", "--name", "not a name"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--name"));
}

#[tokio::test]
async fn a_new_key_admits_its_holder_and_never_reaches_the_logs() {
    let (key, block) = new_key("ci");
    let (other, _) = new_key("other");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    std::fs::write(
        &path,
        format!(
            "[[providers]]\nname = \"mock\"\nkind = \"mock\"\nmodels = [\"demo\"]\n\n\
             [[mcp_servers]]\nname = \"demo\"\ntransport = \"builtin\"\nserver = \"demo\"\n\
             serve_http = true\n\n{block}"
        ),
    )
    .unwrap();
    let (child, base, logs) = start_serving(&path, &[], &[("RUST_LOG", "trace")]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let models = client
        .get(format!("{base}/api/llm/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    assert!(models.text().await.unwrap().contains("mock/demo"));
    let answer = client
        .post(format!("{base}/api/llm/chat"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"model": "mock/demo", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let mcp = client
        .post(format!("{base}/mcp/demo"))
        .bearer_auth(&key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(mcp.status(), 200);
    // A key of another configuration, a made-up JWT, and none at all.
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNlY3JldC00Mg";
    for credential in [Some(other.as_str()), Some(jwt), None] {
        let mut request = client.get(format!("{base}/api/mcp/servers"));
        if let Some(credential) = credential {
            request = request.bearer_auth(credential);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let body = response.text().await.unwrap();
        assert!(body.contains("\"unauthorized\""), "{body}");
        assert!(!body.contains(&other) && !body.contains(jwt), "{body}");
    }
    drop(child);
    let logs = logs.join().unwrap();
    assert!(
        logs.contains("/api/mcp/servers"),
        "the proxy logged its requests:\n{logs}"
    );
    for secret in [
        key.as_str(),
        other.as_str(),
        jwt,
        &key[3..20],
        &other[3..20],
    ] {
        assert!(
            !logs.contains(secret),
            "a credential reached the logs:\n{logs}"
        );
    }
}

#[tokio::test]
async fn serves_health_on_the_announced_port() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    std::fs::write(
        &path,
        "[[providers]]\nname = \"local\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key_env = \"SWITCHYARD_CLI_TEST_KEY\"\nmodels = [\"m\"]\n",
    )
    .unwrap();
    let (child, base, logs) = start_serving(
        &path,
        &["--log-format", "json"],
        &[("SWITCHYARD_CLI_TEST_KEY", "sk-cli-test")],
    );
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    assert!(!base.ends_with(":0"), "{base}");

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), r#"{"status":"ok"}"#);
    let models = client
        .get(format!("{base}/api/llm/models"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(models.contains("local/m"), "{models}");
    assert!(
        !models.contains("sk-cli-test") && !models.contains("127.0.0.1"),
        "{models}"
    );
    drop(child);
    let logs = logs.join().unwrap();
    let first = logs.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "--log-format json writes JSON lines: {first:?}"
    );
}

/// Starts `switchyard serve` with `config`, extra `args` and `envs`; returns it, the origin it
/// announced and a handle on everything it writes to stderr (complete once it is stopped).
fn start_serving(
    config: &std::path::Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> (Running, String, std::thread::JoinHandle<String>) {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(args)
        .envs(envs.iter().copied());
    serve_with(command)
}

/// Runs `command` (a `serve` command line) on a free loopback port; see [`start_serving`].
fn serve_with(mut command: Command) -> (Running, String, std::thread::JoinHandle<String>) {
    let mut child = command
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
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
    (Running(child), base, logs)
}

#[tokio::test]
async fn keys_never_reach_the_logs_even_at_trace_level() {
    const KEY: &str = "sk-upstream-secret-7f3a";
    let fake =
        switchyard_tests::fake_llm::FakeLlm::start(switchyard_tests::fake_llm::FakeLlmConfig {
            api_key: Some(KEY.to_owned()),
        })
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs.toml");
    std::fs::write(
        &path,
        format!(
            "[[providers]]\nname = \"fake\"\nkind = \"openai\"\nbase_url = \"{}\"\napi_key_env = \"SWITCHYARD_LOG_TEST_KEY\"\n",
            fake.base_url()
        ),
    )
    .unwrap();
    let (child, base, logs) = start_serving(
        &path,
        &[],
        &[("SWITCHYARD_LOG_TEST_KEY", KEY), ("RUST_LOG", "trace")],
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let body = |model: &str| {
        format!(r#"{{"model":"fake/{model}","messages":[{{"role":"user","content":"hi"}}]}}"#)
    };
    for (route, model) in [
        ("/api/llm/chat", "echo"),
        ("/api/llm/stream", "echo"),
        ("/api/llm/chat", "fail-401"),
        ("/api/llm/stream", "fail-500"),
    ] {
        let resp = client
            .post(format!("{base}{route}"))
            .header("content-type", "application/json")
            .body(body(model))
            .send()
            .await
            .unwrap();
        let text = resp.text().await.unwrap();
        assert!(!text.contains(KEY), "{route} {model}: {text}");
    }
    // The upstream received the key, so it was in the proxy's hands while it logged at trace.
    assert_eq!(
        fake.observed().last_authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    drop(child);
    let logs = logs.join().unwrap();
    assert!(
        logs.contains("/api/llm/stream"),
        "the proxy logged its requests:\n{logs}"
    );
    assert!(!logs.contains(KEY), "a key reached the logs:\n{logs}");
    assert!(
        !logs.contains("sk-te"),
        "an upstream 401 message reached the logs:\n{logs}"
    );
}

#[test]
fn an_mcp_config_mistake_fails_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mcp.toml");
    std::fs::write(
        &path,
        "[[mcp_servers]]\nname = \"files\"\ntransport = \"stdio\"\ncommand = \"no-such-mcp-server-9c1e\"\n",
    )
    .unwrap();
    let out = run_to_end(&["serve", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("mcp_servers[0].command"), "{stderr}");
    assert!(stderr.contains("not found on PATH"), "{stderr}");
}

#[tokio::test]
async fn mcp_headers_from_the_environment_never_reach_the_logs() {
    const SECRET: &str = "Bearer mcp-header-secret-51d0";
    let upstream =
        switchyard_tests::mcp_server::HttpTestServer::start("127.0.0.1:0".parse().unwrap(), true)
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mcp.toml");
    std::fs::write(
        &path,
        format!(
            "[[mcp_servers]]\nname = \"tools\"\ntransport = \"streamable_http\"\nurl = \"{}\"\nheaders_from = {{ Authorization = \"SWITCHYARD_MCP_LOG_TEST\" }}\n",
            upstream.url()
        ),
    )
    .unwrap();
    let (child, base, logs) = start_serving(
        &path,
        &[],
        &[("SWITCHYARD_MCP_LOG_TEST", SECRET), ("RUST_LOG", "trace")],
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let response = client
        .post(format!("{base}/api/mcp/tool"))
        .header("content-type", "application/json")
        .body(r#"{"server":"tools","name":"echo","arguments":{"message":"hi"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("Echo: hi"));
    drop(child);
    let logs = logs.join().unwrap();
    assert!(logs.contains("MCP session established"), "{logs}");
    assert!(!logs.contains("mcp-header-secret"), "{logs}");
}

/// A local Ollama's model list, as `GET /api/tags` answers it.
async fn fake_ollama() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().route(
        "/api/tags",
        axum::routing::get(|| async {
            axum::Json(
                serde_json::json!({"models": [{"name": "llama3.2:latest"}, {"name": "qwen3:4b"}]}),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

// Multi-threaded: the fake Ollama must answer while the test thread waits for start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_config_the_embedded_default_serves_the_demo() {
    const KEY: &str = "sk-openai-default-test-91c2";
    let (ollama, _task) = fake_ollama().await;
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .env("OPENAI_API_KEY", KEY)
        .env("OLLAMA_HOST", ollama.to_string())
        .env("RUST_LOG", "trace");
    let (child, base, logs) = serve_with(command);
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("{base}{path}")).send();

    let models: serde_json::Value = get("/api/llm/models").await.unwrap().json().await.unwrap();
    let listed: Vec<&str> = models["providers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["models"].as_array().unwrap())
        .filter_map(|m| m.as_str())
        .collect();
    for model in [
        "mock/demo",
        "openai/gpt-4.1-mini",
        "ollama/llama3.2:latest",
        "ollama/qwen3:4b",
    ] {
        assert!(listed.contains(&model), "{model} in {listed:?}");
    }
    let servers = get("/api/mcp/servers").await.unwrap().text().await.unwrap();
    assert!(servers.contains(r#""name":"demo""#), "{servers}");
    let page = get("/").await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );

    // The mock answers through the demo tools: a real agent step, over the proxy's routes.
    let answer: serde_json::Value = client
        .post(format!("{base}/api/llm/chat"))
        .json(&serde_json::json!({
            "model": "mock/demo",
            "messages": [{"role": "user", "content": "calculate 12*(3+4)"}],
            "tools": [{"name": "demo__calculate", "parameters": {"type": "object"}}],
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["message"]["tool_calls"][0]["name"], "demo__calculate",
        "{answer}"
    );

    drop(child);
    let logs = logs.join().unwrap();
    for said in [
        "embedded default",
        "provider `openai`",
        "provider `ollama`",
        "MCP server `demo`",
    ] {
        assert!(logs.contains(said), "start-up says {said:?}: {logs}");
    }
    assert!(!logs.contains(KEY), "the OpenAI key reached the logs");
}

#[tokio::test]
async fn the_embedded_default_says_what_it_did_not_find() {
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .env_remove("OPENAI_API_KEY")
        // Port 9 (discard) on loopback: nothing answers there.
        .env("OLLAMA_HOST", "127.0.0.1:9");
    let (child, base, logs) = serve_with(command);
    let models = reqwest::get(format!("{base}/api/llm/models"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let models: serde_json::Value = serde_json::from_str(&models).unwrap();
    let names: Vec<&str> = models["providers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["mock"]);
    drop(child);
    let logs = logs.join().unwrap();
    assert!(logs.contains("no Ollama answered at 127.0.0.1:9"), "{logs}");
}

/// An RSA public key (any will do): the hardened example names a JWKS file.
const EXAMPLE_JWKS_N: &str = "7G9FbvRv5QqWMcDywBy3UuF4vz9Zg6L0EmU4mbO7zVV6rQ4W4ZXyZAiwBaziCiVU2MLGYBoWHaDMl3dD-kRMrhbZcJ_5HwwPxg3RCTmK9xVd3mhbR8vxNIIva3n1I5576Ax6KZ6WmWhv39l1hHaOeY6DrCBNRLR1iaLMcrdpbOwFm-yWw3FAsGCDQe_IT4RBYqtqMwoHmNdW-A4pmRcDtod0Y4-5neVozgjFH3eP0QToMbnYJbgSji1uVs31YDpdN_aoqVlRBDOPF9m7GamCXFMY3X9syclaYcz2NUnqlQ-5LpnjtKK3bXPpwr2A6R_Do-bcVYj8FNmew93y-VqgAQ";

#[tokio::test]
async fn the_example_configurations_start() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::json!({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
                                     "n": EXAMPLE_JWKS_N, "e": "AQAB"}]})
        .to_string(),
    )
    .unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["switchyard.example.toml", "switchyard.hardened.toml"] {
        let text = std::fs::read_to_string(root.join(name))
            .unwrap()
            .replace("/etc/switchyard/jwks.json", jwks.to_str().unwrap());
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        // `--listen` keeps the test on loopback; the files' own addresses are checked as loaded.
        let (child, base, _logs) = start_serving(
            &path,
            &[],
            &[
                ("OPENAI_API_KEY", "sk-example-config-test"),
                ("SWITCHYARD_DOCS_MCP_AUTH", "Bearer example"),
                (
                    "SWITCHYARD_SESSION_KEY",
                    "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=",
                ),
                (
                    "SWITCHYARD_TOKEN_KEY",
                    "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
                ),
            ],
        );
        let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
        assert_eq!(health.status(), 200, "{name}");
        drop(child);
    }
}

/// A word that appears only in a chat message: it must never reach the log.
const CONTENT_MARKER: &str = "binarycontent4d2e";

/// A mock model and the built-in demo MCP server, for the audit lines of the real binary.
const AUDIT_CONFIG: &str = r#"
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

/// With `--log-format json` and the default filter, one JSON line per chat and per tool call on
/// stderr, with target `switchyard::audit`, and neither contents nor arguments.
#[tokio::test]
async fn the_binary_writes_one_json_audit_line_per_chat_and_tool_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.toml");
    std::fs::write(&path, AUDIT_CONFIG).unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--config", path.to_str().unwrap()])
        .args(["--log-format", "json"])
        .env_remove("RUST_LOG");
    let (child, base, logs) = serve_with(command);

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
