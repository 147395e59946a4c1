#!/usr/bin/env bash
# Makes sure a Docker engine answers and the base image exists, from nothing.
#
# Idempotent: each step is skipped when its result is already there.
#   1. Debian's docker.io (and debootstrap) when `dockerd` is missing;
#   2. dockerd started in the background when `docker info` does not answer;
#   3. the base image `debian:bookworm-slim` built with debootstrap + docker import
#      when it is missing (no registry can be reached here). Dockerfiles keep their
#      ordinary `FROM debian:bookworm-slim`, so they build unchanged on a user's host;
#   4. ProcOS's sandbox images (docker/*-sandbox), from Docker's layer cache when unchanged.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

BASE_IMAGE="${PROCOS_BASE_IMAGE:-debian:bookworm-slim}"
SUITE="${PROCOS_BASE_SUITE:-bookworm}"
LOG_DIR="${PROCOS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/procos}/logs"
mkdir -p "$LOG_DIR"

say() { printf 'docker-engine: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  say "installing Debian packages: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Debian's mirror as apt is configured on this host, so the base image comes from the same place.
debian_mirror() {
  local uri
  uri=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list 2>/dev/null \
        | grep -v security | head -n1 | sed -E 's/^URIs:[[:space:]]*//; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//; s/[[:space:]].*$//')
  printf '%s' "${uri:-http://deb.debian.org/debian}"
}

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "${missing[*]} missing and no apt-get here: install a Docker engine and start it, then run this again"
  apt_install "${missing[@]}"
fi

if ! docker info >/dev/null 2>&1; then
  say "starting dockerd (log: $LOG_DIR/dockerd.log)"
  as_root sh -c "nohup dockerd >'$LOG_DIR/dockerd.log' 2>&1 &"
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || die "dockerd did not answer within 60 s; see $LOG_DIR/dockerd.log"
fi

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  mirror=$(debian_mirror)
  root=$(mktemp -d)
  trap 'as_root rm -rf "$root"' EXIT
  say "building $BASE_IMAGE with debootstrap from $mirror (about a minute)"
  as_root debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >"$LOG_DIR/debootstrap.log" 2>&1 \
    || die "debootstrap failed; see $LOG_DIR/debootstrap.log"
  # The same cleanup the official slim image does, so images built FROM it stay small.
  as_root rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  as_root tar -C "$root" -c . | docker import -c 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
  say "built $BASE_IMAGE"
fi
# ProcOS's sandbox images; Docker's layer cache makes this a no-op when nothing changed.
for dir in "$ROOT"/docker/*-sandbox; do
  image="procos/$(basename "$dir"):latest"
  docker build -q -t "$image" "$dir" >"$LOG_DIR/build-$(basename "$dir").log" 2>&1 \
    || { tail -20 "$LOG_DIR/build-$(basename "$dir").log"; die "building $image from $dir failed"; }
  say "image $image ready"
done
say "ready: $(docker version --format 'engine {{.Server.Version}}'), base image $BASE_IMAGE"
