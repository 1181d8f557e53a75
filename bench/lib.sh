# shellcheck shell=bash
# Variables set here are read by the scripts that source it.
# shellcheck disable=SC2034
# Shared by the benchmark scripts (sourced, never run): paths, CPU pinning, starting and stopping
# servers, installing the load tool and the peers, and writing result files.
#
# Every server is started in a session of its own and killed with its children when the script
# exits, however it exits. Every wait is bounded.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
WORK="$ROOT/target/bench"
RESULTS="$ROOT/bench/results"
TOOLS="$WORK/tools"
mkdir -p "$WORK" "$RESULTS" "$TOOLS"
export PATH="$TOOLS/bin:$ROOT/node_modules/.bin:$PATH"
# The binaries are where cargo put them: a CARGO_TARGET_DIR of the caller's is honoured.
RELEASE="${CARGO_TARGET_DIR:-$ROOT/target}/release"

# Two cores: the load generator (client side) on one, the system under test (proxy, upstream,
# peers) on the other, so the client's work never steals the server's core. With more cores
# the same split applies; with one, nothing is pinned. BENCH_NO_PIN=1 turns pinning off.
NPROC="$(nproc)"
if [[ "${BENCH_NO_PIN:-0}" != 1 && "$NPROC" -ge 2 ]] && command -v taskset >/dev/null; then
  CLIENT_CPUS="0"
  SUT_CPUS="1"
  ((NPROC > 2)) && SUT_CPUS="1-$((NPROC - 1))"
  ON_CLIENT=(taskset -c "$CLIENT_CPUS")
  ON_SUT=(taskset -c "$SUT_CPUS")
  PINNING="client (load generator, probes) on CPU $CLIENT_CPUS; proxy, upstreams and peers on CPU $SUT_CPUS (taskset)"
else
  ON_CLIENT=()
  ON_SUT=()
  PINNING="not pinned"
fi

pids=()
# Kills every server started with `start` (its whole session: children too), politely first.
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 30); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [[ "$alive" == 0 ]] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# `start NAME CMD...`: starts CMD in the background in a session of its own, output to
# $WORK/NAME.out and .err, and waits (at most 60 s) for "listening on ORIGIN" on either; sets
# $origin and $pid. Not to be called in a command substitution: its subshell would keep the pid
# from the cleanup.
start() {
  local name="$1"; shift
  local out="$WORK/$name.out"
  setsid "$@" >"$out" 2>"$out.err" </dev/null &
  pid="$!"
  pids+=("$pid")
  origin=""
  for _ in $(seq 1 600); do
    origin="$(sed -n 's/^.*listening on \(http:\/\/[0-9.:]*\).*$/\1/p' "$out" "$out.err" | head -n 1)"
    [[ -n "$origin" ]] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "did not start: $*" >&2
  tail -n 20 "$out" "$out.err" >&2 || true
  return 1
}

# `start_at NAME URL CMD...`: for servers that cannot announce their port: starts CMD like
# `start` and waits (at most 120 s) until URL answers anything over HTTP.
start_at() {
  local name="$1" url="$2"; shift 2
  local out="$WORK/$name.out"
  setsid "$@" >"$out" 2>"$out.err" </dev/null &
  pid="$!"
  pids+=("$pid")
  for _ in $(seq 1 1200); do
    if curl -s -o /dev/null --max-time 1 "$url"; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "did not start: $*" >&2
  tail -n 20 "$out" "$out.err" >&2 || true
  return 1
}

# Stops one server started with `start`.
stop() {
  local p="$1" q
  kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  local keep=()
  for q in "${pids[@]}"; do [[ "$q" != "$p" ]] && keep+=("$q"); done
  pids=("${keep[@]}")
}

# A free TCP port on 127.0.0.1, for servers that must be told one.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Resident memory of a process, in KiB (VmRSS of /proc/PID/status).
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

build_release() {
  echo "==> building release binaries"
  cargo build --release --quiet -p switchyard-proxy --bin switchyard \
    -p switchyard-tests --bin fake-llm --bin chat-latency --bin mcp-test-server \
    --bin mcp-latency --bin mcp-load --bin stream-probe
}

# oha, the HTTP load generator (fixed rates with -q, JSON output), into target/bench/tools.
ensure_oha() {
  if command -v oha >/dev/null; then return 0; fi
  echo "==> installing oha into $TOOLS (cargo install, once)"
  cargo install --quiet --locked --root "$TOOLS" oha
}

# The deterministic upstream, pinned with the system under test; sets $upstream (…/v1).
UPSTREAM_KEY="bench-upstream-key"
start_fake_llm() {
  start fake-llm "${ON_SUT[@]}" "$RELEASE/fake-llm" --listen 127.0.0.1:0 --api-key "$UPSTREAM_KEY"
  upstream="$origin/v1"
  fake_llm_pid="$pid"
}

# `start_proxy NAME CONFIG`: the proxy, pinned with the system under test; sets $proxy.
start_proxy() {
  BENCH_UPSTREAM_KEY="$UPSTREAM_KEY" start "$1" "${ON_SUT[@]}" "$RELEASE/switchyard" serve --config "$2"
  proxy="$origin"
  proxy_pid="$pid"
}

# Machine facts and versions as JSON, for every result file.
machine_json() {
  python3 - "$PINNING" <<'PY'
import json, os, platform, subprocess, sys
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        return None
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None)
mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
print(json.dumps({
    "nproc": os.cpu_count(),
    "kernel": platform.release(),
    "cpu": cpu,
    "mem_total_mib": mem // 1024,
    "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
    "rustc": run("rustc", "--version"),
    "git_commit": run("git", "rev-parse", "--short", "HEAD"),
    "git_dirty": bool(run("git", "status", "--porcelain", "--untracked-files=no")),
    "pinning": sys.argv[1],
    "nofile_limit": run("bash", "-c", "ulimit -n"),
}))
PY
}

# `write_result SCENARIO COMMAND VERSIONS_JSON KEY=FILE...`: bench/results/SCENARIO.json with
# the command, the machine, the versions and each part (a JSON file, or a JSON literal) under
# KEY (`a.b` nests).
write_result() {
  local scenario="$1" command="$2" versions="$3"; shift 3
  machine_json >"$WORK/machine.json"
  python3 - "$RESULTS/$scenario.json" "$scenario" "$command" "$versions" "$WORK/machine.json" "$@" <<'PY'
import datetime, json, os, sys
out, scenario, command, versions, machine, *parts = sys.argv[1:]
doc = {
    "scenario": scenario,
    "command": command,
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": json.load(open(machine)),
    "versions": json.loads(versions),
}
for part in parts:
    key, _, value = part.partition("=")
    if os.path.isfile(value):
        try:
            value = json.load(open(value))
        except ValueError as e:
            value = {"error": f"unreadable result {value}: {e}"}
    else:
        value = json.loads(value)
    # `a.b.c=...` nests.
    *path, last = key.split(".")
    node = doc
    for step in path:
        node = node.setdefault(step, {})
    node[last] = value
json.dump(doc, open(out, "w"), indent=2)
print(f"  result: {os.path.relpath(out)}")
PY
}

# JSON string of "$1" (for messages put into results).
json_str() { python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$1"; }
