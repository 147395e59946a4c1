#!/usr/bin/env bash
# Builds the images compose.yaml runs, on a host where the images its Dockerfiles build FROM
# (maven, rust) cannot be pulled: the engine jar and the ProcOS binaries are built here, on the
# host, and copied into the same runtime stages (docker/*/Dockerfile.prebuilt). compose.yaml then
# finds its images present and builds nothing (`up --no-build`). On a host with Docker Hub,
# `docker compose build` does all of this from source instead. The model server's image
# (docker/ollama) is always built here, from the Ollama and the registered model that
# scripts/ollama.sh builds on the host, and so is the namespace worker's (procos/procos plus
# bubblewrap and the Python sandbox's files, exported from the Docker engine).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_toolchain
bash "$ROOT/scripts/docker-engine.sh"
build_engine
build_operaton
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
build_prebuilt procos/operaton:1.0.3 docker/operaton/Dockerfile.prebuilt "$OPERATON_JAR"
build_prebuilt procos/procos:latest docker/procos/Dockerfile.prebuilt \
  "$CARGO_TARGET_DIR/release/procos" "$CARGO_TARGET_DIR/release/procos-sandbox-proxy"
build_prebuilt procos/ollama:0.6.5 docker/ollama/Dockerfile \
  "$PROCOS_CACHE/ollama/ollama" "$PROCOS_CACHE/ollama/models"

# The namespace worker's image (docker/procos/Dockerfile.namespace): procos/procos with
# bubblewrap and procos/python-sandbox's root filesystem, exported here in the layout the
# namespace backend reads without Docker: NAME/ (the files, from `docker export`) and NAME.json
# (id, env, cmd and working_dir, from `docker image inspect`), NAME being the image reference
# with every character but [A-Za-z0-9.-] as `_`. Rebuilt only when procos/procos, the sandbox
# image or the Dockerfile changed (the label says from what): an export's directory times differ
# each time, so Docker's layer cache would never find an unchanged one.
build_namespace_image() {
  local image=procos/procos-namespace:latest sandbox=procos/python-sandbox:latest
  local name=procos_python-sandbox_latest key context container log
  key="$(docker image inspect -f '{{.Id}}' procos/procos:latest) $(docker image inspect -f '{{.Id}}' "$sandbox")"
  key="$key $(sha256sum docker/procos/Dockerfile.namespace | cut -c1-16)"
  if [ "$(docker image inspect -f '{{index .Config.Labels "io.procos.built-from"}}' "$image" 2>/dev/null)" = "$key" ]; then
    say "image $image ready (unchanged)"
    return
  fi
  context=$(mktemp -d)
  cp docker/procos/Dockerfile.namespace "$context/Dockerfile"
  container=$(docker create "$sandbox")
  docker export "$container" >"$context/rootfs.tar" \
    || { docker rm "$container" >/dev/null; rm -rf "$context"; die "exporting $sandbox failed"; }
  docker rm "$container" >/dev/null
  # bubblewrap mounts its own /dev; .dockerenv belongs to the container, not the image.
  tar --delete --wildcards -f "$context/rootfs.tar" 'dev/?*' .dockerenv
  docker image inspect "$sandbox" | python3 -c '
import json, sys
image = json.load(sys.stdin)[0]
config = image["Config"] or {}
json.dump({"id": image["Id"], "env": config.get("Env") or [], "cmd": config.get("Cmd") or [],
           "working_dir": config.get("WorkingDir") or None}, sys.stdout, indent=2)
' >"$context/$name.json"
  log="$PROCOS_CACHE/logs/build-procos-namespace.log"
  docker build -q --label "io.procos.built-from=$key" -t "$image" "$context" >"$log" 2>&1 \
    || { tail -20 "$log"; rm -rf "$context"; die "building $image failed (log: $log)"; }
  rm -rf "$context"
  say "image $image ready"
}
build_namespace_image
