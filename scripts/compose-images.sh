#!/usr/bin/env bash
# Builds the images compose.yaml runs, on a host where the images its Dockerfiles build FROM
# (maven, rust) cannot be pulled: the engine jar and the ProcOS binaries are built here, on the
# host, and copied into the same runtime stages (docker/*/Dockerfile.prebuilt). compose.yaml then
# finds its images present and builds nothing (`up --no-build`). On a host with Docker Hub,
# `docker compose build` does all of this from source instead. The model server's image
# (docker/ollama) is always built here, from the Ollama and the registered model that
# scripts/ollama.sh builds on the host.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_toolchain
bash "$ROOT/scripts/docker-engine.sh"
build_engine
say "building procos and procos-sandbox-proxy (release)"
cargo build --release --locked --quiet -p procos -p procos-sandbox-proxy
# Ollama and the bundled model, registered in its own store; a no-op once both are cached.
bash "$ROOT/scripts/ollama.sh" install

# Each image from a context holding only its Dockerfile and artifacts (files or directories;
# symbolic links are copied as what they point to). Docker's layer cache makes a rebuild of
# unchanged artifacts a no-op.
build_prebuilt() {
  local image=$1 dockerfile=$2 context log
  shift 2
  context=$(mktemp -d)
  cp "$dockerfile" "$context/Dockerfile"
  cp -RL "$@" "$context/"
  log="$PROCOS_CACHE/logs/build-$(basename "${image%%:*}").log"
  docker build -q -t "$image" "$context" >"$log" 2>&1 \
    || { tail -20 "$log"; rm -rf "$context"; die "building $image failed (log: $log)"; }
  rm -rf "$context"
  say "image $image ready"
}
build_prebuilt procos/camunda:7.24.0 docker/camunda/Dockerfile.prebuilt "$PROCOS_ENGINE_JAR"
build_prebuilt procos/procos:latest docker/procos/Dockerfile.prebuilt \
  "$CARGO_TARGET_DIR/release/procos" "$CARGO_TARGET_DIR/release/procos-sandbox-proxy"
build_prebuilt procos/ollama:0.6.5 docker/ollama/Dockerfile \
  "$PROCOS_CACHE/ollama/ollama" "$PROCOS_CACHE/ollama/models"
