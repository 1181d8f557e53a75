#!/usr/bin/env bash
# Scenario 1: non-streamed chat. What the proxy adds over calling the upstream directly, and
# LiteLLM's proxy in front of the same upstream for comparison.
#
# - sequential: REQUESTS (default 1000) requests one at a time, direct and proxied interleaved
#   (chat-latency);
# - fixed rates (500, 1000, 2000, 3000 RPS, BENCH_SECONDS each, default 8) with oha, latency
#   measured from each request's scheduled time (--latency-correction), so a stalled server
#   cannot hide its queue;
# - saturation: as many requests as BENCH_SAT_CONNECTIONS (default 64) connections carry.
#
# Bodies are about 1 KB (one user message), answered with about 1 KB by the `echo` model.
# Result: bench/results/chat.json. Usage: bench/chat.sh [REQUESTS]
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
requests="${1:-1000}"
seconds="${BENCH_SECONDS:-8}"
read -r -a rates <<<"${BENCH_RATES:-500 1000 2000 3000}"
rate_connections="${BENCH_RATE_CONNECTIONS:-32}"
sat_connections="${BENCH_SAT_CONNECTIONS:-64}"

build_release
ensure_oha
# shellcheck source=peers.sh
source "$ROOT/bench/peers.sh"

start_fake_llm
cat >"$WORK/chat-proxy.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[[providers]]
name = "fake"
kind = "openai"
base_url = "$upstream"
api_key_env = "BENCH_UPSTREAM_KEY"
TOML
start_proxy proxy "$WORK/chat-proxy.toml"
echo "==> upstream $upstream, proxy $proxy ($PINNING)"

litellm_url=""
start_litellm "$upstream" "$UPSTREAM_KEY"
if [[ "$litellm_status" == ok:* ]]; then
  litellm_url="${litellm_status#ok:}"
  echo "==> LiteLLM $litellm_url"
else
  echo "==> LiteLLM not measured: $litellm_status"
fi

# A ~1 KB request: the same message for every target, only the model name differs.
content="$(python3 -c 'print(("The quick brown fox jumps over the lazy dog. " * 21)[:930])')"
body() { python3 -c 'import json, sys; print(json.dumps({"model": sys.argv[1], "messages": [{"role": "user", "content": sys.argv[2]}]}))' "$1" "$content"; }
body echo >"$WORK/chat-direct.json"
body fake/echo >"$WORK/chat-proxy.json"
body echo >"$WORK/chat-litellm.json"
echo "    request body: $(wc -c <"$WORK/chat-proxy.json") bytes (proxy), answer: $(curl -s -H 'content-type: application/json' --data-binary @"$WORK/chat-proxy.json" "$proxy/api/llm/chat" | wc -c) bytes"

echo "==> sequential, $requests requests per side (interleaved)"
"${ON_CLIENT[@]}" "$RELEASE/chat-latency" --upstream "$upstream" --upstream-key "$UPSTREAM_KEY" \
  --proxy "$proxy" --requests "$requests" --out "$WORK/chat-sequential.json"

# `load TARGET RATE|sat OUT`: one oha run against TARGET (direct, proxy or litellm).
load() {
  local target="$1" rate="$2" out="$3" url auth=() args=()
  case "$target" in
    direct) url="$upstream/chat/completions"; auth=(-H "authorization: Bearer $UPSTREAM_KEY") ;;
    proxy) url="$proxy/api/llm/chat" ;;
    litellm) url="$litellm_url/v1/chat/completions" ;;
  esac
  if [[ "$rate" == sat ]]; then
    args=(-c "$sat_connections")
  else
    args=(-c "$rate_connections" -q "$rate" --latency-correction)
  fi
  "${ON_CLIENT[@]}" oha --no-tui --output-format json -w -z "${seconds}s" "${args[@]}" -m POST \
    -H "content-type: application/json" "${auth[@]}" -D "$WORK/chat-$target.json" "$url" >"$out"
}

targets=(direct proxy)
[[ -n "$litellm_url" ]] && targets+=(litellm)
# Unmeasured first: connections, allocator and (for LiteLLM) its lazy imports.
for t in "${targets[@]}"; do seconds=2 load "$t" 500 /dev/null; done

parts=()
for rate in "${rates[@]}" sat; do
  for t in "${targets[@]}"; do
    if [[ "$rate" == sat ]]; then echo "==> $t at saturation"; else echo "==> $t at $rate RPS"; fi
    load "$t" "$rate" "$WORK/oha-$t-$rate.json"
    python3 "$ROOT/bench/oha_summary.py" "$WORK/oha-$t-$rate.json" "$rate" >"$WORK/chat-$t-$rate.json"
    parts+=("load.$t.$rate=$WORK/chat-$t-$rate.json")
  done
done

versions="$(python3 -c 'import json, sys; print(json.dumps({"oha": sys.argv[1], "litellm": sys.argv[2] or None}))' \
  "$(oha --version | awk '{print $2; exit}')" "$(litellm_version)")"
write_result chat "cargo xtask bench chat $requests  (bench/chat.sh; BENCH_SECONDS=$seconds, rates ${rates[*]}, $rate_connections connections at fixed rates, $sat_connections at saturation)" \
  "$versions" "sequential=$WORK/chat-sequential.json" \
  "litellm_status=$(json_str "$litellm_status")" \
  "settings=$(python3 -c 'import json, sys; print(json.dumps({"seconds": int(sys.argv[1]), "rates": [int(r) for r in sys.argv[2].split()], "rate_connections": int(sys.argv[3]), "sat_connections": int(sys.argv[4]), "request_bytes": int(sys.argv[5])}))' "$seconds" "${rates[*]}" "$rate_connections" "$sat_connections" "$(wc -c <"$WORK/chat-proxy.json")")" \
  "${parts[@]}"
python3 "$ROOT/bench/report.py" --print chat
