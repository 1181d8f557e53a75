//! The `switchyard` command line.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use switchyard_proxy::auth::keys;
use switchyard_proxy::{Config, config};
use tracing_subscriber::EnvFilter;

// Every request and stream chunk allocates; mimalloc's thread-local free lists cost far less
// than glibc's malloc, which took a sixth of the proxy's CPU time at saturation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Manages the API keys clients present.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Makes a new random API key: prints it once, with the `[[keys]]` block (its hash, never
    /// the key) to paste into the config file.
    New(NewKeyArgs),
}

#[derive(Debug, Args)]
struct NewKeyArgs {
    /// The key's name: the user id of its requests in logs and metrics (letters, digits, '-',
    /// '_', '.', '@'; default "key-" and the first hex digits of its hash).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
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
        Command::Keys(KeysCommand::New(args)) => new_key(args),
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
        config::check_listen(listen, config.requires_auth())
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

/// Prints a new key and the configuration lines that admit it. The key is shown only here: the
/// configuration keeps its hash, from which it cannot be recovered.
fn new_key(args: NewKeyArgs) -> anyhow::Result<()> {
    let (key, hash) = keys::generate().context("the operating system gave no random bytes")?;
    let name = match args.name {
        Some(name) if keys::is_key_name(&name) => name,
        Some(name) => {
            anyhow::bail!("--name {name:?}: use 1 to 64 letters, digits, '-', '_', '.' or '@'")
        }
        None => format!("key-{}", &hash.to_string()["sha256:".len()..][..8]),
    };
    let mut stdout = std::io::stdout();
    write!(
        stdout,
        "New API key {name:?}; it is shown only now, the proxy keeps only its hash.\n\
         Clients send it as `Authorization: Bearer <key>`:\n\
         \n\
         {key}\n\
         \n\
         Add this to the proxy's config file, and narrow the scopes to what the client needs:\n\
         \n\
         [[keys]]\n\
         name = {name:?}\n\
         hash = \"{hash}\"\n\
         models = [\"*\"]   # \"<provider>/<model>\" globs it may use, e.g. [\"openai/*\", \"mock/demo\"]\n\
         mcp = [\"*\"]      # \"<server>/<tool>\" globs it may call, e.g. [\"demo/*\"]\n\
         # [keys.limits]  # optional: requests_per_minute, concurrent_streams, tokens_per_minute\n"
    )?;
    stdout.flush()?;
    Ok(())
}

/// Logs go to stderr, so that stdout carries only the `listening on` line. `RUST_LOG` overrides
/// the default: info, except rmcp's own info lines, which repeat every MCP notification with its
/// payload (user content) and are only wanted when debugging it.
///
/// Each line is written before the request that caused it is answered: the audit lines are in
/// this log, and a line queued for a writer thread would be lost if the process were killed.
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
