//! Streaming benchmarks: what the proxy adds to a streamed chat, and what open streams cost it.
//!
//! - `upstream`: an OpenAI-compatible upstream whose streamed chunks each carry the wall-clock
//!   time at which they were handed to the HTTP server (`stamp:<unix nanos>;` in the content).
//!   The scripted fake LLM cannot say when it sent a chunk; this one can, so the forwarding delay
//!   of every single chunk can be measured rather than inferred from arrival gaps.
//! - `measure`: the same streamed chat directly and through the proxy, interleaved stream by
//!   stream, reporting time to first byte and, for stamped chunks, the delay from the upstream's
//!   write to the client's read.
//! - `hold`: opens N streams through the proxy, waits for the first event of each, prints
//!   `holding N streams` and keeps them open until SIGTERM (or `--max-hold-secs`), so a harness
//!   can read the proxy's memory meanwhile.
//!
//! Used by `bench/stream.sh` and `bench/memory.sh`. Stamps are `SystemTime` (CLOCK_REALTIME),
//! comparable across processes on one machine.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt as _;
use clap::{Parser, Subcommand};
use futures::StreamExt as _;
use serde_json::{Value, json};
use switchyard_tests::latency::percentile_us;

/// Streaming latency and open-stream probes (bench equipment).
#[derive(Parser, Debug)]
#[command(name = "stream-probe")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve stamped streamed chat completions at /v1/chat/completions.
    Upstream(UpstreamArgs),
    /// Measure time to first byte and per-chunk delay, direct and through the proxy.
    Measure(MeasureArgs),
    /// Open streams through the proxy and hold them open.
    Hold(HoldArgs),
}

#[derive(Parser, Debug)]
struct UpstreamArgs {
    /// Loopback address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Content chunks per streamed answer.
    #[arg(long, default_value_t = 20)]
    chunks: usize,
    /// Pause between chunks, in milliseconds.
    #[arg(long, default_value_t = 10)]
    delay_ms: u64,
}

#[derive(Parser, Debug)]
struct MeasureArgs {
    /// The upstream's OpenAI-compatible base URL (`http://127.0.0.1:PORT/v1`).
    #[arg(long)]
    upstream: String,
    /// The upstream's API key, if it wants one.
    #[arg(long)]
    upstream_key: Option<String>,
    /// The proxy's origin (`http://127.0.0.1:PORT`).
    #[arg(long)]
    proxy: String,
    /// The provider name the proxy knows the upstream by.
    #[arg(long)]
    provider: String,
    /// Model name at the upstream.
    #[arg(long)]
    model: String,
    /// Measured streams per side.
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Unmeasured streams per side first.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// A label for the result (which upstream this was).
    #[arg(long, default_value = "stream")]
    label: String,
    /// Where to write the JSON result.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

#[derive(Parser, Debug)]
struct HoldArgs {
    /// The proxy's origin (`http://127.0.0.1:PORT`).
    #[arg(long)]
    proxy: String,
    /// `<provider>/<model>` of an upstream model that keeps its stream open.
    #[arg(long)]
    model: String,
    /// Streams to open.
    #[arg(long)]
    count: usize,
    /// Streams being opened at once (the listen backlog is finite).
    #[arg(long, default_value_t = 128)]
    open_concurrency: usize,
    /// Give up opening after this many seconds.
    #[arg(long, default_value_t = 120)]
    open_timeout_secs: u64,
    /// Release the streams after this many seconds even without SIGTERM.
    #[arg(long, default_value_t = 300)]
    max_hold_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Upstream(args) => upstream(args).await,
        Command::Measure(args) => measure(args).await,
        Command::Hold(args) => hold(args).await,
    }
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// upstream

#[derive(Clone)]
struct Script {
    chunks: usize,
    delay: Duration,
}

async fn upstream(args: UpstreamArgs) -> anyhow::Result<()> {
    ensure!(
        args.listen.ip().is_loopback(),
        "--listen must be a loopback address, got {}",
        args.listen
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    // Streaming servers turn Nagle off; with it on, the content chunk that follows the role chunk
    // at once would wait for the first one's ACK and the delay would be the test's, not the proxy's.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let script = Script {
        chunks: args.chunks,
        delay: Duration::from_millis(args.delay_ms),
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(script);
    {
        // Harnesses block on this line; a piped stdout would otherwise hold it in the buffer.
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{addr}")?;
        stdout.flush()?;
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> Bytes {
    let chunk = json!({
        "id": "chatcmpl-stamp",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000u64,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    Bytes::from(format!("data: {chunk}\n\n"))
}

async fn completions(State(script): State<Script>, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = request["model"].as_str().unwrap_or("stamp").to_owned();
    if request["stream"] != true {
        let answer = json!({
            "id": "chatcmpl-stamp",
            "object": "chat.completion",
            "created": 1_700_000_000u64,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("stamp:{};", unix_nanos())}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        });
        return ([(CONTENT_TYPE, "application/json")], answer.to_string()).into_response();
    }
    // The role chunk and the first content chunk go out at once; then one chunk per delay. The
    // stamp is taken when the chunk is handed to hyper, which writes it straight away.
    let total = script.chunks;
    let frames = futures::stream::unfold(0usize, move |i| {
        let model = model.clone();
        let delay = script.delay;
        async move {
            if i > total + 1 {
                return None;
            }
            if i >= 2 {
                tokio::time::sleep(delay).await;
            }
            let bytes = if i == 0 {
                chunk(&model, json!({"role": "assistant", "content": ""}), None)
            } else if i <= total {
                let text = format!("stamp:{};", unix_nanos());
                chunk(&model, json!({"content": text}), None)
            } else {
                let mut end = chunk(&model, json!({}), Some("stop")).to_vec();
                end.extend_from_slice(b"data: [DONE]\n\n");
                Bytes::from(end)
            };
            Some((Ok::<_, Infallible>(bytes), i + 1))
        }
    });
    (
        [
            (CONTENT_TYPE, "text/event-stream"),
            (CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(frames),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// measure

struct Side {
    name: &'static str,
    url: String,
    body: String,
    auth: Option<String>,
    ttfb: Vec<Duration>,
    total: Vec<Duration>,
    lags: Vec<Duration>,
}

/// Every `stamp:<nanos>;` in `line`.
fn stamps(line: &[u8]) -> impl Iterator<Item = u128> + '_ {
    const MARK: &[u8] = b"stamp:";
    let mut at = 0;
    std::iter::from_fn(move || {
        while at + MARK.len() <= line.len() {
            if line[at..].starts_with(MARK) {
                let start = at + MARK.len();
                let len = line[start..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                at = start + len;
                if let Some(n) = std::str::from_utf8(&line[start..start + len])
                    .ok()
                    .and_then(|s| s.parse().ok())
                {
                    return Some(n);
                }
            } else {
                at += 1;
            }
        }
        None
    })
}

impl Side {
    async fn once(&mut self, client: &reqwest::Client, record: bool) -> anyhow::Result<()> {
        let mut req = client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .body(self.body.clone());
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        let started = Instant::now();
        let response = req
            .send()
            .await
            .with_context(|| format!("POST {}", self.url))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("{} answered {status}: {text}", self.url);
        }
        let mut body = response.bytes_stream();
        let mut first = None;
        let mut pending: Vec<u8> = Vec::new();
        let mut lags = Vec::new();
        let mut done = false;
        while let Some(piece) = body.next().await {
            let piece = piece.with_context(|| format!("reading the stream of {}", self.url))?;
            let now = unix_nanos();
            first.get_or_insert_with(|| started.elapsed());
            pending.extend_from_slice(&piece);
            // Only whole lines: a stamp split across two reads arrived with the second.
            if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
                let whole: Vec<u8> = pending.drain(..=end).collect();
                for sent in stamps(&whole) {
                    lags.push(Duration::from_nanos(
                        u64::try_from(now.saturating_sub(sent)).unwrap_or(u64::MAX),
                    ));
                }
                done |= whole.windows(6).any(|w| w == b"[DONE]")
                    || whole.windows(8).any(|w| w == b"\"finish\"");
            }
        }
        let total = started.elapsed();
        ensure!(done, "{} ended without its last event", self.url);
        if record {
            self.ttfb
                .push(first.context("the stream had no body at all")?);
            self.total.push(total);
            self.lags.extend(lags);
        }
        Ok(())
    }
}

fn summary(samples: &mut [Duration]) -> Value {
    samples.sort_unstable();
    if samples.is_empty() {
        return json!({"n": 0});
    }
    let over_1ms = samples
        .iter()
        .filter(|d| **d > Duration::from_millis(1))
        .count();
    json!({
        "n": samples.len(),
        "p50_us": percentile_us(samples, 0.50),
        "p90_us": percentile_us(samples, 0.90),
        "p99_us": percentile_us(samples, 0.99),
        "p999_us": percentile_us(samples, 0.999),
        "max_us": percentile_us(samples, 1.0),
        "share_over_1ms": over_1ms as f64 / samples.len() as f64,
    })
}

fn num(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

async fn measure(args: MeasureArgs) -> anyhow::Result<()> {
    ensure!(args.streams > 0, "--streams must be positive");
    let messages = json!([{"role": "user", "content": "stream to the benchmark"}]);
    let mut direct = Side {
        name: "direct",
        url: format!("{}/chat/completions", args.upstream.trim_end_matches('/')),
        body: json!({"model": args.model, "messages": messages, "stream": true}).to_string(),
        auth: args.upstream_key.as_ref().map(|k| format!("Bearer {k}")),
        ttfb: Vec::new(),
        total: Vec::new(),
        lags: Vec::new(),
    };
    let mut proxied = Side {
        name: "proxy",
        url: format!("{}/api/llm/stream", args.proxy.trim_end_matches('/')),
        body: json!({"model": format!("{}/{}", args.provider, args.model), "messages": messages})
            .to_string(),
        auth: None,
        ttfb: Vec::new(),
        total: Vec::new(),
        lags: Vec::new(),
    };
    let client = reqwest::Client::builder().build()?;
    for _ in 0..args.warmup {
        direct.once(&client, false).await?;
        proxied.once(&client, false).await?;
    }
    for _ in 0..args.streams {
        direct.once(&client, true).await?;
        proxied.once(&client, true).await?;
    }
    let mut sides = serde_json::Map::new();
    for side in [&mut direct, &mut proxied] {
        sides.insert(
            side.name.to_owned(),
            json!({
                "ttfb": summary(&mut side.ttfb),
                "total": summary(&mut side.total),
                "chunk_delay": summary(&mut side.lags),
            }),
        );
    }
    let added =
        |what: &str, k: &str| num(&sides["proxy"][what], k) - num(&sides["direct"][what], k);
    let result = json!({
        "benchmark": "stream",
        "label": args.label,
        "model": args.model,
        "streams_per_side": args.streams,
        "direct": sides["direct"],
        "proxy": sides["proxy"],
        "added_ttfb_p50_us": added("ttfb", "p50_us"),
        "added_ttfb_p99_us": added("ttfb", "p99_us"),
        "added_chunk_delay_p50_us": added("chunk_delay", "p50_us"),
        "added_chunk_delay_p99_us": added("chunk_delay", "p99_us"),
    });
    println!(
        "streamed chat ({}), {} streams per side (interleaved):",
        args.label, args.streams
    );
    for name in ["direct", "proxy"] {
        let s = &result[name];
        print!(
            "  {name:<7} TTFB p50 {:>7.0} µs p99 {:>7.0} µs",
            num(&s["ttfb"], "p50_us"),
            num(&s["ttfb"], "p99_us")
        );
        if s["chunk_delay"]["n"].as_u64().unwrap_or(0) > 0 {
            print!(
                " | per-chunk delay p50 {:>6.0} µs p99 {:>6.0} µs max {:>6.0} µs ({} chunks)",
                num(&s["chunk_delay"], "p50_us"),
                num(&s["chunk_delay"], "p99_us"),
                num(&s["chunk_delay"], "max_us"),
                s["chunk_delay"]["n"]
            );
        }
        println!();
    }
    println!(
        "  added by the proxy: TTFB p50 {:.0} µs p99 {:.0} µs; per-chunk p50 {:.0} µs p99 {:.0} µs",
        num(&result, "added_ttfb_p50_us"),
        num(&result, "added_ttfb_p99_us"),
        num(&result, "added_chunk_delay_p50_us"),
        num(&result, "added_chunk_delay_p99_us"),
    );
    if let Some(out) = args.out {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&out, serde_json::to_string_pretty(&result)?)?;
        println!("  written to {}", out.display());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// hold

async fn hold(args: HoldArgs) -> anyhow::Result<()> {
    ensure!(args.count > 0, "--count must be positive");
    // The harness sends SIGTERM (or the time runs out) when it has read what it needs, which
    // may be at once after the `holding` line: the handler is in place before that line.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let url = format!("{}/api/llm/stream", args.proxy.trim_end_matches('/'));
    let body = json!({
        "model": args.model,
        "messages": [{"role": "user", "content": "hold this stream open"}],
    })
    .to_string();
    let gate = Arc::new(tokio::sync::Semaphore::new(args.open_concurrency.max(1)));
    let opened = Arc::new(AtomicUsize::new(0));
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<anyhow::Result<()>>(1024);
    let started = Instant::now();
    for _ in 0..args.count {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        let (gate, ready_tx, mut release_rx) =
            (Arc::clone(&gate), ready_tx.clone(), release_rx.clone());
        let opened = Arc::clone(&opened);
        tokio::spawn(async move {
            let opening = async {
                let _slot = gate.acquire().await?;
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                ensure!(
                    response.status().is_success(),
                    "{url} answered {}",
                    response.status()
                );
                let mut body = response.bytes_stream();
                let first = body.next().await.context("the stream ended at once")??;
                ensure!(!first.is_empty(), "empty first read");
                Ok(body)
            };
            match opening.await {
                Ok(body) => {
                    opened.fetch_add(1, Ordering::Relaxed);
                    let _ = ready_tx.send(Ok(())).await;
                    // Held (not read further) until released; the body is dropped after.
                    let _ = release_rx.wait_for(|released| *released).await;
                    drop(body);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e)).await;
                }
            }
        });
    }
    drop(ready_tx);
    let deadline = Duration::from_secs(args.open_timeout_secs);
    let mut ready = 0usize;
    while ready < args.count {
        match tokio::time::timeout(deadline.saturating_sub(started.elapsed()), ready_rx.recv())
            .await
        {
            Ok(Some(Ok(()))) => ready += 1,
            Ok(Some(Err(e))) => {
                let _ = release_tx.send(true);
                return Err(e.context(format!("after {ready} streams were open")));
            }
            Ok(None) => break,
            Err(_) => {
                let _ = release_tx.send(true);
                bail!(
                    "only {ready} of {} streams opened within {deadline:?}",
                    args.count
                );
            }
        }
    }
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "holding {} streams (opened in {:.1} s)",
            opened.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64()
        )?;
        stdout.flush()?;
    }
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        () = tokio::time::sleep(Duration::from_secs(args.max_hold_secs)) => {}
    }
    let _ = release_tx.send(true);
    Ok(())
}
