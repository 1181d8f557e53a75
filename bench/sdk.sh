#!/usr/bin/env bash
# Scenario 5: the SDK. Its download size (gzipped .wasm + JS, as `cargo xtask sdk` prints it),
# and what `client.chat` costs over a plain `fetch` of the same request in headless Chromium, in
# direct and in proxy mode (bench/sdk_browser.mjs).
#
# Result: bench/results/sdk.json. Usage: bench/sdk.sh [CALLS]
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
calls="${1:-500}"

echo "==> cargo xtask sdk"
size_line=""
size_status="ok"
if cargo xtask sdk >"$WORK/sdk-build.log" 2>&1; then
  size_line="$(grep -m 1 '^switchyard-client (web target)' "$WORK/sdk-build.log" || true)"
  echo "    $size_line"
else
  size_status="cargo xtask sdk failed (see target/bench/sdk-build.log): $(tail -n 3 "$WORK/sdk-build.log" | tr '\n' ' ')"
  echo "    $size_status"
fi
sizes="$(python3 - "$size_line" <<'PY'
import json, re, sys
m = re.search(r"\.wasm ([\d.]+) KiB raw, ([\d.]+) KiB gzipped; JS ([\d.]+) KiB raw, ([\d.]+) KiB gzipped; total ([\d.]+) KiB gzipped", sys.argv[1])
keys = ["wasm_raw_kib", "wasm_gzip_kib", "js_raw_kib", "js_gzip_kib", "total_gzip_kib"]
print(json.dumps({"printed": sys.argv[1], **dict(zip(keys, map(float, m.groups())))} if m else {"printed": sys.argv[1] or None}))
PY
)"

browser_status="ok"
if [[ ! -f "$ROOT/sdk-wasm/pkg/index.js" ]]; then
  browser_status="no package in sdk-wasm/pkg to load"
elif [[ ! -x /usr/bin/chromium ]]; then
  browser_status="no /usr/bin/chromium (cargo xtask setup installs it)"
else
  build_release
  start_fake_llm
  cat >"$WORK/sdk-proxy.toml" <<TOML
[server]
listen = "127.0.0.1:0"
cors_allowed_origins = ["*"]
[[providers]]
name = "fake"
kind = "openai"
base_url = "$upstream"
api_key_env = "BENCH_UPSTREAM_KEY"
TOML
  start_proxy proxy "$WORK/sdk-proxy.toml"
  echo "==> Chromium, $calls calls per way; fake LLM $upstream, proxy $proxy"
  if ! BENCH_UPSTREAM="$upstream" BENCH_UPSTREAM_KEY="$UPSTREAM_KEY" BENCH_PROXY="$proxy" \
    BENCH_PKG="$ROOT/sdk-wasm/pkg" BENCH_CALLS="$calls" BENCH_OUT="$WORK/sdk-browser.json" \
    CHROMIUM=/usr/bin/chromium "${ON_CLIENT[@]}" node "$ROOT/bench/sdk_browser.mjs"; then
    browser_status="the browser run failed (see above)"
  fi
fi
[[ "$browser_status" == ok ]] || echo '{}' >"$WORK/sdk-browser.json"

versions="$(python3 -c 'import json, sys; print(json.dumps({"chromium": sys.argv[1], "node": sys.argv[2]}))' \
  "$(/usr/bin/chromium --version 2>/dev/null || true)" "$(node --version)")"
write_result sdk "cargo xtask bench sdk $calls  (bench/sdk.sh: cargo xtask sdk, then bench/sdk_browser.mjs)" \
  "$versions" "size=$sizes" "size_status=$(json_str "$size_status")" \
  "browser=$WORK/sdk-browser.json" "browser_status=$(json_str "$browser_status")"
python3 "$ROOT/bench/report.py" --print sdk
