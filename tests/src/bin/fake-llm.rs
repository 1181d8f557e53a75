//! Runs the scripted fake OpenAI server as a standalone process, for browser
//! and end-to-end tests that cannot link the Rust library.
//!
//! Prints exactly one line, `listening on http://127.0.0.1:PORT`, to stdout
//! once it accepts connections, so a harness can read the port it was given.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use switchyard_tests::fake_llm::{FakeLlm, FakeLlmConfig};

/// Deterministic OpenAI-compatible chat-completions server (test equipment).
#[derive(Parser, Debug)]
#[command(name = "fake-llm", version)]
struct Args {
    /// Loopback address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Require `Authorization: Bearer <KEY>` on /v1 requests.
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
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
    let server = FakeLlm::start_on(
        FakeLlmConfig {
            api_key: args.api_key,
        },
        listener,
    )
    .await?;

    {
        // Harnesses block on this line; without the flush a piped stdout would
        // hold it in the buffer and the harness would wait forever.
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{}", server.local_addr())?;
        stdout.flush()?;
    }

    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    drop(server);
    Ok(())
}
