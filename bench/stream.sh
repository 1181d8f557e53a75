#!/usr/bin/env bash
# Scenario 2: streamed chat (`POST /api/llm/stream`) against the same stream straight from the
# upstream, interleaved stream by stream (stream-probe measure):
#
# - per-chunk delay: an upstream that stamps each chunk with the time it handed it to its HTTP
#   server (stream-probe upstream: CHUNKS chunks, DELAY_MS apart); the client subtracts the
#   stamp from the time it read the chunk, through the proxy and directly;
# - time to first byte, on that upstream and on the scripted fake LLM (`echo`, streamed).
#
# Result: bench/results/stream.json. Usage: bench/stream.sh [STREAMS]
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
streams="${1:-100}"
chunks="${BENCH_STREAM_CHUNKS:-20}"
delay_ms="${BENCH_STREAM_DELAY_MS:-10}"

build_release
start_fake_llm
start stamp-upstream "${ON_SUT[@]}" "$RELEASE/stream-probe" upstream --listen 127.0.0.1:0 \
  --chunks "$chunks" --delay-ms "$delay_ms"
stamped="$origin/v1"
cat >"$WORK/stream-proxy.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[[providers]]
name = "fake"
kind = "openai"
base_url = "$upstream"
api_key_env = "BENCH_UPSTREAM_KEY"
[[providers]]
name = "stamp"
kind = "openai"
base_url = "$stamped"
TOML
start_proxy proxy "$WORK/stream-proxy.toml"
echo "==> stamped upstream $stamped, fake LLM $upstream, proxy $proxy ($PINNING)"

echo "==> $streams streams of $chunks chunks, ${delay_ms} ms apart, per side"
"${ON_CLIENT[@]}" "$RELEASE/stream-probe" measure --upstream "$stamped" --proxy "$proxy" \
  --provider stamp --model stamp --streams "$streams" --label "stamped, $chunks chunks ${delay_ms} ms apart" \
  --out "$WORK/stream-stamped.json"
echo "==> $((streams * 3)) streams of the fake LLM's echo, per side"
"${ON_CLIENT[@]}" "$RELEASE/stream-probe" measure --upstream "$upstream" --upstream-key "$UPSTREAM_KEY" \
  --proxy "$proxy" --provider fake --model echo --streams "$((streams * 3))" \
  --label "fake LLM echo" --out "$WORK/stream-echo.json"

write_result stream "cargo xtask bench stream $streams  (bench/stream.sh; $chunks chunks ${delay_ms} ms apart)" \
  '{}' "settings={\"streams\": $streams, \"chunks\": $chunks, \"delay_ms\": $delay_ms}" \
  "stamped=$WORK/stream-stamped.json" "echo=$WORK/stream-echo.json"
python3 "$ROOT/bench/report.py" --print stream
