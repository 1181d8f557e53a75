#!/usr/bin/env bash
# Added latency of the proxy's POST /api/llm/chat over a direct call to the same upstream.
#
# Builds release binaries, starts the deterministic test upstream and the proxy on 127.0.0.1, then
# sends REQUESTS (default 1000) non-streamed chat requests to each, interleaved, and reports the
# medians and p99 of both and their difference. Result: bench/results/chat_overhead.json.
#
# Usage: bench/chat_overhead.sh [REQUESTS]     (or `cargo xtask bench [REQUESTS]`)
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${1:-1000}"
key="bench-upstream-key"
work="target/bench"
mkdir -p "$work" bench/results

echo "==> building release binaries"
cargo build --release --quiet -p switchyard-tests --bin fake-llm --bin chat-latency \
  -p switchyard-proxy --bin switchyard

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# Starts "$@" in the background and sets $origin to the origin it announces ("listening on
# ORIGIN"). Not run in a command substitution: its subshell would keep the pid from the cleanup.
start() {
  local out="$work/$1.out"; shift
  "$@" >"$out" 2>"$out.err" &
  pids+=("$!")
  origin=""
  for _ in $(seq 1 100); do
    origin="$(sed -n 's/^listening on //p' "$out" | head -n 1)"
    if [[ -n "$origin" ]]; then return; fi
    sleep 0.1
  done
  echo "did not start: $*" >&2; cat "$out.err" >&2; exit 1
}

start fake-llm target/release/fake-llm --listen 127.0.0.1:0 --api-key "$key"
upstream="$origin/v1"
cat >"$work/proxy.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[[providers]]
name = "fake"
kind = "openai"
base_url = "$upstream"
api_key_env = "BENCH_UPSTREAM_KEY"
TOML
BENCH_UPSTREAM_KEY="$key" start proxy target/release/switchyard serve --config "$work/proxy.toml"
proxy="$origin"
echo "==> upstream $upstream, proxy $proxy"

target/release/chat-latency --upstream "$upstream" --upstream-key "$key" --proxy "$proxy" \
  --requests "$requests" --out bench/results/chat_overhead.json
