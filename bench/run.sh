#!/usr/bin/env bash
# The benchmark suite: every scenario, each against calling the upstream directly in the same
# run, and against peer products where there are any; then the report.
#
#   bench/run.sh                 all scenarios, then docs/BENCHMARKS.md and its charts
#   bench/run.sh SCENARIO [ARG]  one of: chat [REQUESTS], stream [STREAMS], mcp [CALLS],
#                                memory [COUNT...], sdk [CALLS], perf [SECONDS], report,
#                                soak [SECONDS] [RATE] (ten minutes; not part of `all`)
#
# (`cargo xtask bench [SCENARIO] [ARG]` runs this.) Results: bench/results/SCENARIO.json. A
# scenario that fails is reported as failed and the others still run.
set -euo pipefail
cd "$(dirname "$0")/.."
scenarios=(chat perf stream mcp memory sdk)

run_one() {
  local name="$1"; shift
  echo
  echo "################ $name"
  local started=$SECONDS
  if bash "bench/$name.sh" "$@"; then
    echo "################ $name done in $((SECONDS - started)) s"
  else
    echo "################ $name FAILED after $((SECONDS - started)) s"
    return 1
  fi
}

case "${1:-all}" in
  all)
    failed=()
    for s in "${scenarios[@]}"; do run_one "$s" || failed+=("$s"); done
    python3 bench/report.py --write
    if ((${#failed[@]})); then
      echo "failed scenarios: ${failed[*]}" >&2
      exit 1
    fi
    ;;
  report) python3 bench/report.py --write ;;
  chat | stream | mcp | memory | sdk | perf | soak)
    name="$1"; shift
    run_one "$name" "$@"
    python3 bench/report.py --write
    ;;
  *)
    echo "unknown scenario ${1}; one of: all ${scenarios[*]} report" >&2
    exit 2
    ;;
esac
