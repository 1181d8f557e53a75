//! Several instances: two `switchyard` processes behind a real nginx (Debian's, round-robin, no
//! sticky routing), sharing a session key and a real `redis-server` (`[cluster]`), in front of
//! the in-process mock provider and the built-in demo MCP server. MCP gateway sessions hop
//! between instances and survive one of them being killed, a session ended on one instance is
//! ended on both, a key's request rate holds across both, and plain requests under way when an
//! instance is killed succeed on the other after a retry.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_proxy::auth::keys;
use switchyard_tests::redis_server::RedisServer;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const NGINX: &str = "/usr/sbin/nginx";
const SESSION_KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
/// Bounds every request, so that a regression fails instead of hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A child process, killed (and reaped) when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One `switchyard serve` process.
struct Instance {
    process: Process,
    /// `127.0.0.1:PORT`.
    addr: String,
}

impl Instance {
    fn start(config: &Path) -> Instance {
        let child = Command::new(BIN)
            .args(["serve", "--config", config.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0"])
            .env("SWITCHYARD_SESSION_KEY", SESSION_KEY)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Owned before anything can fail, so that a failed start kills it.
        let mut process = Process(child);
        let stdout = process.0.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Instance { process, addr }
    }

    /// Kills the process outright (SIGKILL), as a crash would.
    fn kill(mut self) {
        self.process.0.kill().unwrap();
        self.process.0.wait().unwrap();
    }
}

/// Debian's nginx in the foreground, balancing round-robin over `upstreams`.
struct Nginx {
    _process: Process,
    base: String,
}

impl Nginx {
    fn start(dir: &Path, upstreams: &[&str]) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} missing: apt-get install nginx (cargo xtask test installs it)"
        );
        let port = free_port();
        let servers: String = upstreams
            .iter()
            .map(|addr| format!("    server {addr} max_fails=1 fail_timeout=10s;\n"))
            .collect();
        let prefix = dir.display();
        // One process (`master_process off`) that runs as the test's user; every path it
        // writes is in the test's directory.
        let conf = format!(
            r#"
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/nginx-error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/client_body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  upstream switchyard {{
{servers}    keepalive 8;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://switchyard;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_connect_timeout 2s;
      proxy_read_timeout 30s;
      add_header X-Served-By $upstream_addr always;
    }}
  }}
}}
"#
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let process = Process(
            Command::new(NGINX)
                .args(["-p", &prefix.to_string(), "-c", path.to_str().unwrap()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let addr = format!("127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return Nginx {
                    _process: process,
                    base: format!("http://{addr}"),
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default();
        panic!("nginx did not start listening on {addr}: {log}");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The keys of the test: `alice` without limits, `metered` with a request rate.
struct Keys {
    alice: String,
    metered: String,
}

/// Requests per minute of the `metered` key, across all instances.
/// Few, so that the limit is still reached at the end of the test: the rate refills one
/// request every 60 / `METERED_RPM` seconds.
const METERED_RPM: usize = 3;

/// The configuration both instances load.
fn write_config(dir: &Path, redis: &RedisServer) -> (PathBuf, Keys) {
    let (alice, alice_hash) = keys::generate().unwrap();
    let (metered, metered_hash) = keys::generate().unwrap();
    let path = dir.join("switchyard.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[providers]]
name = "mock"
kind = "mock"
models = ["m"]

[[mcp_servers]]
name = "demo"
transport = "builtin"
server = "demo"

[mcp_gateway]
session_key_env = "SWITCHYARD_SESSION_KEY"

[cluster]
redis_url = "{redis}"

[[keys]]
name = "alice"
hash = "{alice_hash}"
models = ["*"]
mcp = ["*"]

[[keys]]
name = "metered"
hash = "{metered_hash}"
models = ["*"]
mcp = []
[keys.limits]
requests_per_minute = {METERED_RPM}
"#,
            redis = redis.url()
        ),
    )
    .unwrap();
    (path, Keys { alice, metered })
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap()
}

/// An answer through nginx: status, the instance that served it and the JSON body (the last
/// `data:` line of an event stream).
struct Answer {
    status: u16,
    served_by: String,
    body: Value,
}

async fn answer_of(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let served_by = response
        .headers()
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| {
        text.lines()
            .rev()
            .filter_map(|line| line.strip_prefix("data:"))
            .find_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
            .unwrap_or(Value::Null)
    });
    Answer {
        status,
        served_by,
        body,
    }
}

/// A JSON-RPC message to the gateway through nginx, in `session` if given.
async fn mcp(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    session: Option<&str>,
    body: Value,
) -> Answer {
    let mut request = client
        .post(format!("{base}/mcp"))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    if let Some(session) = session {
        request = request
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", "2025-11-25");
    }
    answer_of(request.send().await.unwrap()).await
}

/// Opens a gateway session through nginx; its id.
async fn open_session(client: &reqwest::Client, base: &str, key: &str) -> String {
    let response = client
        .post(format!("{base}/mcp"))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "scale-out test", "version": "1"}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    drop(response.text().await);
    let initialized = mcp(
        client,
        base,
        key,
        Some(&session),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(initialized.status, 202, "{}", initialized.body);
    session
}

fn calculate(id: u64, expression: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "demo__calculate", "arguments": {"expression": expression}}})
}

fn result_text(answer: &Answer) -> String {
    answer.body["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A chat through nginx, sent again once if the instance that took it failed (a 502 from
/// nginx, or the connection lost): what a client with a retry policy does.
async fn chat_with_one_retry(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    n: u64,
) -> (Answer, bool) {
    let body =
        json!({"model": "mock/m", "messages": [{"role": "user", "content": format!("hello {n}")}]});
    let mut retried = false;
    loop {
        let sent = client
            .post(format!("{base}/api/llm/chat"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status() != 502 || retried => {
                return (answer_of(response).await, retried);
            }
            Err(error) if retried => panic!("chat {n} failed twice: {error}"),
            _ => retried = true,
        }
    }
}

/// A chat through nginx as `key`.
async fn chat(client: &reqwest::Client, base: &str, key: &str) -> Answer {
    let body = json!({"model": "mock/m", "messages": [{"role": "user", "content": "hi"}]});
    let response = client
        .post(format!("{base}/api/llm/chat"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    answer_of(response).await
}

#[tokio::test]
async fn two_instances_behind_nginx_share_sessions_and_limits_and_outlive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(None);
    let (config, keys) = write_config(dir.path(), &redis);
    let first = Instance::start(&config);
    let second = Instance::start(&config);
    let both: std::collections::BTreeSet<String> = [first.addr.clone(), second.addr.clone()].into();
    let nginx = Nginx::start(dir.path(), &[&first.addr, &second.addr]);
    let (client, base, alice) = (client(), nginx.base.clone(), keys.alice.clone());
    let session = open_session(&client, &base, &alice).await;

    // Round-robin: consecutive calls in one session land on both instances.
    let mut served_by = std::collections::BTreeSet::new();
    for id in 1..=6 {
        let answer = mcp(
            &client,
            &base,
            &alice,
            Some(&session),
            calculate(id, &format!("{id}*7")),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["id"], id, "{}", answer.body);
        assert!(
            result_text(&answer).contains(&(id * 7).to_string()),
            "{}",
            answer.body
        );
        served_by.insert(answer.served_by);
    }
    assert_eq!(served_by, both, "both instances served the one session");

    // A session its client ends on one instance is ended on both.
    let ended = open_session(&client, &base, &alice).await;
    let deleted = client
        .delete(format!("{base}/mcp"))
        .bearer_auth(&alice)
        .header("mcp-session-id", &ended)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    let mut refused_by = std::collections::BTreeSet::new();
    for id in 1..=4 {
        let answer = mcp(&client, &base, &alice, Some(&ended), calculate(id, "1+1")).await;
        assert_eq!(answer.status, 404, "{}", answer.body);
        refused_by.insert(answer.served_by);
    }
    assert_eq!(refused_by, both, "both instances know the session ended");

    // A key's request rate holds across both instances: Redis counts for all of them.
    let mut admitted_by = std::collections::BTreeSet::new();
    for n in 0..METERED_RPM {
        let answer = chat(&client, &base, &keys.metered).await;
        assert_eq!(answer.status, 200, "request {n}: {}", answer.body);
        admitted_by.insert(answer.served_by);
    }
    assert_eq!(admitted_by, both, "the metered key's requests reached both");
    let over = chat(&client, &base, &keys.metered).await;
    assert_eq!(over.status, 429, "{}", over.body);
    assert_eq!(over.body["error"]["code"], "rate_limited", "{}", over.body);

    // Chats under way while one instance is killed: each succeeds, at worst after one retry.
    let survivor = second.addr.clone();
    let load = {
        let (client, base, alice) = (client.clone(), base.clone(), alice.clone());
        tokio::spawn(async move {
            let mut retries = 0;
            for n in 0..60 {
                let (answer, retried) = chat_with_one_retry(&client, &base, &alice, n).await;
                assert_eq!(answer.status, 200, "chat {n}: {}", answer.body);
                assert_eq!(answer.body["model"], "mock/m", "chat {n}: {}", answer.body);
                assert!(
                    answer.body["message"]["content"]
                        .as_str()
                        .is_some_and(|text| !text.is_empty()),
                    "chat {n}: {}",
                    answer.body
                );
                retries += usize::from(retried);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            retries
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !load.is_finished(),
        "the kill comes while chats are under way"
    );
    first.kill();
    let retries = load.await.unwrap();
    assert!(retries <= 3, "{retries} chats needed a retry");

    // The session goes on, now always on the survivor, and the limit still holds there.
    for id in 10..=13 {
        let answer = mcp(
            &client,
            &base,
            &alice,
            Some(&session),
            calculate(id, "2^10"),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(result_text(&answer).contains("1024"), "{}", answer.body);
        assert_eq!(answer.served_by, survivor);
    }
    let still_over = chat(&client, &base, &keys.metered).await;
    assert_eq!(still_over.status, 429, "{}", still_over.body);
    assert_eq!(still_over.served_by, survivor);
}
