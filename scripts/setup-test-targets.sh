#!/usr/bin/env bash
# Installs the Python test targets' dependencies (the `mcp` package, psycopg, uvicorn, and PyJWT
# for the structured layer's bearer tokens, from PyPI) into a cached
# virtualenv and prints the virtualenv's python. The test targets under tests/targets/ are small
# MCP servers standing in for enforcement layers preflight did not write; the integration tests
# find the interpreter through PREFLIGHT_TARGETS_PYTHON (scripts/test exports it).
#
# Usage:
#   scripts/setup-test-targets.sh            install (idempotent) and print the interpreter path
#
# Environment:
#   PREFLIGHT_TARGETS_VENV   virtualenv directory (default ~/.cache/preflight/targets-venv)
#   PYTHON                   interpreter used to create the virtualenv (default python3)
set -euo pipefail

venv="${PREFLIGHT_TARGETS_VENV:-$HOME/.cache/preflight/targets-venv}"
python="${PYTHON:-python3}"
# Bump when the requirements change, so cached virtualenvs are rebuilt (an added package whose
# import fails also rebuilds: see the check below). PyJWT arrives with `mcp` too; it is pinned
# here because the structured layer verifies bearer tokens with it.
requirements=("mcp>=1.9,<2" "psycopg[binary]>=3.1,<4" "uvicorn>=0.30" "PyJWT==2.15.1")
stamp="$venv/.preflight-ready-1"

log() { printf 'setup-test-targets: %s\n' "$*" >&2; }

if [[ -f "$stamp" ]] && "$venv/bin/python" -c 'import mcp.server.fastmcp, psycopg, jwt' 2>/dev/null; then
    printf '%s\n' "$venv/bin/python"
    exit 0
fi
log "creating virtualenv in $venv"
mkdir -p "$(dirname "$venv")"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
log "installing ${requirements[*]}"
"$venv/bin/python" -m pip install --quiet "${requirements[@]}"
"$venv/bin/python" -c 'import mcp.server.fastmcp, psycopg, jwt'
touch "$stamp"
printf '%s\n' "$venv/bin/python"
