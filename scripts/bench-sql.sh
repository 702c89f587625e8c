#!/usr/bin/env bash
# The whole `sql` family against the sound SQL test layer (tests/targets/sql/sound.py) over MCP
# stdio, on the default fixtures and with more bulk rows: wall time, SQL attempts per second, and
# the cost of the fingerprint and sentinel taken around each escape attempt. Figures, not a test.
#
# Needs the test-target virtualenv (scripts/setup-test-targets.sh) and a local Postgres for
# `--db local`. Usage: scripts/bench-sql.sh [ROWS...] (default: the fixture default, then
# 1000000 bulk orders per tenant); PREFLIGHT_BENCH_PROFILE=debug measures the debug build.
set -euo pipefail
cd "$(dirname "$0")/.."
venv_python="$(scripts/setup-test-targets.sh)"
export PATH="$(dirname "$venv_python"):$PATH"
profile="${PREFLIGHT_BENCH_PROFILE:-release}"
if [ "$profile" = release ]; then
  cargo build --release --quiet --bin preflight
else
  cargo build --quiet --bin preflight
fi
bin="${CARGO_TARGET_DIR:-target}/$profile/preflight"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
sizes=("$@")
if [ ${#sizes[@]} -eq 0 ]; then
  sizes=(default 1000000)
fi
for rows in "${sizes[@]}"; do
  args=(probe --db local --only sql --target tests/targets/sql/profile-sound.yaml --out "$out/$rows")
  if [ "$rows" != default ]; then
    args+=(--rows "$rows")
  fi
  started=$(date +%s.%N)
  "$bin" "${args[@]}" >"$out/$rows.log" 2>&1 || true
  ended=$(date +%s.%N)
  python3 - "$out/$rows/report.json" "$rows" "$started" "$ended" <<'PY'
import json, re, sys
report = json.load(open(sys.argv[1]))
rows, started, ended = sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
findings = report["findings"]
verdicts = {}
for f in findings:
    verdicts[f["verdict"]] = verdicts.get(f["verdict"], 0) + 1
costs, attempts = [], 0
for f in findings:
    facts = f.get("evidence", {}).get("facts", [])
    spellings = sum(1 for x in facts if re.match(r"spelling \d+ ", x))
    for x in facts:
        m = re.search(r"around each attempt: ([0-9.]+) ms", x)
        if m:
            costs += [float(m.group(1))] * max(spellings, 1)
    attempts += spellings
probe_s = report["probe_duration"] / 1000
calls = report["tool_calls"]
print(f"rows={rows}: wall {ended - started:.1f} s (probes {probe_s:.1f} s), {len(findings)} probes {verdicts}, "
      f"{calls} SQL calls ({calls / probe_s:.1f}/s), {attempts} escape attempts ({attempts / probe_s:.1f}/s), "
      f"fingerprint + sentinel per attempt: mean {sum(costs) / max(len(costs), 1):.1f} ms, max {max(costs or [0]):.1f} ms")
PY
done
