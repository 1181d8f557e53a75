//! stdio upstreams: the proxy starts the configured command and speaks JSON-RPC on its stdin and
//! stdout. The child gets only the environment the configuration gives it, and it is killed when
//! its session is dropped (so also when the proxy stops).

use std::process::Stdio;

use rmcp::transport::TokioChildProcess;
use secrecy::ExposeSecret;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{ChildStderr, Command};

use super::truncate;
use crate::config::{McpServerConfig, PASSED_THROUGH_ENV};

/// Longest stderr line forwarded to the log; a server dumping binary data must not flood it.
const MAX_LOGGED_LINE: usize = 2000;

/// Starts the server process; its stderr is forwarded to the log, line by line.
pub(super) fn spawn(config: &McpServerConfig) -> std::io::Result<TokioChildProcess> {
    // The configuration was checked at start-up; a missing command cannot reach this point.
    let program = config.command.as_deref().unwrap_or_default();
    let mut command = Command::new(program);
    command.args(&config.args).kill_on_drop(true);
    if !config.inherit_env {
        // The proxy's environment holds the LLM providers' keys; a server (often third-party
        // code) sees only what it needs to run and what was configured for it.
        command.env_clear();
        for name in PASSED_THROUGH_ENV {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
    }
    for (name, value) in &config.resolved_env {
        command.env(name, value.expose_secret());
    }
    if let Some(cwd) = &config.cwd {
        command.current_dir(cwd);
    }
    let (process, stderr) = TokioChildProcess::builder(command)
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(stderr) = stderr {
        tokio::spawn(forward_stderr(config.name.clone(), stderr));
    }
    Ok(process)
}

/// A server's stderr is its log: keep it, attributed to the server, in the proxy's log.
async fn forward_stderr(server: String, stderr: ChildStderr) {
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                let line = truncate(line.trim_end(), MAX_LOGGED_LINE);
                tracing::info!(target: "switchyard_proxy::mcp::stderr", %server, "{line}");
            }
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%server, %error, "stopped reading the MCP server's stderr");
                return;
            }
        }
    }
}
