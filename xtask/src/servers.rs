//! The servers the browser suites talk to: the test upstream and a proxy in front of it, as child
//! processes on 127.0.0.1 that are killed when the suite ends.

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

/// A free TCP port on 127.0.0.1 (the listener is closed again at once).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A running test upstream and a proxy configured to reach it as provider `fake`.
pub struct TestServers {
    children: Vec<Child>,
    /// The upstream's OpenAI-compatible base URL, `http://127.0.0.1:PORT/v1`.
    pub upstream_url: String,
    /// The proxy's origin, `http://127.0.0.1:PORT`.
    pub proxy_url: String,
}

impl TestServers {
    /// Builds and starts both; `origins` are the browser origins the proxy admits (CORS).
    pub fn start(origins: &[String]) -> Result<Self> {
        run::cargo(&[
            "build",
            "-p",
            "switchyard-tests",
            "--bin",
            "fake-llm",
            "-p",
            "switchyard-proxy",
            "--bin",
            "switchyard",
        ])?;
        let work = root().join("target/xtask");
        std::fs::create_dir_all(&work)?;
        let bin = root().join("target/debug");

        let mut servers = TestServers {
            children: Vec::new(),
            upstream_url: String::new(),
            proxy_url: String::new(),
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

        let config = work.join("proxy-test.toml");
        let origins: Vec<String> = origins.iter().map(|o| format!("{o:?}")).collect();
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\ncors_allowed_origins = [{}]\n\n\
                 [[providers]]\nname = \"fake\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
                 api_key_env = \"SWITCHYARD_TEST_UPSTREAM_KEY\"\n",
                origins.join(", "),
                servers.upstream_url
            ),
        )?;
        let (child, origin) = spawn_listening(
            command(&bin.join("switchyard").to_string_lossy())
                .args(["serve", "--config"])
                .arg(&config)
                .args(["--listen", "127.0.0.1:0"])
                .env("SWITCHYARD_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
                .env("RUST_LOG", "warn"),
            work.join("proxy.log"),
        )?;
        servers.children.push(child);
        servers.proxy_url = origin;
        println!(
            "    test upstream at {}, proxy at {}",
            servers.upstream_url, servers.proxy_url
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
