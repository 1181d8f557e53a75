//! `cargo xtask <command>`: the project's two front doors (`demo`, `test`) and their helpers.
//!
//! Each command installs what it lacks (wasm target, wasm-bindgen-cli, wasm-pack, Chromium and its
//! driver, npm packages), says what it is doing, and stops at the first failure.

mod demo;
mod fuzz;
mod real_llm;
mod run;
mod sdk;
mod servers;
mod tools;

use std::time::Instant;

use anyhow::{Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test    everything CI runs: fmt, clippy (native and wasm32), unit and end-to-end tests,
          the npm package build, and the browser tests in headless Chromium (both modes)
  demo    builds the npm package, the demo page and the proxy, and serves the page on
          http://127.0.0.1:3001 until Ctrl-C (`demo [--release] [--listen ADDR]`)
  sdk     builds the npm package `switchyard-client` into sdk-wasm/pkg and prints its size
  bench   the benchmark suite: the proxy against direct calls and peer products, written to
          bench/results/*.json and docs/BENCHMARKS.md; `bench [SCENARIO] [N]` runs one of
          chat, stream, mcp, memory, sdk, perf (or `report` only); none: all of them
  fuzz    runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60) and prints
          the executions: `fuzz [SECONDS] [TARGET...]` (works on stable)
  setup   only installs the tools the other commands need
  browser only the browser suites (wasm-bindgen-test, package and demo page tests);
          `browser SUITE...` only those wasm-bindgen-test files (sdk-wasm/tests/SUITE.rs),
          without the package build and the page tests
";

fn main() {
    if let Err(e) = real_main() {
        eprintln!("\nxtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("demo") => demo::run(&args[1..]),
        Some("sdk") => {
            tools::ensure_sdk_tools()?;
            let sizes = sdk::build_package()?;
            sizes.print();
            Ok(())
        }
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("browser") => browser(&args[1..]),
        Some("setup") => tools::ensure_all(),
        Some("help" | "--help" | "-h") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

/// Runs every check and test suite; prints a timing summary.
fn test() -> Result<()> {
    let started = Instant::now();
    let mut report = run::Report::default();

    report.step("install missing tools", tools::ensure_all)?;
    report.step("cargo fmt --check", || {
        run::cargo(&["fmt", "--all", "--", "--check"])
    })?;
    report.step("clippy (native)", || {
        run::cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    report.step("clippy (wasm32)", || {
        // `shared`'s own tests are native (proptest does not build for wasm32); its library is
        // what the SDK compiles, so that is what is checked here.
        run::cargo(&[
            "clippy",
            "-p",
            "switchyard-shared",
            "--features",
            "wasm",
            "--target",
            "wasm32-unknown-unknown",
            "--lib",
            "--",
            "-D",
            "warnings",
        ])?;
        run::cargo(&[
            "clippy",
            "-p",
            "switchyard-sdk-wasm",
            "--target",
            "wasm32-unknown-unknown",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    report.step("unit and native end-to-end tests", || {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        run::status(
            run::command(&cargo)
                .args(["test", "--workspace", "--exclude", "switchyard-sdk-wasm"])
                // This build makes the proxy's binary too (its own tests run it); the suites
                // in tests/ that run it as a process take it from here instead of building it.
                .env(
                    "SWITCHYARD_BIN",
                    run::target_dir().join("debug").join("switchyard"),
                ),
        )
    })?;
    report.step(
        "end-to-end tests against a real LLM (Gemma 3 270M on llama.cpp)",
        real_llm::test,
    )?;
    let sizes = report.step("npm package build", sdk::build_package)?;
    let page_port = servers::free_port()?;
    let servers = report.step("start the servers the browser suites use", || {
        servers::TestServers::start(&[format!("http://127.0.0.1:{page_port}")])
    })?;
    report.step("browser tests (wasm-bindgen-test, both modes)", || {
        sdk::browser_tests(&servers, page_port, &[])
    })?;
    report.step("package tests (playwright-core, both modes)", || {
        sdk::package_tests(&servers, page_port)
    })?;
    drop(servers);
    report.step(
        "demo page build (npm ci, tsc, vite build)",
        demo::build_page,
    )?;
    report.step(
        "demo page tests (playwright-core, both modes)",
        demo::page_tests,
    )?;

    sizes.print();
    report.print();
    println!("all checks passed in {:.0?}", started.elapsed());
    Ok(())
}

/// The browser suites alone: the npm package build, the servers, and both suites; or, given
/// suite names, the servers and those wasm-bindgen-test files only.
fn browser(only: &[String]) -> Result<()> {
    tools::ensure_all()?;
    if only.is_empty() {
        sdk::build_package()?;
    }
    let page_port = servers::free_port()?;
    let servers = servers::TestServers::start(&[format!("http://127.0.0.1:{page_port}")])?;
    sdk::browser_tests(&servers, page_port, only)?;
    if !only.is_empty() {
        return Ok(());
    }
    sdk::package_tests(&servers, page_port)?;
    drop(servers);
    demo::build_page()?;
    demo::page_tests()
}

/// Runs the benchmark suite (`bench/run.sh`): `cargo xtask bench [SCENARIO] [ARG...]`, every
/// scenario and the report when none is named.
fn bench(args: &[String]) -> Result<()> {
    if matches!(args.first().map(String::as_str), None | Some("all" | "sdk")) {
        // The SDK scenario drives Debian's Chromium; the script itself installs the rest.
        tools::ensure_chromium()?;
    }
    let mut cmd = run::command("bash");
    cmd.arg(run::root().join("bench/run.sh")).args(args);
    run::status(&mut cmd)
}
