//! Running commands: a PATH that finds the project's tools, echoing, and a timing report.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where cargo builds: `CARGO_TARGET_DIR` when set, else `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_relative() {
                root().join(dir)
            } else {
                dir
            }
        })
        .unwrap_or_else(|| root().join("target"))
}

/// `$HOME/.cargo/bin`, where `cargo install` puts tools.
pub fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from(".cargo"))
        .join("bin")
}

/// PATH with the npm tools first: `wasm-opt` must be binaryen's npm build, never an older
/// system one (Debian's 108 emits modules that fail to load).
fn path_var() -> OsString {
    let mut dirs = vec![root().join("node_modules/.bin"), cargo_bin_dir()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

/// A command that runs in the workspace root with the project's PATH.
pub fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(root()).env("PATH", path_var());
    cmd
}

/// Runs `cmd`, echoing it; fails if it fails.
pub fn status(cmd: &mut Command) -> Result<()> {
    println!("    $ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start {}", show(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", show(cmd));
    }
    Ok(())
}

/// Runs `cargo` with `args`.
pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    status(command(&cargo).args(args))
}

/// The trimmed stdout of a command that succeeded, or `None`.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = command(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Step timings, printed at the end.
#[derive(Default)]
pub struct Report {
    steps: Vec<(String, Duration)>,
}

impl Report {
    /// Runs one named step and records how long it took.
    pub fn step<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        println!("\n==> {name}");
        let started = Instant::now();
        let result = f().with_context(|| format!("step failed: {name}"));
        self.steps.push((name.to_owned(), started.elapsed()));
        result
    }

    /// Prints the timings.
    pub fn print(&self) {
        println!("\nsteps:");
        for (name, took) in &self.steps {
            println!("  {:>7.1}s  {name}", took.as_secs_f64());
        }
    }
}
