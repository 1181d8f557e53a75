#!/usr/bin/env bash
# Scenario 3: MCP `tools/call` (`echo` of the rmcp test server).
#
# - latency, sequential and interleaved (mcp-latency): through the proxy's pool, with a fresh
#   session per call (connect-per-request), and directly on one reused Streamable HTTP session;
#   the upstream is the test server over stateless Streamable HTTP (MCP 2026-07-28);
# - latency (one caller) and throughput (BENCH_MCP_CONCURRENCY callers, default 16) of each way in
#   (mcp-load): the proxy in front of the test server over stdio and over HTTP, the HTTP server
#   directly, and the peers supergateway (npm) and mcp-proxy (PyPI) in front of the same stdio
#   server (one legacy session each, as their pooled equivalent).
#
# Result: bench/results/mcp.json. Usage: bench/mcp.sh [CALLS]
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
calls="${1:-1000}"
concurrency="${BENCH_MCP_CONCURRENCY:-16}"
seconds="${BENCH_SECONDS:-8}"

build_release
# shellcheck source=peers.sh
source "$ROOT/bench/peers.sh"
server="$RELEASE/mcp-test-server"

start mcp-http "${ON_SUT[@]}" "$server" --listen 127.0.0.1:0 --stateless
mcp_http="$origin/mcp"
cat >"$WORK/mcp-switchyard.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[[mcp_servers]]
name = "http"
transport = "streamable_http"
url = "$mcp_http"
[[mcp_servers]]
name = "stdio"
transport = "stdio"
command = "$server"
args = ["--stdio"]
TOML
start_proxy proxy "$WORK/mcp-switchyard.toml"
echo "==> MCP test server $mcp_http, proxy $proxy ($PINNING)"

echo "==> sequential latency, $calls calls per way (interleaved)"
"${ON_CLIENT[@]}" "$RELEASE/mcp-latency" --proxy "$proxy" --server http --upstream "$mcp_http" \
  --calls "$calls" --out "$WORK/mcp-latency.json"

start_supergateway "$server --stdio"
start_mcp_proxy "$server" --stdio
targets=(
  "switchyard (stdio)=switchyard:$proxy#stdio"
  "switchyard (http)=switchyard:$proxy#http"
  "direct (http)=mcp:$mcp_http"
)
for peer in supergateway mcp_proxy; do
  status_var="${peer}_status"
  status="${!status_var}"
  label="${peer/_/-}"
  if [[ "$status" == ok:* ]]; then
    targets+=("$label (stdio)=mcp-session:${status#ok:}")
    echo "==> $label ${status#ok:}"
  else
    echo "==> $label not measured: $status"
  fi
done
target_args=()
for t in "${targets[@]}"; do target_args+=(--target "$t"); done

echo "==> one caller, 5 s per target"
"${ON_CLIENT[@]}" "$RELEASE/mcp-load" "${target_args[@]}" --concurrency 1 --duration-secs 5 \
  --warmup-secs 1 --out "$WORK/mcp-load-1.json"
echo "==> $concurrency callers, $seconds s per target"
"${ON_CLIENT[@]}" "$RELEASE/mcp-load" "${target_args[@]}" --concurrency "$concurrency" \
  --duration-secs "$seconds" --out "$WORK/mcp-load-n.json"

versions="$(python3 -c 'import json, sys; print(json.dumps({"supergateway": sys.argv[1] or None, "mcp-proxy": sys.argv[2] or None}))' \
  "$(supergateway_version)" "$(mcp_proxy_version)")"
write_result mcp "cargo xtask bench mcp $calls  (bench/mcp.sh; $concurrency callers for $seconds s per target)" \
  "$versions" "latency=$WORK/mcp-latency.json" "sequential=$WORK/mcp-load-1.json" \
  "throughput=$WORK/mcp-load-n.json" \
  "peer_status={\"supergateway\": $(json_str "$supergateway_status"), \"mcp-proxy\": $(json_str "$mcp_proxy_status")}"
python3 "$ROOT/bench/report.py" --print mcp
