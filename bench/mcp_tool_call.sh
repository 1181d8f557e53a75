#!/usr/bin/env bash
# What the proxy's MCP session pool saves: latency of one tool call (`echo`) made through the
# proxy (pooled session), with a fresh MCP session per call (connect + handshake + call + close),
# and directly on one reused session.
#
# Builds release binaries, starts the upstream on 127.0.0.1 and the proxy in front of it, then
# makes CALLS (default 1000) calls each way, interleaved, and reports p50/p99.
#
# Upstreams: `everything` (default): @modelcontextprotocol/server-everything over Streamable HTTP
# (Node.js, legacy sessions, MCP 2025-11-25; needs `npm ci` at the repository root);
# `rmcp`: the rmcp test server, stateless Streamable HTTP, MCP 2026-07-28.
# Result: bench/results/mcp_tool_call[_rmcp].json.
#
# Usage: bench/mcp_tool_call.sh [CALLS] [everything|rmcp]
set -euo pipefail
cd "$(dirname "$0")/.."
calls="${1:-1000}"
upstream_kind="${2:-everything}"
work="target/bench"
mkdir -p "$work" bench/results

everything_js="node_modules/@modelcontextprotocol/server-everything/dist/index.js"
if [[ "$upstream_kind" == everything && ! -f "$everything_js" ]]; then
  echo "$everything_js is missing: run npm ci at the repository root (cargo xtask test does)" >&2
  exit 1
fi

echo "==> building release binaries"
cargo build --release --quiet -p switchyard-tests --bin mcp-latency --bin mcp-test-server \
  -p switchyard-proxy --bin switchyard

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# Starts "$@" in the background and sets $origin to the origin it announces ("listening on
# ORIGIN") on stdout or stderr (the loopback preload announces Node servers on stderr). Not run
# in a command substitution: its subshell would keep the pid from the cleanup.
start() {
  local out="$work/$1.out"; shift
  "$@" >"$out" 2>"$out.err" &
  pids+=("$!")
  origin=""
  for _ in $(seq 1 150); do
    origin="$(sed -n 's/^listening on //p' "$out" "$out.err" | head -n 1)"
    if [[ -n "$origin" ]]; then return; fi
    sleep 0.1
  done
  echo "did not start: $*" >&2; cat "$out.err" >&2; exit 1
}

case "$upstream_kind" in
  everything)
    # server-everything binds every interface; the preload keeps it on 127.0.0.1.
    PORT=0 start everything node -r ./tests/mcp/loopback.cjs "$everything_js" streamableHttp
    result="bench/results/mcp_tool_call.json"
    ;;
  rmcp)
    start mcp-test-server target/release/mcp-test-server --listen 127.0.0.1:0 --stateless
    result="bench/results/mcp_tool_call_rmcp.json"
    ;;
  *) echo "unknown upstream $upstream_kind (everything or rmcp)" >&2; exit 2 ;;
esac
upstream="$origin/mcp"

cat >"$work/mcp-proxy.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[[mcp_servers]]
name = "bench"
transport = "streamable_http"
url = "$upstream"
TOML
start mcp-proxy target/release/switchyard serve --config "$work/mcp-proxy.toml"
proxy="$origin"
echo "==> upstream $upstream ($upstream_kind), proxy $proxy"

target/release/mcp-latency --proxy "$proxy" --server bench --upstream "$upstream" \
  --calls "$calls" --out "$result"
