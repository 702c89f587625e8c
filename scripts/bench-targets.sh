#!/usr/bin/env bash
# The full probe run against the structured test layer over MCP stdio, and the same run
# in-process (the built-in layer with the structured layer's policy), RUNS times each; prints
# each run's summary line (wall time, tool calls, calls/s, p50 per call). Figures, not a test.
#
# Needs the test-target virtualenv (scripts/setup-test-targets.sh) and a local Postgres for
# `--db local`. Usage: scripts/bench-targets.sh [RUNS]; PREFLIGHT_BENCH_PROFILE=debug measures
# the debug build instead of building the release one.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
venv_python="$(scripts/setup-test-targets.sh)"
export PATH="$(dirname "$venv_python"):$PATH"
profile="${PREFLIGHT_BENCH_PROFILE:-release}"
if [ "$profile" = release ]; then
  cargo build --release --quiet --bin preflight
else
  cargo build --quiet --bin preflight
fi
bin="${CARGO_TARGET_DIR:-target}/$profile/preflight"
policy=tests/targets/structured/policy.yaml
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for target in stdio builtin; do
  for i in $(seq 1 "$runs"); do
    # The probe families only: the agent scenarios and the regression suite run against the
    # built-in layer alone, which would make the two targets' runs incomparable.
    args=(probe --db local --policy "$policy" --skip agent,suite --out "$out/$target-$i")
    if [ "$target" = stdio ]; then
      args+=(--target tests/targets/structured/profile.yaml)
    fi
    started=$(date +%s.%N)
    line="$(NO_COLOR=1 "$bin" "${args[@]}" 2>&1 | grep -E "tool calls in" | tail -n 1 || true)"
    ended=$(date +%s.%N)
    printf '%-8s run %s: wall %.1f s | %s\n' "$target" "$i" "$(echo "$ended - $started" | bc)" "$line"
  done
done
