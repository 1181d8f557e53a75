# shellcheck shell=bash
# Variables set here are read by the scripts that source it; $pid and $origin come from lib.sh.
# shellcheck disable=SC2034,SC2154
# Peer products, installed on first use from their registries and started on 127.0.0.1 next to
# the proxy (sourced after lib.sh, never run):
#
# - LiteLLM's proxy (PyPI `litellm[proxy]`) in a venv under target/bench/, for chat;
# - supergateway (npm) and mcp-proxy (PyPI), bridging the stdio MCP test server to Streamable
#   HTTP, for MCP.
#
# A peer that cannot be installed or started is reported as such (a `*_status` variable that
# does not start with `ok`), and the benchmark goes on without it.

LITELLM_VENV="$WORK/venv-litellm"
MCP_PROXY_VENV="$WORK/venv-mcp-proxy"
PEERS_NODE="$WORK/node"

# `venv_install DIR SPEC`: a venv at DIR with SPEC installed; quiet when it is already there.
venv_install() {
  local dir="$1" spec="$2" stamp="$1/.installed"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$spec" ]]; then return 0; fi
  echo "==> installing $spec into ${dir#"$ROOT"/} (pip, once)"
  python3 -m venv "$dir" >"$WORK/pip-$(basename "$dir").log" 2>&1 &&
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$spec" >>"$WORK/pip-$(basename "$dir").log" 2>&1 &&
    echo "$spec" >"$stamp"
}

litellm_version() {
  if [[ -x "$LITELLM_VENV/bin/python" ]]; then
    "$LITELLM_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || true
  fi
}

# `start_litellm UPSTREAM KEY`: LiteLLM's proxy with one worker, serving the model `echo` from
# UPSTREAM; sets $litellm_status to `ok:ORIGIN` or to why not.
start_litellm() {
  local upstream="$1" key="$2" port
  if ! venv_install "$LITELLM_VENV" 'litellm[proxy]'; then
    litellm_status="could not install litellm[proxy] from PyPI (see target/bench/pip-venv-litellm.log)"
    return 0
  fi
  cat >"$WORK/litellm.yaml" <<YAML
model_list:
  - model_name: echo
    litellm_params:
      model: openai/echo
      api_base: $upstream
      api_key: $key
litellm_settings:
  telemetry: false
YAML
  port="$(free_port)"
  # No master key and no database: like the proxy here, no client authentication (LiteLLM asks
  # to be told so explicitly; it listens on 127.0.0.1 only). The cost map is the packaged one
  # (nothing is fetched from outside).
  if LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR NO_DOCS=True \
    LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY=true \
    start_at litellm "http://127.0.0.1:$port/health/liveliness" "${ON_SUT[@]}" \
    "$LITELLM_VENV/bin/litellm" --config "$WORK/litellm.yaml" --host 127.0.0.1 --port "$port" \
    --num_workers 1; then
    litellm_status="ok:http://127.0.0.1:$port"
  else
    litellm_status="LiteLLM did not start (see target/bench/litellm.out.err)"
  fi
}

supergateway_version() {
  node -p 'require(process.argv[1]).version' "$PEERS_NODE/node_modules/supergateway/package.json" 2>/dev/null || true
}

mcp_proxy_version() {
  if [[ -x "$MCP_PROXY_VENV/bin/python" ]]; then
    "$MCP_PROXY_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp-proxy"))' 2>/dev/null || true
  fi
}

# `start_supergateway STDIO_CMD`: supergateway, stateful (one child per MCP session; its stateless
# mode starts a child per request), bridging STDIO_CMD to Streamable HTTP; sets
# $supergateway_status to `ok:ENDPOINT` or to why not.
start_supergateway() {
  local cmd="$1" js="$PEERS_NODE/node_modules/supergateway/dist/index.js"
  if [[ ! -f "$js" ]]; then
    echo "==> installing supergateway into ${PEERS_NODE#"$ROOT"/} (npm, once)"
    mkdir -p "$PEERS_NODE"
    [[ -f "$PEERS_NODE/package.json" ]] || echo '{"name": "switchyard-bench-peers", "private": true}' >"$PEERS_NODE/package.json"
    if ! (cd "$PEERS_NODE" && npm install --no-audit --no-fund --silent supergateway >"$WORK/npm-supergateway.log" 2>&1); then
      supergateway_status="could not install supergateway from npm (see target/bench/npm-supergateway.log)"
      return 0
    fi
  fi
  # It listens on every interface; the preload keeps it on 127.0.0.1 and announces the port.
  if start supergateway "${ON_SUT[@]}" node -r "$ROOT/tests/mcp/loopback.cjs" "$js" --stdio "$cmd" \
    --outputTransport streamableHttp --stateful --port 0 --logLevel none; then
    supergateway_status="ok:$origin/mcp"
  else
    supergateway_status="supergateway did not start (see target/bench/supergateway.out.err)"
  fi
}

# `start_mcp_proxy CMD ARGS...`: mcp-proxy (PyPI) bridging the stdio server to Streamable HTTP;
# sets $mcp_proxy_status to `ok:ENDPOINT` or to why not.
start_mcp_proxy() {
  local port
  if ! venv_install "$MCP_PROXY_VENV" mcp-proxy; then
    mcp_proxy_status="could not install mcp-proxy from PyPI (see target/bench/pip-venv-mcp-proxy.log)"
    return 0
  fi
  port="$(free_port)"
  if start_at mcp-proxy "http://127.0.0.1:$port/status" "${ON_SUT[@]}" "$MCP_PROXY_VENV/bin/mcp-proxy" \
    --host 127.0.0.1 --port "$port" --log-level WARNING -- "$@"; then
    mcp_proxy_status="ok:http://127.0.0.1:$port/mcp"
  else
    mcp_proxy_status="mcp-proxy did not start (see target/bench/mcp-proxy.out.err)"
  fi
}
