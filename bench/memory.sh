#!/usr/bin/env bash
# Scenario 4: the proxy's resident memory (VmRSS of /proc/PID/status): right after start, idle
# after a warm-up chat and stream, and while COUNTS open streams (default 1000 and 10000) are held
# through it. The upstream holds each stream open after its first chunk (the fake LLM's
# `stall-stream`), and the proxy's idle timeout is set beyond the measurement. Each count runs
# on a fresh proxy.
#
# Each open stream costs the proxy two descriptors (client and upstream sockets), so the count is
# capped at what the open-files limit allows; the result says when it was.
#
# Result: bench/results/memory.json. Usage: bench/memory.sh [COUNT...]
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
counts=("$@")
[[ ${#counts[@]} -gt 0 ]] || counts=(1000 10000)

# Open files: as many as this shell may have (servers and the probe inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile="$(ulimit -n)"
max_streams=$(((nofile - 200) / 2))

build_release
start_fake_llm
cat >"$WORK/memory-proxy.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[upstream]
idle_timeout_ms = 600000
first_byte_timeout_ms = 600000
max_concurrent_requests = 100000
[[providers]]
name = "fake"
kind = "openai"
base_url = "$upstream"
api_key_env = "BENCH_UPSTREAM_KEY"
TOML
# `fresh_proxy`: a new proxy, warmed up with one chat and one stream; sets $rss_start, $rss_idle.
fresh_proxy() {
  [[ -n "${proxy_pid:-}" ]] && stop "$proxy_pid"
  start_proxy proxy "$WORK/memory-proxy.toml"
  sleep 1
  rss_start="$(rss_kib "$proxy_pid")"
  local route
  for route in chat stream; do
    curl -sS -o /dev/null --max-time 10 -H 'content-type: application/json' \
      --data '{"model":"fake/echo","messages":[{"role":"user","content":"warm up"}]}' "$proxy/api/llm/$route" ||
      echo "    warm-up $route failed" >&2
  done
  sleep 1
  rss_idle="$(rss_kib "$proxy_pid")"
  echo "    fresh proxy (pid $proxy_pid): RSS at start $rss_start KiB, idle after a warm-up chat and stream $rss_idle KiB"
}
echo "==> fake LLM $upstream, open files limit $nofile ($PINNING)"
fresh_proxy
first_start="$rss_start"
first_idle="$rss_idle"

holds=()
for wanted in "${counts[@]}"; do
  n="$wanted"
  ((n > max_streams)) && n="$max_streams"
  note=""
  [[ "$n" != "$wanted" ]] && note=" (asked for $wanted; capped by the open files limit $nofile)"
  echo "==> holding $n open streams$note"
  # Each count on a fresh proxy: memory freed by the last one stays with the allocator.
  fresh_proxy
  setsid "${ON_CLIENT[@]}" "$RELEASE/stream-probe" hold --proxy "$proxy" --model fake/stall-stream \
    --count "$n" >"$WORK/hold.out" 2>"$WORK/hold.err" </dev/null &
  pid="$!"
  pids+=("$pid")
  held=""
  for _ in $(seq 1 1800); do
    held="$(sed -n 's/^holding \([0-9]*\) streams.*/\1/p' "$WORK/hold.out")"
    [[ -n "$held" ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z "$held" ]]; then
    echo "    could not hold $n streams: $(tail -n 3 "$WORK/hold.err")"
    holds+=("{\"asked\": $wanted, \"streams\": $n, \"error\": $(json_str "$(tail -n 3 "$WORK/hold.err")")}")
    stop "$pid"
    continue
  fi
  sleep 2
  rss="$(rss_kib "$proxy_pid")"
  # How much of the RSS is transparent huge pages: touching any byte of a 2 MiB huge page makes
  # all of it resident, so an allocator that asks for them shows up here as memory per stream.
  huge="$(awk '/^AnonHugePages:/ {print $2}' "/proc/$proxy_pid/smaps_rollup" 2>/dev/null || true)"
  huge="${huge:-0}"
  fds="$(find "/proc/$proxy_pid/fd" -mindepth 1 -maxdepth 1 | wc -l)"
  echo "    $(cat "$WORK/hold.out"); proxy RSS $rss KiB ($huge KiB in huge pages), $fds open descriptors"
  stop "$pid"
  sleep 2
  rss_after="$(rss_kib "$proxy_pid")"
  echo "    released: proxy RSS $rss_after KiB"
  holds+=("{\"asked\": $wanted, \"streams\": $held, \"rss_idle_kib\": $rss_idle, \"rss_kib\": $rss, \"anon_huge_pages_kib\": $huge, \"proxy_fds\": $fds, \"rss_after_release_kib\": $rss_after, \"bytes_per_stream\": $(((rss - rss_idle) * 1024 / held))}")
done

list="$(IFS=,; echo "[${holds[*]}]")"
write_result memory "cargo xtask bench memory ${counts[*]}  (bench/memory.sh)" '{}' \
  "rss_start_kib=$first_start" "rss_idle_kib=$first_idle" "open_files_limit=$nofile" "held=$list"
python3 "$ROOT/bench/report.py" --print memory
