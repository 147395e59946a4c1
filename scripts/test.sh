#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs and starts what it needs (Java, Maven,
# a Docker engine and its base image, the engine jar, the test model), checks formatting and
# lints, then runs every test against a real engine and a real Docker engine.
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

# The model the LLM tests ask (SmolLM2 behind llama-cpp-python). The integration tests boot
# their one shared engine from the jar and start the model servers themselves, on first use.
bash "$ROOT/scripts/llm-server.sh" install

say "cargo test"
cargo test --locked --workspace --no-fail-fast

# The compose fleet: images, `compose up`, scaling, a killed replica, an incident in Cockpit.
bash "$ROOT/scripts/compose-test.sh"
say "all checks passed in $(( $(date +%s) - started )) s"
