//! The demo: the web app in `www-demo` (built with Vite against the npm package), served by the
//! proxy at `/`, and its page tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::run::{self, command, root};
use crate::servers::spawn_listening;
use crate::tools::CHROMIUM;

/// Where the demo listens unless told otherwise (the address the README shows).
const DEFAULT_LISTEN: &str = "127.0.0.1:3001";

/// `cargo xtask demo [--release] [--listen ADDR]`: builds the npm package, the page and the proxy,
/// starts the proxy with its embedded default set-up, and runs until Ctrl-C.
pub fn run(args: &[String]) -> Result<()> {
    let mut release = false;
    let mut listen = DEFAULT_LISTEN.to_owned();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--release" => release = true,
            "--listen" => listen = args.next().context("--listen needs an address")?.clone(),
            other => bail!(
                "unknown argument {other:?}; usage: cargo xtask demo [--release] [--listen ADDR]"
            ),
        }
    }

    crate::tools::ensure_sdk_tools()?;
    println!("\n==> building the npm package");
    crate::sdk::build_package()?.print();
    println!("\n==> building the demo page");
    build_page()?;
    println!("\n==> building the proxy");
    let binary = build_proxy(release)?;

    println!("\n==> starting the proxy");
    let log = root().join("target/xtask/demo-proxy.log");
    let (mut proxy, origin) = start_proxy(&binary, &listen, &log)?;
    wait_healthy(&origin)?;
    println!(
        "\n    Switchyard demo: {origin}/\n\n    \
         The page talks to a scripted model (mock/demo) and the built-in demo MCP server,\n    \
         directly from the browser or through the proxy (the switch at the top).\n    \
         Proxy log: {}\n    Ctrl-C stops it.\n",
        log.display()
    );
    // Ctrl-C reaches the proxy too (same process group); it drains and exits, and so do we.
    let status = proxy.wait()?;
    if !status.success() {
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = logged.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "the proxy exited ({status}); the end of its log:\n{}",
            tail.join("\n")
        );
    }
    Ok(())
}

fn demo_dir() -> PathBuf {
    root().join("www-demo")
}

/// `npm ci` (when its packages are missing or older than the lock file), then the type check and
/// `vite build` into `www-demo/dist`. The npm package must be built first: the page links it.
pub fn build_page() -> Result<()> {
    let dir = demo_dir();
    if !root().join("sdk-wasm/pkg/package.json").exists() {
        bail!("sdk-wasm/pkg is missing: build the npm package first (`cargo xtask sdk`)");
    }
    let lock = dir.join("package-lock.json");
    let installed = dir.join("node_modules/.package-lock.json");
    let fresh = match (std::fs::metadata(&lock), std::fs::metadata(&installed)) {
        (Ok(l), Ok(i)) => i.modified().ok() >= l.modified().ok(),
        _ => false,
    };
    if !fresh {
        let install = if lock.exists() { "ci" } else { "install" };
        run::status(
            command("npm")
                .args([install, "--no-audit", "--no-fund"])
                .current_dir(&dir),
        )?;
    }
    run::status(command("npm").args(["run", "build"]).current_dir(&dir))
}

/// Builds `switchyard` and returns its path. A release build embeds `www-demo/dist` (its build
/// script tells cargo to compile again when the page changes); a debug build reads it from disk.
fn build_proxy(release: bool) -> Result<PathBuf> {
    let profile = if release { "release" } else { "debug" };
    let binary = root().join("target").join(profile).join("switchyard");
    let mut args = vec!["build", "-p", "switchyard-proxy", "--bin", "switchyard"];
    if release {
        args.push("--release");
    }
    run::cargo(&args)?;
    Ok(binary)
}

/// Starts `switchyard serve` as the demo runs it: no configuration file, so the proxy's embedded
/// default (the mock provider, the demo MCP server, the page). Returns it and its origin.
fn start_proxy(binary: &Path, listen: &str, log: &Path) -> Result<(Child, String)> {
    std::fs::create_dir_all(log.parent().context("log path")?)?;
    spawn_listening(
        command(&binary.to_string_lossy()).args(["serve", "--listen", listen]),
        log.to_path_buf(),
    )
}

/// Waits until `GET /healthz` answers 200.
fn wait_healthy(origin: &str) -> Result<()> {
    let addr = origin.trim_start_matches("http://");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if healthz(addr).unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{origin}/healthz did not answer within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn healthz(addr: &str) -> Result<bool> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer.starts_with("HTTP/1.1 200"))
}

/// The page in headless Chromium (playwright-core), in both modes, against the debug build of the
/// proxy, which each test file starts itself on a free loopback port.
pub fn page_tests() -> Result<()> {
    run::cargo(&["build", "-p", "switchyard-proxy", "--bin", "switchyard"])?;
    let artifacts = root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts)?;
    run::status(
        command("node")
            .args(["--test", "--test-reporter=spec"])
            .arg(demo_dir().join("test/demo.test.mjs"))
            .env("SWITCHYARD_BIN", run::target_dir().join("debug/switchyard"))
            .env("SWITCHYARD_ARTIFACTS", &artifacts)
            .env("CHROMIUM", CHROMIUM),
    )?;
    println!(
        "    screenshots: {}",
        ["demo-direct.png", "demo-proxy.png"]
            .map(|f| artifacts.join(f).display().to_string())
            .join(", ")
    );
    Ok(())
}
