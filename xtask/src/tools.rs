//! Installs what the build and the tests need, when it is missing.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::run::{self, command, output, root};

/// Where Debian puts Chromium and its driver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's Redis server.
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";
/// Debian's nginx.
pub const NGINX: &str = "/usr/sbin/nginx";
/// Debian's ChromeDriver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Everything `cargo xtask test` uses.
pub fn ensure_all() -> Result<()> {
    ensure_rust_parts()?;
    ensure_sdk_tools()?;
    ensure_chromium()?;
    ensure_cluster_servers()
}

/// Rust components and the wasm target.
pub fn ensure_rust_parts() -> Result<()> {
    let Some(installed) = output("rustup", &["target", "list", "--installed"]) else {
        println!("    rustup not found; assuming the toolchain has wasm32-unknown-unknown");
        return Ok(());
    };
    if !installed
        .lines()
        .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        println!("    installing the wasm32-unknown-unknown target");
        run::status(command("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
    }
    let components = output("rustup", &["component", "list", "--installed"]).unwrap_or_default();
    for c in ["rustfmt", "clippy"] {
        if !components.lines().any(|l| l.starts_with(c)) {
            println!("    installing the {c} component");
            run::status(command("rustup").args(["component", "add", c]))?;
        }
    }
    Ok(())
}

/// The toolchain that builds the npm package's `.wasm`. A nightly, because only a nightly can
/// rebuild the standard library for the module (`-Z build-std`) with `opt-level = "z"`, its
/// size-oriented code paths and panics that abort on the spot (`-C panic=immediate-abort`), which
/// drops the panic messages, their formatting and their locations: 7% of the gzipped module.
/// Pinned, so that the size the build prints moves only when the code does.
pub const SDK_TOOLCHAIN: &str = "nightly-2026-05-20";

/// What building and testing the npm package needs.
pub fn ensure_sdk_tools() -> Result<()> {
    ensure_rust_parts()?;
    ensure_sdk_toolchain()?;
    ensure_wasm_bindgen()?;
    ensure_wasm_pack()?;
    ensure_node()?;
    ensure_npm_packages()
}

/// [`SDK_TOOLCHAIN`] with the standard library's sources (for `-Z build-std`) and the wasm
/// target (which wasm-pack checks for, although the build compiles its own standard library).
fn ensure_sdk_toolchain() -> Result<()> {
    if !sdk_toolchain_wanted() {
        return Ok(());
    }
    let installed = output("rustup", &["toolchain", "list"]).unwrap_or_default();
    let has_toolchain = installed.lines().any(|l| l.starts_with(SDK_TOOLCHAIN));
    let ready = has_toolchain && {
        let targets = output(
            "rustup",
            &[
                "target",
                "list",
                "--installed",
                "--toolchain",
                SDK_TOOLCHAIN,
            ],
        )
        .unwrap_or_default();
        let components = output(
            "rustup",
            &[
                "component",
                "list",
                "--installed",
                "--toolchain",
                SDK_TOOLCHAIN,
            ],
        )
        .unwrap_or_default();
        targets
            .lines()
            .any(|l| l.trim() == "wasm32-unknown-unknown")
            && components.lines().any(|l| l.starts_with("rust-src"))
    };
    if ready {
        return Ok(());
    }
    println!("    installing the {SDK_TOOLCHAIN} toolchain with rust-src, for the npm package");
    run::status(command("rustup").args([
        "toolchain",
        "install",
        SDK_TOOLCHAIN,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
        "--target",
        "wasm32-unknown-unknown",
    ]))
}

/// Whether the npm package is built with [`SDK_TOOLCHAIN`]: yes unless rustup is missing (the
/// toolchain cannot be installed then) or `SWITCHYARD_SDK_STABLE` is set, for a quick build with
/// the active toolchain; either way the package works the same and is only larger.
pub fn sdk_toolchain_wanted() -> bool {
    std::env::var_os("SWITCHYARD_SDK_STABLE").is_none()
        && output("rustup", &["--version"]).is_some()
}

/// The wasm-bindgen version the lock file pins; the CLI must match it exactly.
fn locked_wasm_bindgen_version() -> Result<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\""
            && let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = \""))
        {
            return Ok(v.trim_end_matches('"').to_owned());
        }
    }
    bail!("wasm-bindgen is not in Cargo.lock")
}

fn ensure_wasm_bindgen() -> Result<()> {
    let want = locked_wasm_bindgen_version()?;
    let have = output("wasm-bindgen", &["--version"]).unwrap_or_default();
    if have.split_whitespace().nth(1) == Some(want.as_str())
        && output("wasm-bindgen-test-runner", &["--version"]).is_some()
    {
        return Ok(());
    }
    println!("    installing wasm-bindgen-cli {want} (found {have:?})");
    // `--locked` fails for this crate on this registry; the exact version is what matters.
    run::status(command("cargo").args(["install", "wasm-bindgen-cli", "--version", &want]))
}

fn ensure_wasm_pack() -> Result<()> {
    if output("wasm-pack", &["--version"]).is_some() {
        return Ok(());
    }
    println!("    installing wasm-pack");
    run::status(command("cargo").args(["install", "wasm-pack"]))
}

fn ensure_node() -> Result<()> {
    if output("node", &["--version"]).is_some() && output("npm", &["--version"]).is_some() {
        return Ok(());
    }
    apt_install(&["nodejs", "npm"])
}

fn ensure_npm_packages() -> Result<()> {
    let dir = root();
    let lock = dir.join("package-lock.json");
    let installed = dir.join("node_modules/.package-lock.json");
    let fresh = match (std::fs::metadata(&lock), std::fs::metadata(&installed)) {
        (Ok(l), Ok(i)) => i.modified().ok() >= l.modified().ok(),
        _ => false,
    };
    if fresh {
        return Ok(());
    }
    println!("    installing npm packages (binaryen, typescript, playwright-core, MCP servers)");
    run::status(
        command("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir),
    )
}

/// Chromium and ChromeDriver from Debian: test tools that download their own browser fail here.
pub fn ensure_chromium() -> Result<()> {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return Ok(());
    }
    apt_install(&["chromium", "chromium-driver"])
}

/// Redis and nginx from Debian, for the tests that run several proxy instances. Installing
/// them starts no service here: the tests start their own on loopback ports.
pub fn ensure_cluster_servers() -> Result<()> {
    if Path::new(REDIS_SERVER).exists() && Path::new(NGINX).exists() {
        return Ok(());
    }
    apt_install(&["redis-server", "nginx"])
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let root_user = output("id", &["-u"]).is_some_and(|u| u == "0");
    if !root_user {
        bail!(
            "{} missing; install it with your package manager (Debian: apt-get install {})",
            packages.join(" and "),
            packages.join(" ")
        );
    }
    println!("    installing {} with apt-get", packages.join(", "));
    run::status(command("apt-get").args(["update", "-qq"]))?;
    run::status(
        command("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq"])
            .args(packages),
    )
}
