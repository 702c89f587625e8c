#!/usr/bin/env bash
# What isolating agent attempts costs (issue #16): `preflight agent run scenarios/ --db local
# --repeat REPEAT --jobs JOBS` on the healthy built-in layer; prints the wall time, attempts,
# passes, and the isolation cost per attempt the report records (starting the attempt's own layer
# instance, and putting back the rows a write scenario's attempt changed or created). Figures, not
# a test.
#
# Usage: scripts/bench-agent-isolation.sh [REPEAT [JOBS]] (default 100 8). PREFLIGHT_BIN picks the
# binary (default: the debug build of this checkout, built first); BEFORE_BIN, if set, runs the
# same with another binary first, e.g. one built from the commit before isolation, for the
# before/after wall time. Needs `jq` and a local Postgres for `--db local`.
set -euo pipefail
cd "$(dirname "$0")/.."
repeat="${1:-100}"
jobs="${2:-8}"
if [ -z "${PREFLIGHT_BIN:-}" ]; then
  cargo build --quiet --bin preflight
  PREFLIGHT_BIN="${CARGO_TARGET_DIR:-target}/debug/preflight"
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

run() {
  local name="$1" bin="$2"
  local started ended
  started=$(date +%s.%N)
  NO_COLOR=1 "$bin" agent run scenarios/ --db local --repeat "$repeat" --jobs "$jobs" \
    --out "$out/$name" >"$out/$name.stdout" 2>"$out/$name.stderr" || true
  ended=$(date +%s.%N)
  local attempts passes
  attempts=$(grep -cE '^\[[0-9]+/[0-9]+\] ' "$out/$name.stderr" || true)
  passes=$(grep -cE '^\[[0-9]+/[0-9]+\] .*: pass \(' "$out/$name.stderr" || true)
  printf '%-7s wall %.1f s | %s attempts, %s passed | %s\n' "$name" \
    "$(echo "$ended - $started" | bc)" "$attempts" "$passes" \
    "$(grep -E '^(PASSED|FAILED)' "$out/$name.stdout" | cut -c1-80)"
  # Isolation per attempt, per scenario and overall (older binaries do not record it).
  jq -r '[.findings[] | select(.code == "agent.scenario") | .evidence.facts[]
          | select(startswith("isolation: ")) | capture("isolation: (?<ms>[0-9.]+) ms").ms
          | tonumber] | if length == 0 then "        isolation: not recorded by this binary"
          else "        isolation per attempt: mean \(add / length * 100 | round / 100) ms over \(length) scenarios, max \(max) ms" end' \
    "$out/$name/report.json"
}

if [ -n "${BEFORE_BIN:-}" ]; then
  run before "$BEFORE_BIN"
fi
run after "$PREFLIGHT_BIN"
