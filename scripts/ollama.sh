#!/usr/bin/env bash
# A real Ollama server for the `llm` topic's `ollama` provider and its tests, offline: built from
# its Go module (the release binaries are not reachable here) and serving the same bundled
# SmolLM2-135M GGUF as scripts/llm-server.sh. Installs into $PROCOS_CACHE/ollama.
#
#   scripts/ollama.sh install          build Ollama and register the model (idempotent)
#   scripts/ollama.sh start PORT [HOST]
#                                      install, then serve on HOST:PORT (HOST 127.0.0.1) in the
#                                      background; prints the PID once the model answers; logs to
#                                      $PROCOS_CACHE/logs/ollama[-HOST].log
#
# v0.6.5 is the newest version whose Go module builds: later module zips drop the vendored
# llama.cpp headers. `go install` compiles llama.cpp through cgo with no CPU flags of its own,
# which leaves it on SSE2 and several times slower than it need be; where the CPU has AVX2 the
# build targets x86-64-v3, and the cached binary is named after the level it was built for.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OLLAMA_VERSION=v0.6.5
OLLAMA_DIR="$PROCOS_CACHE/ollama"
MODEL_NAME=smollm2
MODEL_GGUF="$PROCOS_CACHE/llm/SmolLM2-135M-Instruct.Q4_1.gguf"

cpu_level() {
  if [ "$(uname -m)" = x86_64 ] && grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo \
    && grep -qw f16c /proc/cpuinfo; then
    echo x86-64-v3
  else
    echo generic
  fi
}

LEVEL=$(cpu_level)
BIN_DIR="$OLLAMA_DIR/$OLLAMA_VERSION-$LEVEL"
OLLAMA="$BIN_DIR/ollama"
# What the integration tests start (tests/it/support/shared.rs): the build for this machine.
LINK="$OLLAMA_DIR/ollama"
export OLLAMA_MODELS="$OLLAMA_DIR/models"

build_ollama() {
  [ -x "$OLLAMA" ] && return 0
  command -v go >/dev/null 2>&1 || die "Go is missing: install Go 1.24+ (https://go.dev/dl) and run again"
  command -v g++ >/dev/null 2>&1 || apt_install g++
  mkdir -p "$BIN_DIR" "$PROCOS_CACHE/logs"
  local flags=()
  if [ "$LEVEL" != generic ]; then
    flags=(CGO_CFLAGS="-O3 -march=$LEVEL" CGO_CXXFLAGS="-O3 -march=$LEVEL")
  fi
  say "building Ollama $OLLAMA_VERSION for $LEVEL from its Go module (a few minutes the first time)"
  # Into a scratch directory first: an interrupted build must not leave a binary that looks done.
  local scratch
  scratch=$(mktemp -d)
  if ! env "${flags[@]}" GOBIN="$scratch" \
    go install "github.com/ollama/ollama@$OLLAMA_VERSION" >"$PROCOS_CACHE/logs/ollama-build.log" 2>&1; then
    tail -30 "$PROCOS_CACHE/logs/ollama-build.log"
    rm -rf "$scratch"
    die "building Ollama failed (log: $PROCOS_CACHE/logs/ollama-build.log)"
  fi
  mv "$scratch/ollama" "$OLLAMA"
  rm -rf "$scratch"
}

link_ollama() {
  [ "$(readlink "$LINK" 2>/dev/null)" = "$OLLAMA" ] || ln -sfn "$OLLAMA" "$LINK"
}

# Waits until the server at $1 (host:port) answers, or its process ($2) is gone.
wait_for_server() {
  local address="$1" pid="$2" log="$3" i
  for i in $(seq 1 120); do
    curl -fsS "http://$address/api/version" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { tail -20 "$log"; die "Ollama on $address exited while starting (log: $log)"; }
    sleep 0.5
  done
  kill "$pid" 2>/dev/null || true
  die "Ollama on $address did not answer within 60 s (log: $log)"
}

# The model is registered once, in the cache's model store, by a short-lived server of its own.
register_model() {
  [ -d "$OLLAMA_MODELS/manifests" ] && find "$OLLAMA_MODELS/manifests" -path "*/$MODEL_NAME/*" -type f | grep -q . && return 0
  bash "$ROOT/scripts/llm-server.sh" fetch-model
  [ -f "$MODEL_GGUF" ] || die "the bundled model is missing: $MODEL_GGUF"
  mkdir -p "$OLLAMA_MODELS"
  local port log pid modelfile
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  log="$PROCOS_CACHE/logs/ollama-create.log"
  OLLAMA_HOST="127.0.0.1:$port" "$OLLAMA" serve >"$log" 2>&1 &
  pid=$!
  wait_for_server "127.0.0.1:$port" "$pid" "$log"
  modelfile=$(mktemp)
  printf 'FROM %s\n' "$MODEL_GGUF" >"$modelfile"
  say "registering $MODEL_NAME with Ollama"
  if ! OLLAMA_HOST="127.0.0.1:$port" "$OLLAMA" create "$MODEL_NAME" -f "$modelfile" >>"$log" 2>&1; then
    kill "$pid" 2>/dev/null || true
    rm -f "$modelfile"
    die "ollama create failed (log: $log)"
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$modelfile"
}

install_ollama() {
  build_ollama
  link_ollama
  register_model
}

case "${1:-}" in
  install) install_ollama ;;
  start)
    port="${2:?usage: ollama.sh start PORT [HOST]}"
    host="${3:-127.0.0.1}"
    log="$PROCOS_CACHE/logs/ollama.log"
    [ "$host" = 127.0.0.1 ] || log="$PROCOS_CACHE/logs/ollama-$host.log"
    install_ollama
    # Keep the model loaded between the tests' requests: loading it is most of a short answer.
    OLLAMA_HOST="$host:$port" OLLAMA_KEEP_ALIVE=-1 "$OLLAMA" serve >"$log" 2>&1 &
    pid=$!
    wait_for_server "$host:$port" "$pid" "$log"
    echo "$pid"
    ;;
  *) die "usage: ollama.sh install | start PORT [HOST]" ;;
esac
