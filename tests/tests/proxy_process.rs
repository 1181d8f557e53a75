//! The `switchyard` binary as a process of its own: what SIGTERM does to a stream in flight and
//! to a stdio MCP server, and what 10,000 streams leave behind once they are closed (tasks,
//! descriptors and memory, read from the proxy's `/metrics` and from `/proc`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use switchyard_shared::{ChatStreamDecoder, StreamEvent, WireFormat, paths};
use switchyard_tests::fake_llm::{FakeLlm, FakeLlmConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const RMCP_SERVER: &str = env!("CARGO_BIN_EXE_mcp-test-server");
const STREAM_PROBE: &str = env!("CARGO_BIN_EXE_stream-probe");

/// The proxy's binary. Cargo builds only this package's binaries for its tests, so the proxy's
/// is built here (once per run; a no-op when it is current, as after `cargo test --workspace`),
/// into the same target directory: cargo has released that directory by the time tests run.
/// `SWITCHYARD_BIN` names a ready one instead.
fn switchyard_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("SWITCHYARD_BIN") {
            return PathBuf::from(path);
        }
        // This test runs from <target>/<profile>/deps/.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
        let target_dir = profile_dir.parent().unwrap();
        let mut build = std::process::Command::new(env!("CARGO"));
        build
            .args([
                "build",
                "--quiet",
                "-p",
                "switchyard-proxy",
                "--bin",
                "switchyard",
            ])
            .arg("--target-dir")
            .arg(target_dir);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let status = build.status().unwrap();
        assert!(status.success(), "building the switchyard binary failed");
        profile_dir.join("switchyard")
    })
}

/// The proxy, running as a child process; killed if dropped while running.
struct ProxyProcess {
    child: Child,
    pid: Pid,
    base: String,
    _config_dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// Starts `switchyard serve` with `config` and waits until it listens.
    async fn start(config: &str) -> Self {
        let config_dir = tempfile::tempdir().unwrap();
        let config_file = config_dir.path().join("switchyard.toml");
        std::fs::write(&config_file, config).unwrap();
        let binary = switchyard_binary().to_owned();
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config_file)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the proxy did not start listening")
            .unwrap()
            .expect("the proxy exited before listening");
        let base = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        let pid = Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
        ProxyProcess {
            child,
            pid,
            base,
            _config_dir: config_dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn terminate(&self) {
        kill(self.pid, Signal::SIGTERM).unwrap();
    }

    /// Waits (bounded) for the process to exit; its exit code.
    async fn exit_code(&mut self, within: Duration) -> Option<i32> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the proxy did not exit in time")
            .unwrap()
            .code()
    }
}

/// A client whose requests are bounded, so that a regression fails instead of hanging; it keeps
/// no idle connections, which would hold tasks and descriptors in the proxy.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

fn stream_body(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

/// Reads a chat stream until its first event.
async fn first_events(
    response: &mut reqwest::Response,
    decoder: &mut ChatStreamDecoder,
) -> Vec<StreamEvent> {
    loop {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("the stream ended early");
        let events = decoder.push(&chunk);
        if !events.is_empty() {
            return events;
        }
    }
}

/// Reads the rest of a chat stream, to its end or to a broken connection.
async fn rest_of(
    mut response: reqwest::Response,
    mut decoder: ChatStreamDecoder,
) -> (Vec<StreamEvent>, bool) {
    let mut events = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => events.extend(decoder.push(&chunk)),
            Ok(None) => return (events, true),
            Err(_) => return (events, false),
        }
    }
}

fn text_of(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            StreamEvent::TextDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// Whether `pid` is still there, as a zombie too (so not yet reaped by its parent).
fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The `long` model's whole reply: 200 chunks, 20 ms apart.
fn long_reply() -> String {
    (0..200).map(|i| format!("tok{i} ")).collect()
}

fn sigterm_config(fake: &FakeLlm, grace_ms: u64) -> String {
    format!(
        r#"
        [server]
        shutdown_grace_ms = {grace_ms}
        [[providers]]
        name = "fake"
        kind = "openai"
        base_url = "{base}"
        [[mcp_servers]]
        name = "rmcp"
        transport = "stdio"
        command = {RMCP_SERVER:?}
        args = ["--stdio"]
        "#,
        base = fake.base_url(),
    )
}

#[tokio::test]
async fn sigterm_lets_a_stream_in_flight_finish_stops_stdio_servers_and_exits_0() {
    // Children the proxy leaves behind become this process's; a zombie among them would show.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let fake = FakeLlm::start(FakeLlmConfig { api_key: None })
        .await
        .unwrap();
    let mut proxy = ProxyProcess::start(&sigterm_config(&fake, 20_000)).await;
    let client = client();
    let answer: serde_json::Value = client
        .post(proxy.url(paths::MCP_TOOL))
        .json(&json!({"server": "rmcp", "name": "pid", "arguments": {}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stdio_pid: u32 = answer["content"][0]["text"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(process_exists(stdio_pid));

    let mut response = client
        .post(proxy.url(paths::LLM_STREAM))
        .json(&stream_body("fake/long"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut decoder = ChatStreamDecoder::new(WireFormat::Switchyard, None);
    let mut events = first_events(&mut response, &mut decoder).await;

    proxy.terminate();
    // New connections are refused while the stream goes on (it lasts about 4 s).
    let deadline = Instant::now() + Duration::from_secs(3);
    while tokio::net::TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "connections are still accepted after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        fake.observed().streams_completed,
        0,
        "the stream is still in flight"
    );

    let (rest, clean_end) =
        tokio::time::timeout(Duration::from_secs(15), rest_of(response, decoder))
            .await
            .expect("the stream did not end");
    events.extend(rest);
    assert!(clean_end, "the stream ended with a broken connection");
    assert_eq!(text_of(&events), long_reply(), "the stream arrived whole");
    assert!(
        matches!(events.last(), Some(StreamEvent::Finish { .. })),
        "{:?}",
        events.last()
    );

    assert_eq!(proxy.exit_code(Duration::from_secs(10)).await, Some(0));
    // The proxy stopped its stdio server and reaped it before exiting.
    assert!(
        !process_exists(stdio_pid),
        "the stdio server is left (or a zombie)"
    );
}

#[tokio::test]
async fn a_stream_longer_than_the_grace_period_is_cut_and_the_proxy_still_exits_0() {
    let fake = FakeLlm::start(FakeLlmConfig { api_key: None })
        .await
        .unwrap();
    let mut proxy = ProxyProcess::start(&sigterm_config(&fake, 300)).await;
    let mut response = client()
        .post(proxy.url(paths::LLM_STREAM))
        .json(&stream_body("fake/long"))
        .send()
        .await
        .unwrap();
    let mut decoder = ChatStreamDecoder::new(WireFormat::Switchyard, None);
    let mut events = first_events(&mut response, &mut decoder).await;
    proxy.terminate();
    let (rest, _) = tokio::time::timeout(Duration::from_secs(3), rest_of(response, decoder))
        .await
        .expect("the stream was not cut at the grace period");
    events.extend(rest);
    assert!(
        text_of(&events).len() < long_reply().len(),
        "the stream was not cut: {}",
        text_of(&events)
    );
    assert!(!matches!(events.last(), Some(StreamEvent::Finish { .. })));
    assert_eq!(proxy.exit_code(Duration::from_secs(5)).await, Some(0));
    // The upstream saw its stream cancelled, not finished.
    let deadline = Instant::now() + Duration::from_secs(3);
    while fake.observed().streams_cancelled == 0 {
        assert!(Instant::now() < deadline, "{:?}", fake.observed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fake.observed().streams_completed, 0);
}

/// What the proxy holds, read from outside.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Holdings {
    /// Tasks alive on its runtime (its `switchyard_runtime_alive_tasks` gauge).
    tasks: u64,
    /// Open file descriptors (`/proc/PID/fd`).
    fds: usize,
    /// Resident memory in KiB (`VmRSS` of `/proc/PID/status`).
    rss_kib: u64,
}

impl ProxyProcess {
    /// Its holdings now. The scrape's own connection is closed before the descriptors are
    /// counted, and its task is not counted once it has ended; callers wait for settled values.
    async fn holdings(&self, client: &reqwest::Client) -> Holdings {
        let text = client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let tasks = text
            .lines()
            .find_map(|line| line.strip_prefix("switchyard_runtime_alive_tasks "))
            .unwrap_or_else(|| panic!("no task gauge in\n{text}"))
            .parse()
            .unwrap();
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .unwrap()
            .count();
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        let rss_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in\n{status}"));
        Holdings {
            tasks,
            fds,
            rss_kib,
        }
    }

    /// Its holdings once the task and descriptor counts have stopped moving (bounded).
    async fn settled_holdings(&self, client: &reqwest::Client) -> Holdings {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = self.holdings(client).await;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.holdings(client).await;
            if (now.tasks, now.fds) == (last.tasks, last.fds) || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }
}

/// `stream-probe hold`: `count` streams opened through the proxy and held open until released.
struct HeldStreams {
    probe: Child,
}

impl HeldStreams {
    /// Opens the streams; returns once each has sent its first event.
    async fn open(proxy: &ProxyProcess, count: usize) -> Self {
        let mut probe = Command::new(STREAM_PROBE)
            .args(["hold", "--proxy", &proxy.base, "--model", "mock/hold"])
            .args(["--count", &count.to_string(), "--open-timeout-secs", "60"])
            .args(["--max-hold-secs", "120", "--open-concurrency", "512"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = probe.stdout.take().unwrap();
        let line = tokio::time::timeout(
            Duration::from_secs(90),
            BufReader::new(stdout).lines().next_line(),
        )
        .await
        .expect("the streams were not opened in time")
        .unwrap()
        .expect("the probe failed (its error is above)");
        assert!(
            line.starts_with(&format!("holding {count} streams")),
            "{line}"
        );
        HeldStreams { probe }
    }

    /// Closes every stream (the probe exits, as a browser tab that is closed).
    async fn close(mut self) {
        kill(
            Pid::from_raw(i32::try_from(self.probe.id().unwrap()).unwrap()),
            Signal::SIGTERM,
        )
        .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), self.probe.wait())
            .await
            .expect("the probe did not exit")
            .unwrap();
        assert!(status.success(), "{status}");
    }
}

/// Lets this process, and so the proxy and the probe it starts, open as many files as the hard
/// limit allows (as `bench/memory.sh` does); `needed` must fit under it.
fn raise_open_files_limit(needed: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= needed,
        "the open-files hard limit is {hard}; this test needs {needed}"
    );
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

#[tokio::test]
async fn ten_thousand_idle_streams_leave_no_task_descriptor_or_memory_behind() {
    const STREAMS: usize = 10_000;
    // The proxy holds one descriptor per stream (the mock provider answers in process), the
    // probe one per stream.
    raise_open_files_limit(STREAMS as u64 + 1_000);
    let proxy = ProxyProcess::start(
        r#"
        [upstream]
        first_byte_timeout_ms = 600000
        idle_timeout_ms = 600000
        request_timeout_ms = 600000
        max_concurrent_requests = 100000
        [[providers]]
        name = "mock"
        kind = "mock"
        [providers.mock]
        chunk_delay_ms = 600000      # the first chunk at once, then silence: idle streams
        "#,
    )
    .await;
    let client = client();
    // A few streams first bring the runtime's worker threads and the connection machinery up.
    HeldStreams::open(&proxy, 100).await.close().await;
    let before = proxy.settled_holdings(&client).await;

    let mut rounds = Vec::new();
    for _ in 0..2 {
        let held = HeldStreams::open(&proxy, STREAMS).await;
        let holding = proxy.holdings(&client).await;
        // The counts see the streams: each holds a connection task and its socket.
        assert!(
            holding.tasks >= before.tasks + STREAMS as u64,
            "{before:?} -> {holding:?}"
        );
        assert!(
            holding.fds >= before.fds + STREAMS,
            "{before:?} -> {holding:?}"
        );
        held.close().await;
        // Closed streams end their tasks and close their sockets at once (bounded wait).
        let deadline = Instant::now() + Duration::from_secs(10);
        let after = loop {
            let after = proxy.settled_holdings(&client).await;
            if (after.tasks, after.fds) == (before.tasks, before.fds) || Instant::now() > deadline {
                break after;
            }
        };
        assert_eq!(
            after.tasks, before.tasks,
            "tasks left behind: {before:?} -> {after:?}"
        );
        assert_eq!(
            after.fds, before.fds,
            "descriptors left behind: {before:?} -> {after:?}"
        );
        rounds.push((holding, after));
    }
    // Memory: the allocator (mimalloc) keeps the pages of closed streams for reuse, so RSS stays
    // near its peak after the first round whether or not anything leaked. What leaks grows
    // with every round; what is kept is reused. So the second round must fit in what the first
    // left behind, within a tenth of what the first round's streams took: a leak of a tenth
    // of a stream's memory (about 2 KB of some 20 KB) fails.
    let (first_peak, first_after) = rounds[0];
    let (_, second_after) = rounds[1];
    let one_round = first_peak.rss_kib.saturating_sub(before.rss_kib);
    assert!(
        second_after.rss_kib <= first_after.rss_kib + one_round / 10,
        "memory grew by {} KiB in a second round of {STREAMS} streams (one round takes {one_round} KiB): \
         {before:?}, then {rounds:?}",
        second_after.rss_kib.saturating_sub(first_after.rss_kib)
    );
}
