#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs and starts what it needs (Java, Maven,
# a Docker engine and its base image, the engine jar), checks formatting and lints, then runs
# every test against a real engine and a real Docker engine.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
started=$(date +%s)

ensure_toolchain
bash "$ROOT/scripts/docker-engine.sh"
build_engine

say "cargo fmt --check"
cargo fmt --all --check
say "cargo clippy"
cargo clippy --locked --workspace --all-targets --quiet -- -D warnings
say "Camunda Modeler element templates"
bash "$ROOT/scripts/check-element-templates.sh"
say "bpmnlint"
bash "$ROOT/scripts/lint-bpmn.sh"

# One engine shared by the integration tests (each test uses its own process keys); the tests
# that are about booting start engines of their own.
start_scratch_engine
export PROCOS_TEST_ENGINE_URL="$ENGINE_URL"
start_model_servers
export PROCOS_TEST_LLM_URL="$LLM_URL" PROCOS_TEST_OLLAMA_URL="$OLLAMA_URL"

say "cargo test"
cargo test --locked --workspace --no-fail-fast

# The compose fleet: images, `compose up`, scaling, a killed replica, an incident in Cockpit.
bash "$ROOT/scripts/compose-test.sh"
say "all checks passed in $(( $(date +%s) - started )) s"
