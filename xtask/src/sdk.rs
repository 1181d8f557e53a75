//! The npm package `switchyard-client`: build (wasm-pack for the `web` and `bundler` targets,
//! binaryen's wasm-opt, tsc for the TypeScript face) and its two browser suites.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use flate2::{Compression, write::GzEncoder};

use crate::run::{self, command, root};
use crate::servers::{ANTHROPIC_KEY, AUTH_PROXY_KEY, GEMINI_KEY, TestServers, UPSTREAM_KEY};
use crate::tools::{self, CHROMEDRIVER, CHROMIUM};

const OUT_NAME: &str = "switchyard_client";

/// Sizes of the built package, in bytes.
pub struct Sizes {
    wasm_raw: u64,
    wasm_gzip: u64,
    js_raw: u64,
    js_gzip: u64,
}

impl Sizes {
    /// Prints the sizes that matter to users (what a page downloads).
    pub fn print(&self) {
        println!(
            "\nswitchyard-client (web target): .wasm {} raw, {} gzipped; JS {} raw, {} gzipped; \
             total {} gzipped",
            kib(self.wasm_raw),
            kib(self.wasm_gzip),
            kib(self.js_raw),
            kib(self.js_gzip),
            kib(self.wasm_gzip + self.js_gzip)
        );
    }
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// Builds `sdk-wasm/pkg`, ready for `npm publish` or `npm install <path>`.
pub fn build_package() -> Result<Sizes> {
    let crate_dir = root().join("sdk-wasm");
    let pkg = crate_dir.join("pkg");
    if pkg.exists() {
        std::fs::remove_dir_all(&pkg)?;
    }
    let pinned = tools::sdk_toolchain_wanted();
    if !pinned {
        println!("    building with the active toolchain: the package will be larger");
    }
    for target in ["web", "bundler"] {
        let out = pkg.join("wasm").join(target);
        let mut build = command("wasm-pack");
        build
            .args([
                "build",
                "--mode",
                "no-install",
                "--no-pack",
                "--target",
                target,
            ])
            .args([
                "--profile",
                "wasm-release",
                "--out-name",
                OUT_NAME,
                "--out-dir",
            ])
            .arg(&out)
            .arg(&crate_dir);
        if pinned {
            with_size_std(&mut build);
        }
        run::status(&mut build)?;
        let wasm = out.join(format!("{OUT_NAME}_bg.wasm"));
        // wasm-opt reads the module's target_features section, so no --enable flags are needed.
        // What is downloaded is the gzipped module, and serde's many similar functions gzip well
        // when they stay apart and near each other:
        // - `-ocimfs 15`: a function with one caller is inlined only when it is small; inlining
        //   them all (the default) makes a few huge functions whose bytes repeat less (the
        //   module is barely smaller, but gzips some 14% larger);
        // - `--reorder-functions-by-name` puts the functions of one crate and module, named by
        //   their symbols, side by side, within reach of gzip's 32 KiB window (1.5% less);
        // - `--converge` repeats -Oz while it still shrinks the module; the names (after their
        //   use above) and the producers section are not needed at run time.
        run::status(
            command("wasm-opt")
                .args([
                    "-Oz",
                    "--converge",
                    "-ocimfs",
                    "15",
                    "--reorder-functions-by-name",
                ])
                .args(["--strip-debug", "--strip-producers"])
                .arg(&wasm)
                .arg("-o")
                .arg(&wasm),
        )?;
        // wasm-pack writes a `*` .gitignore, which would also hide the files from `npm pack`.
        let _ = std::fs::remove_file(out.join(".gitignore"));
    }

    let js = crate_dir.join("js");
    let sources = ["core.ts", "index.ts", "bundler.ts"];
    for f in sources {
        std::fs::copy(js.join("src").join(f), pkg.join(f))?;
    }
    for f in ["tsconfig.json", "package.json", "README.md"] {
        std::fs::copy(js.join(f), pkg.join(f)).with_context(|| format!("copying js/{f}"))?;
    }
    run::status(
        command(&root().join("node_modules/.bin/tsc").to_string_lossy())
            .args(["-p", "tsconfig.json"])
            .current_dir(&pkg),
    )?;
    for f in sources.iter().chain(&["tsconfig.json"]) {
        std::fs::remove_file(pkg.join(f))?;
    }
    // The documentation stays in the `.d.ts` files, where editors read it; in the JavaScript it
    // is only bytes to download.
    for f in [
        "index.js",
        "core.js",
        "bundler.js",
        &format!("wasm/web/{OUT_NAME}.js"),
        &format!("wasm/bundler/{OUT_NAME}.js"),
        &format!("wasm/bundler/{OUT_NAME}_bg.js"),
    ] {
        let path = pkg.join(f);
        let js = std::fs::read_to_string(&path).with_context(|| format!("reading {f}"))?;
        std::fs::write(&path, strip_line_comments(&js))?;
    }
    check_public_types(&pkg)?;

    let wasm = std::fs::read(pkg.join(format!("wasm/web/{OUT_NAME}_bg.wasm")))?;
    let mut js_bytes = Vec::new();
    for f in ["index.js", "core.js", &format!("wasm/web/{OUT_NAME}.js")] {
        js_bytes.extend(std::fs::read(pkg.join(f))?);
    }
    Ok(Sizes {
        wasm_raw: wasm.len() as u64,
        wasm_gzip: gzip_len(&wasm)?,
        js_raw: js_bytes.len() as u64,
        js_gzip: gzip_len(&js_bytes)?,
    })
}

/// Builds with [`tools::SDK_TOOLCHAIN`] and a standard library compiled for size (see there):
/// `-Z build-std` with `optimize_for_size`, panics that abort without a message, and no source
/// locations (they only served panic messages). Everything else comes from the
/// `wasm-release` profile.
fn with_size_std(build: &mut std::process::Command) {
    build
        .env("RUSTUP_TOOLCHAIN", tools::SDK_TOOLCHAIN)
        .env(
            "RUSTFLAGS",
            "-Zunstable-options -Cpanic=immediate-abort -Zlocation-detail=none",
        )
        .args([
            "--",
            "-Zbuild-std=std,panic_abort",
            "-Zbuild-std-features=optimize_for_size",
        ]);
}

/// Drops the comments that fill whole lines (`/** ... */` blocks and `//` lines) from the
/// JavaScript that tsc and wasm-bindgen emit. Neither writes a string or a template literal
/// spanning lines, so a line that starts a comment is never inside one; other comments, such
/// as the `/* @ts-self-types=... */` directive, are kept.
fn strip_line_comments(js: &str) -> String {
    let mut out = String::with_capacity(js.len());
    let mut keep = |rest: &str| {
        if !rest.trim().is_empty() {
            out.push_str(rest);
            out.push('\n');
        }
    };
    let mut in_block = false;
    for line in js.lines() {
        if in_block {
            if let Some(end) = line.find("*/") {
                in_block = false;
                keep(&line[end + 2..]);
            }
            continue;
        }
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        match code.strip_prefix("/**") {
            Some(body) => match body.find("*/") {
                Some(end) => keep(&body[end + 2..]),
                None => in_block = true,
            },
            None => keep(line),
        }
    }
    out
}

fn gzip_len(bytes: &[u8]) -> Result<u64> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::best());
    enc.write_all(bytes)?;
    Ok(enc.finish()?.len() as u64)
}

/// The public declarations must not fall back to `any`. wasm-bindgen's `InitOutput` (the raw
/// module exports, never used directly) is the one place it writes `any`, so it is skipped.
fn check_public_types(pkg: &Path) -> Result<()> {
    let mut offenders = Vec::new();
    for f in [
        "index.d.ts",
        "bundler.d.ts",
        "core.d.ts",
        "wasm/web/switchyard_client.d.ts",
    ] {
        let text = std::fs::read_to_string(pkg.join(f))?;
        let public = text.split("export type InitInput").next().unwrap_or(&text);
        for (n, line) in public.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with('*') || code.starts_with("//") || code.starts_with("/*") {
                continue;
            }
            if code
                .split(|c: char| !c.is_alphanumeric() && c != '_')
                .any(|w| w == "any")
            {
                offenders.push(format!("{f}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    if !offenders.is_empty() {
        bail!("`any` in the public types:\n{}", offenders.join("\n"));
    }
    Ok(())
}

/// Where both browser suites find the servers (a browser test has no environment of its own:
/// the Rust suite reads these at compile time, the Node one at run time).
fn with_servers<'a>(
    cmd: &'a mut std::process::Command,
    servers: &TestServers,
    page_port: u16,
) -> &'a mut std::process::Command {
    cmd.env("SWITCHYARD_TEST_UPSTREAM", &servers.upstream_url)
        .env("SWITCHYARD_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
        .env("SWITCHYARD_TEST_ANTHROPIC", &servers.anthropic_url)
        .env("SWITCHYARD_TEST_ANTHROPIC_KEY", ANTHROPIC_KEY)
        .env("SWITCHYARD_TEST_GEMINI", &servers.gemini_url)
        .env("SWITCHYARD_TEST_GEMINI_KEY", GEMINI_KEY)
        .env("SWITCHYARD_TEST_PROXY", &servers.proxy_url)
        .env("SWITCHYARD_TEST_AUTH_PROXY", &servers.auth_proxy_url)
        .env("SWITCHYARD_TEST_AUTH_PROXY_KEY", AUTH_PROXY_KEY)
        .env(
            "SWITCHYARD_TEST_MCP_EVERYTHING",
            &servers.mcp_everything_url,
        )
        .env("SWITCHYARD_TEST_MCP_STATELESS", &servers.mcp_stateless_url)
        .env(
            "SWITCHYARD_TEST_NOCORS_UPSTREAM",
            &servers.nocors_upstream_url,
        )
        .env("SWITCHYARD_TEST_MCP_NOCORS", &servers.mcp_nocors_url)
        .env("SWITCHYARD_TEST_REFUSED", &servers.refused_url)
        .env("SWITCHYARD_TEST_PAGE_PORT", page_port.to_string())
}

/// `wasm-pack test` in headless Chromium: the Rust-level suite, in both modes; only the test
/// files named in `only` (`sdk-wasm/tests/<name>.rs`) if any are.
pub fn browser_tests(servers: &TestServers, page_port: u16, only: &[String]) -> Result<()> {
    run::status(
        with_servers(&mut command("wasm-pack"), servers, page_port)
            .args(["test", "--mode", "no-install", "--headless", "--chrome"])
            .args(["--chromedriver", CHROMEDRIVER])
            .arg(root().join("sdk-wasm"))
            // The runner's page is cross-origin isolated by default, which would also block the
            // opaque `no-cors` probe that tells a CORS refusal from an unreachable server.
            .env("WASM_BINDGEN_TEST_NO_ORIGIN_ISOLATION", "1")
            .env(
                "WASM_BINDGEN_TEST_ADDRESS",
                format!("127.0.0.1:{page_port}"),
            )
            .env("WASM_BINDGEN_TEST_TIMEOUT", "120")
            // After the path, wasm-pack passes arguments on to `cargo test`.
            .args(only.iter().flat_map(|name| ["--test", name.as_str()])),
    )
}

/// The built npm package in a page, driven by playwright-core: the TypeScript face, both modes.
pub fn package_tests(servers: &TestServers, page_port: u16) -> Result<()> {
    run::status(
        with_servers(&mut command("node"), servers, page_port)
            .args(["--test", "--test-reporter=spec"])
            .arg(root().join("sdk-wasm/js/test/package.test.mjs"))
            .env("SWITCHYARD_TEST_PKG", root().join("sdk-wasm/pkg"))
            .env("CHROMIUM", CHROMIUM),
    )
}

#[cfg(test)]
mod tests {
    use super::strip_line_comments;

    #[test]
    fn whole_line_comments_go_and_code_stays() {
        let js = "/* @ts-self-types=\"./x.d.ts\" */\n\
                  /**\n * A class.\n * @param {string} a\n */\n\
                  export class A {\n    /** One line. */\n    f(a) {\n        // why\n\
                  \x20       return `a // b`; // kept\n    }\n}\n\n/** Last. */ const b = 1;\n";
        assert_eq!(
            strip_line_comments(js),
            "/* @ts-self-types=\"./x.d.ts\" */\nexport class A {\n    f(a) {\n\
             \x20       return `a // b`; // kept\n    }\n}\n const b = 1;\n"
        );
    }
}
