//! `cargo xtask fuzz [SECONDS] [TARGET...]`: builds the cargo-fuzz targets in `fuzz/` and runs
//! each for SECONDS (default 60), then prints how many inputs each one ran.
//!
//! cargo-fuzz needs compiler flags that only nightly accepts; `RUSTC_BOOTSTRAP=1` lets a stable
//! toolchain accept them too, so a machine with only stable can fuzz. The targets are built
//! without AddressSanitizer: they are safe Rust, what they check are panics and their own
//! assertions, and they run several times faster without it (`cargo fuzz run TARGET` alone still
//! uses it).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::run::{self, command, output, root};

/// Seconds per target when none are given.
const DEFAULT_SECONDS: u64 = 60;

/// Inputs taken from the project itself, copied into a target's corpus when it starts empty:
/// a complete configuration and the demo script are far better starting points than nothing.
const PROJECT_SEEDS: &[(&str, &str)] = &[
    ("proxy_config", "proxy-native/switchyard.example.toml"),
    ("mock_script", "proxy-native/src/mock/demo.toml"),
];

/// What one target's run amounted to.
struct Outcome {
    target: String,
    seconds: f64,
    executions: Option<u64>,
    crashed: bool,
}

/// Runs the fuzz targets; fails if any of them found a crash.
pub fn run(args: &[String]) -> Result<()> {
    let mut seconds = DEFAULT_SECONDS;
    let mut wanted = Vec::new();
    for arg in args {
        match arg.parse::<u64>() {
            Ok(s) if s > 0 => seconds = s,
            _ => wanted.push(arg.clone()),
        }
    }
    ensure_cargo_fuzz()?;
    let all = targets()?;
    let targets: Vec<String> = if wanted.is_empty() {
        all
    } else {
        for w in &wanted {
            if !all.contains(w) {
                bail!("no fuzz target {w:?}; the targets are {}", all.join(", "));
            }
        }
        wanted
    };

    println!("\n==> building the fuzz targets");
    run::status(cargo_fuzz().args(["build", "--sanitizer", "none"]))?;
    let bin_dir = bin_dir()?;

    let mut outcomes = Vec::new();
    for target in &targets {
        println!("\n==> fuzzing {target} for {seconds} s");
        outcomes.push(fuzz_one(&bin_dir, target, seconds)?);
    }

    println!("\nfuzz targets ({seconds} s each):");
    for o in &outcomes {
        let executions = o
            .executions
            .map_or_else(|| "?".to_owned(), |n| n.to_string());
        let verdict = if o.crashed { "CRASH" } else { "ok" };
        println!(
            "  {:<18} {:>12} executions in {:>5.0} s  {verdict}",
            o.target, executions, o.seconds
        );
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.crashed)
        .map(|o| o.target.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!(
            "crashes in {} (inputs under fuzz/artifacts/; replay one with \
             `RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none TARGET FILE`)",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// `cargo fuzz` in the workspace root, allowed the nightly flags on any toolchain.
fn cargo_fuzz() -> std::process::Command {
    let mut cmd = command("cargo");
    cmd.arg("fuzz").env("RUSTC_BOOTSTRAP", "1");
    cmd
}

fn ensure_cargo_fuzz() -> Result<()> {
    if output("cargo", &["fuzz", "--version"]).is_some() {
        return Ok(());
    }
    println!("    installing cargo-fuzz");
    if run::cargo(&["install", "cargo-fuzz", "--locked"]).is_ok() {
        return Ok(());
    }
    // Its lock file can fall behind what a newer toolchain builds.
    run::cargo(&["install", "cargo-fuzz"])
}

/// Where `cargo fuzz build` puts the targets: `fuzz/target/<host triple>/release`. They are run
/// from there, so that a run never rebuilds (and the time shown is time spent fuzzing).
fn bin_dir() -> Result<PathBuf> {
    let version = output("rustc", &["-vV"]).context("running rustc -vV")?;
    let host = version
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .context("rustc -vV names no host")?;
    Ok(root().join("fuzz/target").join(host.trim()).join("release"))
}

/// The targets, as `fuzz/Cargo.toml` declares them.
fn targets() -> Result<Vec<String>> {
    let out = cargo_fuzz()
        .arg("list")
        .output()
        .context("running cargo fuzz list")?;
    if !out.status.success() {
        bail!(
            "cargo fuzz list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Runs one target for `seconds` on its corpus (`fuzz/corpus/TARGET`, kept between runs) and
/// its committed seeds (`fuzz/seeds/TARGET`); libFuzzer's log goes to
/// `fuzz/target/logs/TARGET.log`, a crashing input to `fuzz/artifacts/TARGET/`.
fn fuzz_one(bin_dir: &Path, target: &str, seconds: u64) -> Result<Outcome> {
    let fuzz = root().join("fuzz");
    let corpus = fuzz.join("corpus").join(target);
    let artifacts = fuzz.join("artifacts").join(target);
    for dir in [&corpus, &artifacts] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    seed_from_project(target, &corpus)?;
    let logs = fuzz.join("target").join("logs");
    std::fs::create_dir_all(&logs)?;
    let log_path = logs.join(format!("{target}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;

    let mut cmd = command(&bin_dir.join(target).display().to_string());
    cmd.arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        // An input that takes this long is a hang worth reporting.
        .arg("-timeout=10")
        .arg(&corpus)
        .stdout(Stdio::null())
        .stderr(log);
    let seeds = fuzz.join("seeds").join(target);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("running the fuzz target {target}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let executions = executions(&text);
    let crashed = !status.success();
    if crashed {
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        for line in tail.into_iter().rev() {
            eprintln!("    {line}");
        }
        eprintln!("    (the whole log: {})", log_path.display());
    }
    Ok(Outcome {
        target: target.to_owned(),
        seconds,
        executions,
        crashed,
    })
}

/// Copies the project's own example inputs into an empty corpus.
fn seed_from_project(target: &str, corpus: &Path) -> Result<()> {
    let empty = std::fs::read_dir(corpus)?.next().is_none();
    if !empty {
        return Ok(());
    }
    for (t, file) in PROJECT_SEEDS {
        if *t == target {
            let from = root().join(file);
            let name = from.file_name().map(PathBuf::from).unwrap_or_default();
            std::fs::copy(&from, corpus.join(name))
                .with_context(|| format!("copying {}", from.display()))?;
        }
    }
    Ok(())
}

/// The number of inputs run, from libFuzzer's final statistics (`stat::number_of_executed_units`)
/// or, failing that, its last status line (`#N ...`).
fn executions(log: &str) -> Option<u64> {
    let from_stats = log.lines().rev().find_map(|l| {
        l.strip_prefix("stat::number_of_executed_units:")
            .and_then(|n| n.trim().parse().ok())
    });
    from_stats.or_else(|| {
        log.lines().rev().find_map(|l| {
            l.strip_prefix('#')
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::executions;

    #[test]
    fn executions_are_read_from_the_final_stats_or_the_last_status_line() {
        let log = "#2\tINITED cov: 10 ft: 10 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #524288\tpulse  cov: 90 ft: 200 corp: 40/2Kb exec/s: 174762 rss: 60Mb\n\
                   Done 612345 runs in 4 second(s)\n\
                   stat::number_of_executed_units: 612345\n\
                   stat::average_exec_per_sec:     153086\n";
        assert_eq!(executions(log), Some(612_345));
        let cut =
            "#2\tINITED cov: 10\n#1024\tNEW    cov: 12\n==1== ERROR: libFuzzer: deadly signal\n";
        assert_eq!(executions(cut), Some(1024));
        assert_eq!(executions("nothing"), None);
    }
}
