//! What an operator configures for an MCP server as secret (a stdio server's environment, an
//! HTTP server's headers) never reaches the proxy's log, even at trace level. Its own test binary:
//! it installs the process-wide log subscriber.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use switchyard_proxy::Config;
use switchyard_shared::paths;
use tracing_subscriber::fmt::MakeWriter;

mod common;
use common::LoopbackProxy;

const RMCP_SERVER: &str = env!("CARGO_BIN_EXE_mcp-test-server");
const ENV_SECRET: &str = "env-secret-4b1d9e";
const HEADER_SECRET: &str = "header-secret-8c2f7a";

/// Everything logged, in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The HTTP test server as its own process, so that its log (which may show the headers it
/// received) is not mixed with the proxy's.
struct HttpServer(Child);

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_http_server() -> (HttpServer, String) {
    let mut child = Command::new(RMCP_SERVER)
        .args(["--listen", "127.0.0.1:0", "--stateless"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let origin = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (HttpServer(child), format!("{origin}/mcp"))
}

#[tokio::test]
async fn configured_mcp_secrets_never_reach_the_log() {
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(log.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let (_server, url) = start_http_server();
    let toml = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        [[mcp_servers]]
        name = "stdio"
        transport = "stdio"
        command = {RMCP_SERVER:?}
        args = ["--stdio"]
        env = {{ API_TOKEN = "{ENV_SECRET}" }}
        [[mcp_servers]]
        name = "http"
        transport = "streamable_http"
        url = "{url}"
        headers = {{ Authorization = "Bearer {HEADER_SECRET}", "X-Api-Key" = "{HEADER_SECRET}" }}
        "#
    );
    let config = Config::from_toml_str(&toml, "mcp_logs test").unwrap();
    tracing::debug!(
        ?config,
        "the configuration, as a careless log line would show it"
    );
    let mut proxy = LoopbackProxy::start(config, Duration::from_secs(20)).await;
    for server in ["stdio", "http"] {
        for tool in ["echo", "slow"] {
            let body = json!({
                "server": server,
                "name": tool,
                "arguments": {"message": "hi", "steps": 2, "delay_ms": 1},
            });
            let path = if tool == "slow" {
                paths::MCP_TOOL_STREAM
            } else {
                paths::MCP_TOOL
            };
            let response = proxy.post(path, &body).await;
            assert_eq!(response.status(), 200, "{server} {tool}");
            response.bytes().await.unwrap();
        }
    }
    proxy.stop().await.unwrap();

    let log = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    assert!(
        log.contains("MCP session established"),
        "nothing was logged?\n{log}"
    );
    assert!(log.contains("TRACE"), "not at trace level?");
    for secret in [ENV_SECRET, HEADER_SECRET] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
    }
}
