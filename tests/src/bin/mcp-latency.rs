//! Measures what the proxy's MCP session pool is worth: the same tool call on the same upstream,
//! made three ways, interleaved one by one so drift (CPU frequency, caches, other load) hits all
//! alike:
//!
//! - `proxy`: `POST /api/mcp/tool` through the proxy, which keeps one session per server;
//! - `connect_per_request`: a fresh rmcp client session for every call (connect, lifecycle
//!   handshake, call, close), as a proxy without a pool would do;
//! - `direct_session`: one rmcp client session to the upstream, reused (the floor).
//!
//! Used by `bench/mcp_tool_call.sh`; prints a summary and writes JSON.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use clap::Parser;
use rmcp::RoleClient;
use rmcp::model::{CallToolRequestParams, ProtocolVersion};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};
use switchyard_tests::latency;

/// Latency of one MCP tool call: through the proxy, with a new session per call, and on a
/// reused session.
#[derive(Parser, Debug)]
#[command(name = "mcp-latency")]
struct Args {
    /// The proxy's origin (`http://127.0.0.1:PORT`).
    #[arg(long)]
    proxy: String,
    /// The name the proxy knows the upstream by.
    #[arg(long, default_value = "everything")]
    server: String,
    /// The upstream's Streamable HTTP endpoint (`http://127.0.0.1:PORT/mcp`), the one the proxy
    /// is configured with.
    #[arg(long)]
    upstream: String,
    /// The tool to call (it gets `{"message": ...}`).
    #[arg(long, default_value = "echo")]
    tool: String,
    /// Measured calls per way.
    #[arg(long, default_value_t = 1000)]
    calls: usize,
    /// Unmeasured calls per way first (connections, sessions, allocator warm-up).
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Where to write the JSON result.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// The lifecycle the proxy uses: 2026-07-28 first, `initialize` for older servers.
fn lifecycle() -> ClientLifecycleMode {
    ClientLifecycleMode::Auto {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        legacy_version: Some(ProtocolVersion::V_2025_11_25),
    }
}

type Session = RunningService<RoleClient, ()>;

async fn open_session(url: &str) -> anyhow::Result<Session> {
    let transport = StreamableHttpClientTransport::from_uri(url.to_owned());
    ().serve_with_lifecycle(transport, lifecycle())
        .await
        .with_context(|| format!("opening an MCP session with {url}"))
}

fn arguments(i: usize) -> rmcp::model::JsonObject {
    let mut map = serde_json::Map::new();
    map.insert("message".into(), json!(format!("latency probe {i}")));
    map
}

async fn call_on(session: &Session, tool: &str, i: usize) -> anyhow::Result<()> {
    let result = session
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments(i)))
        .await?;
    ensure!(result.is_error != Some(true), "{tool} failed: {result:?}");
    Ok(())
}

struct Probe {
    args: Args,
    http: reqwest::Client,
    direct: Session,
    proxy: Vec<Duration>,
    per_request: Vec<Duration>,
    reused: Vec<Duration>,
}

impl Probe {
    async fn via_proxy(&self, i: usize) -> anyhow::Result<Duration> {
        let url = format!("{}/api/mcp/tool", self.args.proxy.trim_end_matches('/'));
        let body =
            json!({"server": self.args.server, "name": self.args.tool, "arguments": arguments(i)});
        let started = Instant::now();
        let response = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let text = response.text().await?;
        let took = started.elapsed();
        ensure!(status.is_success(), "{url} answered {status}: {text}");
        let result: Value = serde_json::from_str(&text)?;
        ensure!(
            result["isError"] != true,
            "{} failed: {text}",
            self.args.tool
        );
        Ok(took)
    }

    async fn per_request(&self, i: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let session = open_session(&self.args.upstream).await?;
        call_on(&session, &self.args.tool, i).await?;
        // Closing is part of the cost: a legacy session is deleted with a request of its own.
        session.cancel().await?;
        Ok(started.elapsed())
    }

    async fn reused(&self, i: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        call_on(&self.direct, &self.args.tool, i).await?;
        Ok(started.elapsed())
    }

    async fn round(&mut self, i: usize, record: bool) -> anyhow::Result<()> {
        let a = self.via_proxy(i).await?;
        let b = self.per_request(i).await?;
        let c = self.reused(i).await?;
        if record {
            self.proxy.push(a);
            self.per_request.push(b);
            self.reused.push(c);
        }
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.calls > 0, "--calls must be positive");
    let direct = open_session(&args.upstream).await?;
    let protocol_version = direct
        .peer_info()
        .map(|info| info.protocol_version.to_string())
        .unwrap_or_default();
    // One keep-alive connection to the proxy, as a browser would hold.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()?;
    let calls = args.calls;
    let mut probe = Probe {
        proxy: Vec::with_capacity(calls),
        per_request: Vec::with_capacity(calls),
        reused: Vec::with_capacity(calls),
        args,
        http,
        direct,
    };
    for i in 0..probe.args.warmup {
        probe.round(i, false).await?;
    }
    for i in 0..calls {
        probe.round(i, true).await?;
    }
    let proxy = latency::summary(&mut probe.proxy);
    let per_request = latency::summary(&mut probe.per_request);
    let reused = latency::summary(&mut probe.reused);
    let result = json!({
        "benchmark": "mcp_tool_call",
        "tool": probe.args.tool,
        "upstream_protocol_version": protocol_version,
        "calls_per_way": calls,
        "proxy": proxy,
        "connect_per_request": per_request,
        "direct_session": reused,
    });
    let line = |name: &str, s: &Value| {
        format!(
            "  {name:<20} p50 {:>8.0} µs   p99 {:>8.0} µs",
            s["p50_us"].as_f64().unwrap_or_default(),
            s["p99_us"].as_f64().unwrap_or_default()
        )
    };
    println!(
        "MCP tool call `{}` (upstream speaks {protocol_version}), {calls} sequential calls per way (interleaved):\n{}\n{}\n{}",
        probe.args.tool,
        line("proxy (pooled)", &proxy),
        line("connect per request", &per_request),
        line("direct, reused", &reused),
    );
    if let Some(out) = &probe.args.out {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, serde_json::to_string_pretty(&result)?)?;
        println!("  written to {}", out.display());
    }
    probe.direct.cancel().await?;
    Ok(())
}
