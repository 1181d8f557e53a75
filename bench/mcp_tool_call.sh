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
# Result: bench/results/mcp_tool_call[_rmcp].json. (The suite's MCP scenario, bench/mcp.sh,
# runs the rmcp variant too, plus throughput and peers.)
#
# Usage: bench/mcp_tool_call.sh [CALLS] [everything|rmcp]
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
calls="${1:-1000}"
upstream_kind="${2:-everything}"

everything_js="node_modules/@modelcontextprotocol/server-everything/dist/index.js"
if [[ "$upstream_kind" == everything && ! -f "$everything_js" ]]; then
  echo "$everything_js is missing: run npm ci at the repository root (cargo xtask test does)" >&2
  exit 1
fi

build_release
case "$upstream_kind" in
  everything)
    # server-everything binds every interface; the preload keeps it on 127.0.0.1.
    PORT=0 start everything "${ON_SUT[@]}" node -r ./tests/mcp/loopback.cjs "$everything_js" streamableHttp
    result="$RESULTS/mcp_tool_call.json"
    ;;
  rmcp)
    start mcp-test-server "${ON_SUT[@]}" "$RELEASE/mcp-test-server" --listen 127.0.0.1:0 --stateless
    result="$RESULTS/mcp_tool_call_rmcp.json"
    ;;
  *) echo "unknown upstream $upstream_kind (everything or rmcp)" >&2; exit 2 ;;
esac
upstream="$origin/mcp"

cat >"$WORK/mcp-proxy.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[[mcp_servers]]
name = "bench"
transport = "streamable_http"
url = "$upstream"
TOML
start_proxy mcp-proxy "$WORK/mcp-proxy.toml"
echo "==> upstream $upstream ($upstream_kind), proxy $proxy"

"${ON_CLIENT[@]}" "$RELEASE/mcp-latency" --proxy "$proxy" --server bench --upstream "$upstream" \
  --calls "$calls" --out "$result"
