#!/usr/bin/env bash
# Runs ProcOS: the Camunda 7.24 engine (H2), the kernel and a local worker fleet.
# Installs what is missing, builds what is not built yet, then hands over to `procos up`.
# Extra arguments go to `procos up` (e.g. --workers 4, --port 8081, --engine operaton).
#
#   scripts/up.sh --llm   also serves the bundled small model (SmolLM2-135M) for the fleet's
#                         `llm` topic: OpenAI-compatible on 127.0.0.1:8000 (llama-cpp-python)
#                         and by a real Ollama on 127.0.0.1:11434; both stop with ProcOS.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
llm=false
engine=${PROCOS_ENGINE:-camunda}
args=()
previous=""
for arg in "$@"; do
  if [ "$arg" = --llm ]; then llm=true; else args+=("$arg"); fi
  # `--engine operaton` (procos's own flag) also decides which jar to build here.
  if [ "$previous" = --engine ]; then engine=$arg; fi
  case "$arg" in --engine=*) engine=${arg#--engine=} ;; esac
  previous=$arg
done
ensure_toolchain
case "$engine" in
  camunda) build_engine ;;
  # lib.sh points PROCOS_ENGINE_JAR at Camunda's jar, and an explicit jar wins over --engine.
  operaton) build_operaton; export PROCOS_ENGINE_JAR="$OPERATON_JAR" ;;
  *) die "unknown engine \`$engine\`: --engine camunda (Camunda 7.24) or --engine operaton" ;;
esac
say "building procos (release)"
cargo build --release --locked --quiet --bin procos
if ! $llm; then
  exec "$CARGO_TARGET_DIR/release/procos" up "${args[@]}"
fi

servers=()
stop_servers() { for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null; done; }
trap stop_servers EXIT
say "serving the bundled model: 127.0.0.1:8000 (OpenAI-compatible), 127.0.0.1:11434 (Ollama)"
servers+=("$(bash "$ROOT/scripts/llm-server.sh" start 8000 | tail -1)")
servers+=("$(bash "$ROOT/scripts/ollama.sh" start 11434 | tail -1)")
# Not exec: the model servers must stop when ProcOS does. Ctrl-C reaches procos (it is in the
# foreground process group) and it stops in order; then the trap stops the servers.
"$CARGO_TARGET_DIR/release/procos" up "${args[@]}"
