#!/usr/bin/env bash
# Soak: the proxy under a fixed mixed load for SECONDS (default 600), its resident memory sampled
# every 10 s. Three oha runs at once, each at a fixed rate: non-streamed chats (RATE, default
# 500/s), streamed chats (RATE/10) and MCP tool calls through the pool to the MCP test server
# over Streamable HTTP (RATE/10).
#
# Verdict: zero failed requests, and RSS flat within 10 %: after a one-minute warm-up, every
# sample lies within 10 % of the first one.
#
# Result: bench/results/soak.json. Usage: bench/soak.sh [SECONDS] [RATE]
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
seconds="${1:-600}"
rate="${2:-500}"
side_rate=$((rate / 10 > 0 ? rate / 10 : 1))
warmup=$((seconds >= 120 ? 60 : seconds / 4))

build_release
ensure_oha
start_fake_llm
start mcp-http "${ON_SUT[@]}" "$RELEASE/mcp-test-server" --listen 127.0.0.1:0 --stateless
mcp_http="$origin/mcp"
cat >"$WORK/soak-proxy.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[[providers]]
name = "fake"
kind = "openai"
base_url = "$upstream"
api_key_env = "BENCH_UPSTREAM_KEY"
[[mcp_servers]]
name = "http"
transport = "streamable_http"
url = "$mcp_http"
TOML
start_proxy proxy "$WORK/soak-proxy.toml"
echo "==> soak: ${seconds}s; chats $rate/s, streams $side_rate/s, MCP tool calls $side_rate/s; proxy $proxy ($PINNING)"

printf '%s' '{"model":"fake/echo","messages":[{"role":"user","content":"soak"}]}' >"$WORK/soak-body-chat.json"
printf '%s' '{"server":"http","name":"echo","arguments":{"message":"soak"}}' >"$WORK/soak-body-tool.json"

# `drive NAME PATH BODY RATE`: one fixed-rate oha run for the whole soak, in the background.
drive() {
  "${ON_CLIENT[@]}" oha --no-tui --output-format json -w -z "${seconds}s" -c 16 -q "$4" \
    --latency-correction -m POST -H "content-type: application/json" -D "$3" "$proxy$2" \
    >"$WORK/soak-$1.json" 2>"$WORK/soak-$1.err" &
}
drive chat /api/llm/chat "$WORK/soak-body-chat.json" "$rate"
chat_pid=$!
drive stream /api/llm/stream "$WORK/soak-body-chat.json" "$side_rate"
stream_pid=$!
drive tool /api/mcp/tool "$WORK/soak-body-tool.json" "$side_rate"
tool_pid=$!

samples="$WORK/soak-rss.txt"
: >"$samples"
started=$SECONDS
while ((SECONDS - started < seconds)); do
  sleep 10
  rss="$(rss_kib "$proxy_pid")"
  echo "$((SECONDS - started)) $rss" >>"$samples"
  echo "    $((SECONDS - started))s RSS ${rss} KiB"
done
wait "$chat_pid" "$stream_pid" "$tool_pid"

python3 - "$samples" "$warmup" "$WORK/soak-chat.json" "$WORK/soak-stream.json" "$WORK/soak-tool.json" \
  "$WORK/soak-summary.json" "$seconds" "$rate" "$side_rate" <<'PY'
import json, sys
samples_path, warmup, chat, stream, tool, out, seconds, rate, side_rate = sys.argv[1:]
warmup = int(warmup)
samples = [tuple(map(int, line.split())) for line in open(samples_path) if line.strip()]
after = [rss for t, rss in samples if t >= warmup] or [rss for _, rss in samples]
base = after[0]
spread = max(abs(rss - base) for rss in after) / base if base else None
loads = {}
for name, path in (("chat", chat), ("stream", stream), ("tool", tool)):
    raw = json.load(open(path))
    codes = {k: int(v) for k, v in raw.get("statusCodeDistribution", {}).items()}
    errors = {k: int(v) for k, v in raw.get("errorDistribution", {}).items()}
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    loads[name] = {
        "requests": sum(codes.values()) + sum(errors.values()),
        "ok": ok,
        "failed": sum(codes.values()) + sum(errors.values()) - ok,
        "status_codes": codes,
        "errors": errors,
        "rps": raw.get("summary", {}).get("requestsPerSec"),
        "p99_us": (raw.get("latencyPercentiles", {}).get("p99") or 0) * 1e6,
    }
failed = sum(l["failed"] for l in loads.values())
summary = {
    "seconds": int(seconds),
    "rates": {"chat": int(rate), "stream": int(side_rate), "tool": int(side_rate)},
    "warmup_seconds": warmup,
    "rss_kib_samples": samples,
    "rss_kib_after_warmup": {"first": base, "min": min(after), "max": max(after)},
    "rss_spread": spread,
    "loads": loads,
    "failed": failed,
    "verdict": {"zero_errors": failed == 0, "rss_flat_within_10_percent": spread is not None and spread <= 0.10},
}
json.dump(summary, open(out, "w"), indent=2)
print(f"==> RSS after warm-up {base} KiB, range {min(after)}..{max(after)} KiB, spread {spread:.1%}; "
      f"requests {sum(l['requests'] for l in loads.values())}, failed {failed}")
print(f"    verdict: {summary['verdict']}")
PY
write_result soak "bench/soak.sh $seconds $rate" "{\"oha\": $(json_str "$(oha --version 2>/dev/null || echo unknown)")}" \
  "soak=$WORK/soak-summary.json"
