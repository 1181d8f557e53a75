//! The `switchyard` command line.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use switchyard_proxy::{Config, config};
use tracing_subscriber::EnvFilter;

/// Lets browsers reach LLM APIs and MCP servers through one local proxy.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the proxy.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Configuration file (TOML); without it the proxy runs the embedded default: the mock
    /// provider, the demo MCP server and the demo page (plus OpenAI and Ollama when found).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, overriding `server.listen` (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => {
            let (config, notes) = config::embedded_default().await?;
            tracing::info!("no --config given: running the embedded default");
            for note in notes {
                tracing::info!("{note}");
            }
            config
        }
    };
    if let Some(listen) = args.listen {
        config::ensure_loopback(listen)
            .map_err(|problem| anyhow::anyhow!("--listen: {problem}"))?;
        config.server.listen = listen;
    }
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener
        .local_addr()
        .context("reading the listening address")?;
    // Scripts and tests read the real port from this line, so it must not wait in a buffer.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{addr}")?;
    stdout.flush()?;
    switchyard_proxy::serve(config, listener).await
}

/// Logs go to stderr, so that stdout carries only the `listening on` line. `RUST_LOG` overrides
/// the default: info, except rmcp's own info lines, which repeat every MCP notification with its
/// payload (user content) and are only wanted when debugging it.
fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
