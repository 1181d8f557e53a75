//! Runs a scripted fake provider as a standalone process, for browser and
//! end-to-end tests that cannot link the Rust library: the OpenAI-compatible
//! one by default, or with `--kind` the Anthropic or Gemini one.
//!
//! Prints exactly one line, `listening on http://127.0.0.1:PORT`, to stdout
//! once it accepts connections, so a harness can read the port it was given.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use switchyard_tests::fake_anthropic::FakeAnthropic;
use switchyard_tests::fake_gemini::FakeGemini;
use switchyard_tests::fake_llm::{FakeLlm, FakeLlmConfig};

/// The wire format the fake speaks.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    /// OpenAI chat completions (`/v1/chat/completions`).
    Openai,
    /// Anthropic's Messages API (`/v1/messages`); `--api-key` is required.
    Anthropic,
    /// Google's Gemini API (`/v1beta/models/...`); `--api-key` is required.
    Gemini,
}

/// Deterministic LLM provider server (test equipment).
#[derive(Parser, Debug)]
#[command(name = "fake-llm", version)]
struct Args {
    /// Loopback address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Require this key (`Authorization: Bearer <KEY>`, `x-api-key`, `x-goog-api-key`).
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// Which provider to be.
    #[arg(long, value_enum, default_value = "openai")]
    kind: Kind,
    /// Answer `/v1/*` without CORS headers, so browsers refuse to call it (OpenAI kind only).
    #[arg(long)]
    no_cors: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Checked here too so a bad flag fails before anything is bound.
    anyhow::ensure!(
        args.listen.ip().is_loopback(),
        "--listen must be a loopback address, got {}",
        args.listen
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    anyhow::ensure!(
        !args.no_cors || matches!(args.kind, Kind::Openai),
        "--no-cors is only supported with --kind openai"
    );
    let key = || {
        args.api_key
            .clone()
            .context("--api-key is required for this kind")
    };
    // Held, whatever its kind, until Ctrl-C: dropping a fake stops it.
    let (server, addr): (Box<dyn std::any::Any>, SocketAddr) = match args.kind {
        Kind::Openai => {
            let config = FakeLlmConfig {
                api_key: args.api_key.clone(),
            };
            let fake = if args.no_cors {
                FakeLlm::start_on_without_cors(config, listener).await?
            } else {
                FakeLlm::start_on(config, listener).await?
            };
            let addr = fake.local_addr();
            (Box::new(fake), addr)
        }
        Kind::Anthropic => {
            let fake = FakeAnthropic::start_on(&key()?, listener).await?;
            let addr = fake.local_addr();
            (Box::new(fake), addr)
        }
        Kind::Gemini => {
            let fake = FakeGemini::start_on(&key()?, listener).await?;
            let addr = fake.local_addr();
            (Box::new(fake), addr)
        }
    };

    {
        // Harnesses block on this line; without the flush a piped stdout would
        // hold it in the buffer and the harness would wait forever.
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{addr}")?;
        stdout.flush()?;
    }

    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    drop(server);
    Ok(())
}
