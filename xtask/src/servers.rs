//! The servers the browser suites talk to (the LLM test upstream, MCP servers, and a proxy in
//! front of them), as child processes on 127.0.0.1 that are killed when the suites end.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::run::{self, command, root};

/// The key the test upstream demands; the proxy holds it, direct-mode tests send it.
pub const UPSTREAM_KEY: &str = "test-upstream-key";
/// The key the fake Anthropic API demands, held and sent the same way.
pub const ANTHROPIC_KEY: &str = "test-anthropic-key";
/// The key the fake Gemini API demands, held and sent the same way.
pub const GEMINI_KEY: &str = "test-gemini-key";

/// The key of the second proxy, which requires authentication: the browser suite mints
/// tokens with it (`POST /api/tokens`).
pub const AUTH_PROXY_KEY: &str = "sy_browser-suite-test-key";
/// `sha256:` of [`AUTH_PROXY_KEY`], as its `[[keys]]` entry names it.
const AUTH_PROXY_KEY_HASH: &str =
    "sha256:e0b2d8d45705e31633c811a50f8aa8663d5ff1495c5f3cb9af7336062d1d673c";

/// A free TCP port on 127.0.0.1 (the listener is closed again at once).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The servers the browser suites talk to, and a proxy configured to reach all of them: the LLM
/// test upstream as provider `fake`, the fake Anthropic and Gemini APIs as providers `anthropic`
/// and `gemini`; MCP servers `everything` (the reference server over
/// Streamable HTTP), `everything-stdio` (the same over stdio, which only the proxy can reach),
/// `stateless` (an rmcp server speaking the stateless 2026-07-28 revision) and `rmcp-stdio` (the
/// rmcp server over stdio, proxy only, whose `stats` show the cancellations it was sent); and
/// for auto mode, providers `nocors` and `refused` and MCP server `nocors`, which a page cannot
/// reach itself but the proxy can.
pub struct TestServers {
    children: Vec<Child>,
    /// The upstream's OpenAI-compatible base URL, `http://127.0.0.1:PORT/v1`.
    pub upstream_url: String,
    /// The fake Anthropic API's base URL, `http://127.0.0.1:PORT/v1`.
    pub anthropic_url: String,
    /// The fake Gemini API's base URL, `http://127.0.0.1:PORT/v1beta`.
    pub gemini_url: String,
    /// The reference MCP server's Streamable HTTP endpoint.
    pub mcp_everything_url: String,
    /// The stateless rmcp server's endpoint.
    pub mcp_stateless_url: String,
    /// A second OpenAI-compatible test upstream that sends no CORS headers (and wants no key),
    /// so a page cannot call it: provider `nocors` of the proxy.
    pub nocors_upstream_url: String,
    /// The stateless rmcp server again, without CORS headers: MCP server `nocors` of the proxy.
    pub mcp_nocors_url: String,
    /// A base URL on a port nothing listens on; the proxy's provider `refused` is the CORS-less
    /// upstream under that name, as if the page could not reach what the proxy can.
    pub refused_url: String,
    /// The proxy's origin, `http://127.0.0.1:PORT`.
    pub proxy_url: String,
    /// A proxy in front of the same LLM upstream that requires [`AUTH_PROXY_KEY`], and mints
    /// tokens for it.
    pub auth_proxy_url: String,
}

/// `node -r <loopback preload> <server-everything>`: the reference server binds every interface by
/// itself; the preload keeps it on 127.0.0.1.
fn everything_command(mode: &str) -> Result<(std::path::PathBuf, Vec<String>)> {
    let script = root().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    if !script.exists() {
        bail!(
            "{} is missing: run `npm ci` at the repository root",
            script.display()
        );
    }
    let preload = root().join("tests/mcp/loopback.cjs");
    let args = vec![
        "-r".to_owned(),
        preload.to_string_lossy().into_owned(),
        script.to_string_lossy().into_owned(),
        mode.to_owned(),
    ];
    Ok((std::path::PathBuf::from("node"), args))
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
fn wait_for_port(port: u16, child: &mut Child, log: &std::path::Path) -> Result<()> {
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let logged = std::fs::read_to_string(log).unwrap_or_default();
            bail!("the server exited ({status}) before listening; its log:\n{logged}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("nothing listened on 127.0.0.1:{port} within 30 s")
}

impl TestServers {
    /// Builds and starts them all; `origins` are the browser origins the proxy admits (CORS).
    pub fn start(origins: &[String]) -> Result<Self> {
        run::cargo(&[
            "build",
            "-p",
            "switchyard-tests",
            "--bin",
            "fake-llm",
            "--bin",
            "mcp-test-server",
            "-p",
            "switchyard-proxy",
            "--bin",
            "switchyard",
        ])?;
        let work = root().join("target/xtask");
        std::fs::create_dir_all(&work)?;
        let bin = run::target_dir().join("debug");

        let mut servers = TestServers {
            children: Vec::new(),
            upstream_url: String::new(),
            anthropic_url: String::new(),
            gemini_url: String::new(),
            mcp_everything_url: String::new(),
            mcp_stateless_url: String::new(),
            nocors_upstream_url: String::new(),
            mcp_nocors_url: String::new(),
            refused_url: format!("http://127.0.0.1:{}/v1", free_port()?),
            proxy_url: String::new(),
            auth_proxy_url: String::new(),
        };
        let (child, origin) = spawn_listening(
            command(&bin.join("fake-llm").to_string_lossy()).args([
                "--listen",
                "127.0.0.1:0",
                "--api-key",
                UPSTREAM_KEY,
            ]),
            work.join("fake-llm.log"),
        )?;
        servers.children.push(child);
        servers.upstream_url = format!("{origin}/v1");
        for (kind, key) in [("anthropic", ANTHROPIC_KEY), ("gemini", GEMINI_KEY)] {
            let (child, origin) = spawn_listening(
                command(&bin.join("fake-llm").to_string_lossy()).args([
                    "--listen",
                    "127.0.0.1:0",
                    "--kind",
                    kind,
                    "--api-key",
                    key,
                ]),
                work.join(format!("fake-{kind}.log")),
            )?;
            servers.children.push(child);
            match kind {
                "anthropic" => servers.anthropic_url = format!("{origin}/v1"),
                _ => servers.gemini_url = format!("{origin}/v1beta"),
            }
        }

        let (node, args) = everything_command("streamableHttp")?;
        let port = free_port()?;
        let log = work.join("server-everything.log");
        let mut child = command(&node.to_string_lossy())
            .args(&args)
            .env("PORT", port.to_string())
            .stdout(Stdio::from(std::fs::File::create(&log)?))
            .stderr(Stdio::from(std::fs::File::create(
                work.join("server-everything.err"),
            )?))
            .spawn()
            .context("starting server-everything")?;
        let waited = wait_for_port(port, &mut child, &log);
        servers.children.push(child);
        waited?;
        servers.mcp_everything_url = format!("http://127.0.0.1:{port}/mcp");

        let (child, origin) = spawn_listening(
            command(&bin.join("mcp-test-server").to_string_lossy()).args([
                "--listen",
                "127.0.0.1:0",
                "--stateless",
            ]),
            work.join("mcp-test-server.log"),
        )?;
        servers.children.push(child);
        servers.mcp_stateless_url = format!("{origin}/mcp");

        let (child, origin) = spawn_listening(
            command(&bin.join("fake-llm").to_string_lossy()).args([
                "--listen",
                "127.0.0.1:0",
                "--no-cors",
            ]),
            work.join("fake-llm-nocors.log"),
        )?;
        servers.children.push(child);
        servers.nocors_upstream_url = format!("{origin}/v1");

        let (child, origin) = spawn_listening(
            command(&bin.join("mcp-test-server").to_string_lossy()).args([
                "--listen",
                "127.0.0.1:0",
                "--stateless",
                "--no-cors",
            ]),
            work.join("mcp-test-server-nocors.log"),
        )?;
        servers.children.push(child);
        servers.mcp_nocors_url = format!("{origin}/mcp");

        let config = work.join("proxy-test.toml");
        let origins: Vec<String> = origins.iter().map(|o| format!("{o:?}")).collect();
        let (_, stdio_args) = everything_command("stdio")?;
        let stdio_args: Vec<String> = stdio_args.iter().map(|a| format!("{a:?}")).collect();
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\ncors_allowed_origins = [{}]\n\n\
                 [[providers]]\nname = \"fake\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
                 api_key_env = \"SWITCHYARD_TEST_UPSTREAM_KEY\"\n\n\
                 [[providers]]\nname = \"anthropic\"\nkind = \"anthropic\"\nbase_url = \"{}\"\n\
                 api_key_env = \"SWITCHYARD_TEST_ANTHROPIC_KEY\"\n\n\
                 [[providers]]\nname = \"gemini\"\nkind = \"gemini\"\nbase_url = \"{}\"\n\
                 api_key_env = \"SWITCHYARD_TEST_GEMINI_KEY\"\n\n\
                 [[providers]]\nname = \"nocors\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
                 api_key_env = \"SWITCHYARD_TEST_UPSTREAM_KEY\"\n\n\
                 [[providers]]\nname = \"refused\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
                 api_key_env = \"SWITCHYARD_TEST_UPSTREAM_KEY\"\n\n\
                 [[mcp_servers]]\nname = \"nocors\"\ntransport = \"streamable_http\"\nurl = \"{}\"\n\n\
                 [[mcp_servers]]\nname = \"everything\"\ntransport = \"streamable_http\"\nurl = \"{}\"\n\n\
                 [[mcp_servers]]\nname = \"stateless\"\ntransport = \"streamable_http\"\nurl = \"{}\"\n\n\
                 [[mcp_servers]]\nname = \"everything-stdio\"\ntransport = \"stdio\"\ncommand = \"node\"\n\
                 args = [{}]\n\n\
                 [[mcp_servers]]\nname = \"rmcp-stdio\"\ntransport = \"stdio\"\ncommand = {:?}\n\
                 args = [\"--stdio\"]\n",
                origins.join(", "),
                servers.upstream_url,
                servers.anthropic_url,
                servers.gemini_url,
                servers.nocors_upstream_url,
                servers.nocors_upstream_url,
                servers.mcp_nocors_url,
                servers.mcp_everything_url,
                servers.mcp_stateless_url,
                stdio_args.join(", "),
                bin.join("mcp-test-server").to_string_lossy(),
            ),
        )?;
        let (child, origin) = spawn_listening(
            command(&bin.join("switchyard").to_string_lossy())
                .args(["serve", "--config"])
                .arg(&config)
                .args(["--listen", "127.0.0.1:0"])
                .env("SWITCHYARD_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
                .env("SWITCHYARD_TEST_ANTHROPIC_KEY", ANTHROPIC_KEY)
                .env("SWITCHYARD_TEST_GEMINI_KEY", GEMINI_KEY)
                .env("RUST_LOG", "warn"),
            work.join("proxy.log"),
        )?;
        servers.children.push(child);
        servers.proxy_url = origin;

        let auth_config = work.join("proxy-auth-test.toml");
        std::fs::write(
            &auth_config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\ncors_allowed_origins = [{}]\n\n\
                 [[providers]]\nname = \"fake\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
                 api_key_env = \"SWITCHYARD_TEST_UPSTREAM_KEY\"\n\n\
                 [[keys]]\nname = \"browser-suite\"\nhash = \"{AUTH_PROXY_KEY_HASH}\"\n\
                 models = [\"fake/*\"]\nmcp = []\n",
                origins.join(", "),
                servers.upstream_url,
            ),
        )?;
        let (child, origin) = spawn_listening(
            command(&bin.join("switchyard").to_string_lossy())
                .args(["serve", "--config"])
                .arg(&auth_config)
                .args(["--listen", "127.0.0.1:0"])
                .env("SWITCHYARD_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
                .env("RUST_LOG", "warn"),
            work.join("proxy-auth.log"),
        )?;
        servers.children.push(child);
        servers.auth_proxy_url = origin;
        println!(
            "    test upstream at {}, fake Anthropic at {}, fake Gemini at {}, MCP servers at {} \
             and {}, proxy at {}",
            servers.upstream_url,
            servers.anthropic_url,
            servers.gemini_url,
            servers.mcp_everything_url,
            servers.mcp_stateless_url,
            servers.proxy_url
        );
        Ok(servers)
    }
}

impl Drop for TestServers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts a server that prints `listening on http://ADDR` once bound; returns it and its origin.
pub(crate) fn spawn_listening(
    cmd: &mut std::process::Command,
    log: PathBuf,
) -> Result<(Child, String)> {
    let log_file = std::fs::File::create(&log)?;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    // Reads the announcement, then keeps draining so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(origin) = line.strip_prefix("listening on ") {
                let _ = tx.send(origin.trim().to_owned());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(origin) => Ok((child, origin)),
        Err(_) => {
            let _ = child.kill();
            let logged = std::fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "{:?} did not start listening within 60 s; its log:\n{logged}",
                cmd.get_program()
            )
        }
    }
}
