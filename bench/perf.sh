#!/usr/bin/env bash
# Where the proxy spends its CPU under scenario 1 at saturation: `perf record` (cpu-clock
# sampling) on the proxy's process while oha drives `POST /api/llm/chat` with ~1 KB bodies as fast
# as BENCH_SAT_CONNECTIONS (default 64) connections go, then the top functions by self time.
#
# Needs `perf` (Debian: linux-perf, installed here if missing) and a kernel that lets it sample.
# Result: bench/results/perf.json and target/bench/perf.data. Usage: bench/perf.sh [SECONDS]
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
seconds="${1:-10}"
sat_connections="${BENCH_SAT_CONNECTIONS:-64}"

status="ok"
if ! command -v perf >/dev/null; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "==> installing perf (apt-get install linux-perf)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf; } >/dev/null 2>&1 || true
  fi
fi
if ! command -v perf >/dev/null; then
  status="perf is not available (Debian: apt-get install linux-perf)"
fi

if [[ "$status" == ok ]]; then
  build_release
  ensure_oha
  start_fake_llm
  cat >"$WORK/perf-proxy.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[[providers]]
name = "fake"
kind = "openai"
base_url = "$upstream"
api_key_env = "BENCH_UPSTREAM_KEY"
TOML
  start_proxy proxy "$WORK/perf-proxy.toml"
  python3 -c 'import json, sys; print(json.dumps({"model": "fake/echo", "messages": [{"role": "user", "content": ("The quick brown fox jumps over the lazy dog. " * 21)[:930]}]}))' >"$WORK/perf-body.json"
  echo "==> oha at saturation for $((seconds + 3)) s; perf records the proxy (pid $proxy_pid) for $seconds s"
  setsid "${ON_CLIENT[@]}" oha --no-tui --output-format json -z "$((seconds + 3))s" -c "$sat_connections" -m POST \
    -H "content-type: application/json" -D "$WORK/perf-body.json" "$proxy/api/llm/chat" >"$WORK/perf-oha.json" 2>&1 </dev/null &
  oha_pid="$!"
  pids+=("$oha_pid")
  sleep 1
  if perf record -e cpu-clock -F 999 -p "$proxy_pid" -o "$WORK/perf.data" -- sleep "$seconds" >"$WORK/perf-record.log" 2>&1; then
    perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio --percent-limit 0.5 \
      >"$WORK/perf-symbols.txt" 2>/dev/null || true
    perf report -i "$WORK/perf.data" --no-children --sort dso --stdio >"$WORK/perf-dso.txt" 2>/dev/null || true
  else
    status="perf record failed: $(tail -n 2 "$WORK/perf-record.log" | tr '\n' ' ')"
  fi
  for _ in $(seq 1 100); do kill -0 "$oha_pid" 2>/dev/null || break; sleep 0.1; done
  stop "$oha_pid"
fi

python3 - "$WORK" "$status" >"$WORK/perf-top.json" <<'PY'
import json, re, sys
work, status = sys.argv[1], sys.argv[2]
def rows(path, limit):
    out = []
    try:
        for line in open(path):
            m = re.match(r"\s*([\d.]+)%\s+(?:\[[.k]\]\s+)?(.+?)\s*$", line)
            if m and not line.lstrip().startswith("#"):
                out.append({"percent": float(m.group(1)), "name": re.sub(r"(\s+-)+$", "", m.group(2)).strip()})
    except OSError:
        pass
    return out[:limit]
# A profile of error answers (a proxy that cannot reach its upstream, say) profiles the wrong
# path: the rate counts 2xx answers only, and any other answer marks the profile as failed.
codes = {}
try:
    oha = json.load(open(f"{work}/perf-oha.json"))
    codes = oha.get("statusCodeDistribution") or {}
    ok = sum(n for code, n in codes.items() if code.startswith("2"))
    total = sum(codes.values())
    rps = oha["summary"]["requestsPerSec"] * ok / total if total else None
    if status == "ok" and ok < total:
        status = f"{total - ok} of {total} answers were not 2xx: {codes}"
except (OSError, ValueError, KeyError):
    rps = None
print(json.dumps({"status": status, "rps_during_profile": rps, "status_codes": codes,
                  "top_symbols": rows(f"{work}/perf-symbols.txt", 30),
                  "by_object": rows(f"{work}/perf-dso.txt", 10)}))
PY
write_result perf "cargo xtask bench perf $seconds  (bench/perf.sh: perf record -e cpu-clock -F 999 -p PROXY under oha -c $sat_connections)" \
  "{\"perf\": $(json_str "$(perf --version 2>/dev/null | awk '{print $3}')")}" "profile=$WORK/perf-top.json"
python3 "$ROOT/bench/report.py" --print perf
