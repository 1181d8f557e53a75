#!/usr/bin/env bash
# Added latency of the proxy's POST /api/llm/chat over a direct call to the same upstream.
#
# Builds release binaries, starts the deterministic test upstream and the proxy on 127.0.0.1, then
# sends REQUESTS (default 1000) non-streamed chat requests to each, interleaved, and reports the
# medians and p99 of both and their difference. Result: bench/results/chat_overhead.json.
# (The suite's chat scenario, bench/chat.sh, runs this measurement too, plus load and peers.)
#
# Usage: bench/chat_overhead.sh [REQUESTS]
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
requests="${1:-1000}"

build_release
start_fake_llm
cat >"$WORK/proxy.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[[providers]]
name = "fake"
kind = "openai"
base_url = "$upstream"
api_key_env = "BENCH_UPSTREAM_KEY"
TOML
start_proxy proxy "$WORK/proxy.toml"
echo "==> upstream $upstream, proxy $proxy"

"${ON_CLIENT[@]}" "$RELEASE/chat-latency" --upstream "$upstream" --upstream-key "$UPSTREAM_KEY" \
  --proxy "$proxy" --requests "$requests" --out "$RESULTS/chat_overhead.json"
