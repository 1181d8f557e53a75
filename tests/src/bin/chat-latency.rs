//! Measures what the proxy adds to a chat request: the same upstream is called directly and
//! through the proxy, interleaved one by one so drift (CPU frequency, caches, other load) hits both
//! sides alike, and the two latency distributions are compared.
//!
//! Used by `bench/chat_overhead.sh`; prints a summary and writes JSON.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use clap::Parser;
use serde_json::json;
use switchyard_tests::latency;

/// Direct-vs-proxy latency of non-streamed chat completions.
#[derive(Parser, Debug)]
#[command(name = "chat-latency")]
struct Args {
    /// The upstream's OpenAI-compatible base URL (`http://127.0.0.1:PORT/v1`).
    #[arg(long)]
    upstream: String,
    /// The upstream's API key.
    #[arg(long)]
    upstream_key: Option<String>,
    /// The proxy's origin (`http://127.0.0.1:PORT`).
    #[arg(long)]
    proxy: String,
    /// The provider name the proxy knows the upstream by.
    #[arg(long, default_value = "fake")]
    provider: String,
    /// Model name at the upstream.
    #[arg(long, default_value = "echo")]
    model: String,
    /// Measured requests per side.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Unmeasured requests per side first (connection set-up, allocator warm-up).
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// Where to write the JSON result.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

struct Side {
    url: String,
    body: String,
    auth: Option<String>,
    samples: Vec<Duration>,
}

impl Side {
    async fn once(&mut self, client: &reqwest::Client, record: bool) -> anyhow::Result<()> {
        let mut req = client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(self.body.clone());
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        let started = Instant::now();
        let resp = req
            .send()
            .await
            .with_context(|| format!("POST {}", self.url))?;
        let status = resp.status();
        let body = resp.bytes().await?;
        let took = started.elapsed();
        ensure!(
            status.is_success(),
            "{} answered {status}: {}",
            self.url,
            String::from_utf8_lossy(&body)
        );
        if record {
            self.samples.push(took);
        }
        Ok(())
    }

    fn summary(&mut self) -> serde_json::Value {
        latency::summary(&mut self.samples)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.requests > 0, "--requests must be positive");
    let messages = json!([{"role": "user", "content": "hello from the latency benchmark"}]);
    let mut direct = Side {
        url: format!("{}/chat/completions", args.upstream.trim_end_matches('/')),
        body: json!({"model": args.model, "messages": messages}).to_string(),
        auth: args.upstream_key.as_ref().map(|k| format!("Bearer {k}")),
        samples: Vec::with_capacity(args.requests),
    };
    let mut proxied = Side {
        url: format!("{}/api/llm/chat", args.proxy.trim_end_matches('/')),
        body: json!({"model": format!("{}/{}", args.provider, args.model), "messages": messages})
            .to_string(),
        auth: None,
        samples: Vec::with_capacity(args.requests),
    };
    // One keep-alive connection per side, as a browser would hold.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(2)
        .build()?;
    for _ in 0..args.warmup {
        direct.once(&client, false).await?;
        proxied.once(&client, false).await?;
    }
    for _ in 0..args.requests {
        direct.once(&client, true).await?;
        proxied.once(&client, true).await?;
    }
    let d = direct.summary();
    let p = proxied.summary();
    let added = |k: &str| p[k].as_f64().unwrap_or_default() - d[k].as_f64().unwrap_or_default();
    let result = json!({
        "benchmark": "chat_overhead",
        "requests_per_side": args.requests,
        "direct": d,
        "proxy": p,
        "added_p50_us": added("p50_us"),
        "added_p99_us": added("p99_us"),
    });
    println!(
        "non-streamed chat, {} sequential requests per side (interleaved):\n  direct: p50 {:.0} µs, p99 {:.0} µs\n  proxy:  p50 {:.0} µs, p99 {:.0} µs\n  added by the proxy: p50 {:.0} µs, p99 {:.0} µs",
        args.requests,
        d["p50_us"].as_f64().unwrap_or_default(),
        d["p99_us"].as_f64().unwrap_or_default(),
        p["p50_us"].as_f64().unwrap_or_default(),
        p["p99_us"].as_f64().unwrap_or_default(),
        added("p50_us"),
        added("p99_us"),
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
