//! MCP tool-call throughput under concurrency: CONCURRENCY callers each make one call after
//! another for a fixed time against one target, then the next target gets the same. Reports
//! calls per second, errors and latency percentiles per target.
//!
//! A target is `LABEL=KIND:URL`:
//!
//! - `switchyard:ORIGIN#SERVER`: the proxy's `POST /api/mcp/tool` (keep-alive connections);
//! - `mcp:URL`: a Streamable HTTP MCP endpoint, on one session shared by every caller (what a
//!   gateway's pooled upstream session is), negotiating 2026-07-28 where offered;
//! - `mcp-session:URL`: the same with the `initialize` handshake and a legacy session (gateways
//!   that bridge stdio servers keep one child per session only on that path).
//!
//! `mcp-latency` compares the three ways of calling sequentially; this is its throughput half,
//! and it also speaks to other gateways (anything with a Streamable HTTP endpoint). Used by
//! `bench/mcp.sh`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use rmcp::RoleClient;
use rmcp::model::{CallToolRequestParams, JsonObject, ProtocolVersion};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, Peer, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};
use switchyard_tests::latency::percentile_us;

/// Tool-call throughput of MCP gateways and servers.
#[derive(Parser, Debug)]
#[command(name = "mcp-load")]
struct Args {
    /// `LABEL=switchyard:ORIGIN#SERVER`, `LABEL=mcp:URL` or `LABEL=mcp-session:URL`; repeatable.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// The tool to call (it gets `{"message": ...}`).
    #[arg(long, default_value = "echo")]
    tool: String,
    /// Callers in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Measured seconds per target.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Unmeasured seconds per target first.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// A call taking longer than this counts as an error.
    #[arg(long, default_value_t = 30)]
    call_timeout_secs: u64,
    /// Where to write the JSON result.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

type Session = RunningService<RoleClient, ()>;

enum Target {
    Switchyard {
        http: reqwest::Client,
        url: String,
        server: String,
    },
    Mcp {
        session: Session,
    },
}

struct Parsed {
    label: String,
    kind: String,
    url: String,
}

fn parse(spec: &str) -> anyhow::Result<Parsed> {
    let (label, rest) = spec
        .split_once('=')
        .with_context(|| format!("target {spec:?} is not LABEL=KIND:URL"))?;
    let (kind, url) = rest
        .split_once(':')
        .with_context(|| format!("target {spec:?} is not LABEL=KIND:URL"))?;
    Ok(Parsed {
        label: label.to_owned(),
        kind: kind.to_owned(),
        url: url.to_owned(),
    })
}

async fn connect(target: &Parsed) -> anyhow::Result<Target> {
    match target.kind.as_str() {
        "switchyard" => {
            let (origin, server) = target
                .url
                .split_once('#')
                .context("a switchyard target is ORIGIN#SERVER")?;
            Ok(Target::Switchyard {
                http: reqwest::Client::builder().build()?,
                url: format!("{}/api/mcp/tool", origin.trim_end_matches('/')),
                server: server.to_owned(),
            })
        }
        kind @ ("mcp" | "mcp-session") => {
            let lifecycle = if kind == "mcp" {
                ClientLifecycleMode::Auto {
                    preferred_versions: vec![ProtocolVersion::V_2026_07_28],
                    legacy_version: Some(ProtocolVersion::V_2025_11_25),
                }
            } else {
                ClientLifecycleMode::Initialize
            };
            let transport = StreamableHttpClientTransport::from_uri(target.url.clone());
            let session = ()
                .serve_with_lifecycle(transport, lifecycle)
                .await
                .with_context(|| format!("opening an MCP session with {}", target.url))?;
            Ok(Target::Mcp { session })
        }
        other => bail!("unknown target kind {other:?} (switchyard, mcp or mcp-session)"),
    }
}

fn arguments(i: usize) -> JsonObject {
    let mut map = serde_json::Map::new();
    map.insert("message".into(), json!(format!("load probe {i}")));
    map
}

/// How one caller reaches the target; cheap to clone into each caller.
#[derive(Clone)]
enum Caller {
    Switchyard {
        http: reqwest::Client,
        url: String,
        server: String,
    },
    Mcp(Peer<RoleClient>),
}

impl Caller {
    async fn call(&self, tool: &str, i: usize) -> anyhow::Result<()> {
        match self {
            Caller::Switchyard { http, url, server } => {
                let body = json!({"server": server, "name": tool, "arguments": arguments(i)});
                let response = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await?;
                let status = response.status();
                let text = response.text().await?;
                ensure!(status.is_success(), "{url} answered {status}: {text}");
                let result: Value = serde_json::from_str(&text)?;
                ensure!(result["isError"] != true, "{tool} failed: {text}");
            }
            Caller::Mcp(peer) => {
                let result = peer
                    .call_tool(
                        CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments(i)),
                    )
                    .await?;
                ensure!(result.is_error != Some(true), "{tool} failed: {result:?}");
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct Tally {
    ok: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs `concurrency` callers until `for_how_long` has passed; each loop is bounded by it.
async fn run(
    caller: &Caller,
    tool: &str,
    concurrency: usize,
    for_how_long: Duration,
    call_timeout: Duration,
) -> (Tally, Duration) {
    let started = Instant::now();
    let deadline = started + for_how_long;
    let tool: Arc<str> = Arc::from(tool);
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let caller = caller.clone();
        let tool = Arc::clone(&tool);
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut i = w * 1_000_000;
            while Instant::now() < deadline {
                let t = Instant::now();
                match tokio::time::timeout(call_timeout, caller.call(&tool, i)).await {
                    Ok(Ok(())) => tally.ok.push(t.elapsed()),
                    Ok(Err(e)) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                    Err(_) => {
                        tally.errors += 1;
                        tally
                            .first_error
                            .get_or_insert_with(|| format!("no answer within {call_timeout:?}"));
                    }
                }
                i += 1;
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for worker in workers {
        match worker.await {
            Ok(t) => {
                all.ok.extend(t.ok);
                all.errors += t.errors;
                if all.first_error.is_none() {
                    all.first_error = t.first_error;
                }
            }
            Err(e) => {
                all.errors += 1;
                all.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    (all, started.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.concurrency > 0, "--concurrency must be positive");
    let call_timeout = Duration::from_secs(args.call_timeout_secs);
    let mut results = serde_json::Map::new();
    // The map is sorted by label; this keeps the order the targets were given in.
    let mut order = Vec::new();
    println!(
        "MCP tool call `{}`, {} callers, {} s per target:",
        args.tool, args.concurrency, args.duration_secs
    );
    for spec in &args.targets {
        let parsed = parse(spec)?;
        order.push(parsed.label.clone());
        // One target that cannot be reached (a peer that would not start) does not stop the rest.
        let target = match connect(&parsed).await {
            Ok(target) => target,
            Err(e) => {
                println!("  {:<24} not measured: {e:#}", parsed.label);
                results.insert(
                    parsed.label,
                    json!({"kind": parsed.kind, "error": format!("{e:#}")}),
                );
                continue;
            }
        };
        let caller = match &target {
            Target::Switchyard { http, url, server } => Caller::Switchyard {
                http: http.clone(),
                url: url.clone(),
                server: server.clone(),
            },
            Target::Mcp { session } => Caller::Mcp(session.peer().clone()),
        };
        let protocol = match &target {
            Target::Mcp { session } => session
                .peer_info()
                .map(|info| info.protocol_version.to_string()),
            Target::Switchyard { .. } => None,
        };
        let _ = run(
            &caller,
            &args.tool,
            args.concurrency,
            Duration::from_secs(args.warmup_secs),
            call_timeout,
        )
        .await;
        let (mut tally, took) = run(
            &caller,
            &args.tool,
            args.concurrency,
            Duration::from_secs(args.duration_secs),
            call_timeout,
        )
        .await;
        tally.ok.sort_unstable();
        let calls_per_s = tally.ok.len() as f64 / took.as_secs_f64();
        let entry = json!({
            "kind": parsed.kind,
            "protocol_version": protocol,
            "calls": tally.ok.len(),
            "errors": tally.errors,
            "first_error": tally.first_error,
            "seconds": took.as_secs_f64(),
            "calls_per_s": calls_per_s,
            "p50_us": percentile_us(&tally.ok, 0.50),
            "p90_us": percentile_us(&tally.ok, 0.90),
            "p99_us": percentile_us(&tally.ok, 0.99),
        });
        println!(
            "  {:<24} {:>8.0} calls/s   p50 {:>8.0} µs   p99 {:>8.0} µs   errors {}{}",
            parsed.label,
            calls_per_s,
            entry["p50_us"].as_f64().unwrap_or(f64::NAN),
            entry["p99_us"].as_f64().unwrap_or(f64::NAN),
            tally.errors,
            tally
                .first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default(),
        );
        results.insert(parsed.label, entry);
        drop(caller);
        if let Target::Mcp { session } = target {
            // A legacy session is deleted with a request of its own; a failure here says nothing
            // about the figures above.
            let _ = tokio::time::timeout(Duration::from_secs(5), session.cancel()).await;
        }
    }
    let result = json!({
        "benchmark": "mcp_throughput",
        "tool": args.tool,
        "concurrency": args.concurrency,
        "duration_secs": args.duration_secs,
        "order": order,
        "targets": results,
    });
    if let Some(out) = &args.out {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, serde_json::to_string_pretty(&result)?)?;
        println!("  written to {}", out.display());
    }
    Ok(())
}
