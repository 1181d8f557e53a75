//! Runs the rmcp test MCP server (`switchyard_tests::mcp_server`) as a process: on stdin/stdout
//! (`--stdio`), or over Streamable HTTP (`--listen 127.0.0.1:0 [--stateless]`), where it prints
//! exactly one line, `listening on http://127.0.0.1:PORT` (the endpoint is that plus `/mcp`), once
//! it accepts connections.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use switchyard_tests::mcp_server::{HttpTestServer, TestServer, serve_stdio};

/// MCP server with deterministic tools, resources and prompts (test equipment).
#[derive(Parser, Debug)]
#[command(name = "mcp-test-server", version)]
struct Args {
    /// Serve one session on stdin/stdout.
    #[arg(long, conflicts_with_all = ["listen", "stateless"])]
    stdio: bool,
    /// Loopback address to serve Streamable HTTP on; port 0 picks a free port.
    #[arg(long, required_unless_present = "stdio")]
    listen: Option<SocketAddr>,
    /// No legacy HTTP sessions: every request stands alone (as 2026-07-28 requests always do).
    #[arg(long)]
    stateless: bool,
    /// Send no CORS headers, so browsers refuse to call it.
    #[arg(long, conflicts_with = "stdio")]
    no_cors: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let Some(listen) = args.listen else {
        // stdout carries the protocol; nothing else may be written to it.
        return serve_stdio(TestServer::new()).await;
    };
    anyhow::ensure!(
        listen.ip().is_loopback(),
        "--listen must be a loopback address, got {listen}"
    );
    let server = HttpTestServer::start_with(listen, args.stateless, !args.no_cors)
        .await
        .with_context(|| format!("serving on {listen}"))?;
    {
        // Harnesses block on this line; a piped stdout would otherwise hold it in the buffer.
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{}", server.addr())?;
        stdout.flush()?;
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    drop(server);
    Ok(())
}
