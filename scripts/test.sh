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

# One engine shared by the integration tests (each test uses its own process keys); the tests
# that are about booting start engines of their own.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
engine_dir=$(mktemp -d)
port=$(free_port)
say "starting the shared test engine on port $port"
(cd "$engine_dir" && SERVER_PORT=$port exec java -jar "$PROCOS_ENGINE_JAR" >"$engine_dir/engine.log" 2>&1) &
engine_pid=$!
cleanup() {
  kill "$engine_pid" 2>/dev/null || true
  wait "$engine_pid" 2>/dev/null || true
  rm -rf "$engine_dir"
}
trap cleanup EXIT
for _ in $(seq 1 180); do
  curl -fs "http://127.0.0.1:$port/engine-rest/engine" >/dev/null 2>&1 && break
  kill -0 "$engine_pid" 2>/dev/null || { tail -40 "$engine_dir/engine.log"; die "the test engine exited while booting"; }
  sleep 1
done
curl -fs "http://127.0.0.1:$port/engine-rest/engine" >/dev/null || { tail -40 "$engine_dir/engine.log"; die "the test engine did not answer within 180 s"; }
export PROCOS_TEST_ENGINE_URL="http://127.0.0.1:$port/engine-rest"

say "cargo test"
cargo test --locked --workspace --no-fail-fast
say "all checks passed in $(( $(date +%s) - started )) s"
