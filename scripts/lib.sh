# Shared by the ProcOS scripts; sourced, not run.
# Everything built here is cached under $PROCOS_CACHE so that a second run, even from a fresh
# clone, reuses the engine jar, the Docker images and the cargo build.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PROCOS_CACHE="${PROCOS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/procos}"
# One cargo target directory for every checkout of ProcOS on this machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PROCOS_CACHE/target}"
ENGINE_JAR="$ROOT/docker/camunda/target/procos-camunda-engine.jar"
export PROCOS_ENGINE_JAR="${PROCOS_ENGINE_JAR:-$ENGINE_JAR}"

say() { printf '==> %s\n' "$*" >&2; }

# Cleanups run at exit, last registered first: `on_exit "kill 123"`.
exit_actions=()
run_exit_actions() {
  local i
  for ((i = ${#exit_actions[@]} - 1; i >= 0; i--)); do eval "${exit_actions[$i]}" || true; done
}
on_exit() {
  exit_actions+=("$1")
  trap run_exit_actions EXIT
}
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=false
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "missing $*, and no apt-get here to install it: install $* and run again"
  if ! $apt_updated; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    apt_updated=true
  fi
  say "installing Debian packages: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Java 17+ and Maven build the engine; cargo builds ProcOS.
ensure_toolchain() {
  local missing=()
  command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
  command -v cargo >/dev/null 2>&1 || die "cargo is missing: install Rust (https://rustup.rs) and run again"
  claim_target_dir
}

# Checkouts share one target directory, and cargo judges a workspace crate fresh by comparing its
# files' mtimes with the last build's, whichever checkout made it: a file edited here before
# another checkout built would be taken as built. When the last build came from another
# checkout, make this checkout's sources newer than any artifact.
claim_target_dir() {
  local stamp="$CARGO_TARGET_DIR/.procos-last-checkout"
  mkdir -p "$CARGO_TARGET_DIR"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$ROOT" ]; then
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard -- '*.rs' '*.toml' 2>/dev/null | xargs -0 -r touch)
    printf '%s\n' "$ROOT" >"$stamp"
  fi
}

# An engine jar built by Maven from `dir` (pom.xml, src/) into `jar`, cached under
# $PROCOS_CACHE/<cache>/<hash of its sources>: rebuilt only when pom.xml or src/ change.
build_maven_jar() {
  local dir=$1 jar=$2 cache=$3 what=$4 hash cached
  hash=$(cd "$dir" && find pom.xml src -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
  cached="$PROCOS_CACHE/$cache/$hash/$(basename "$jar")"
  if [ ! -f "$cached" ]; then
    say "building the $what with Maven (first time: a few minutes)"
    (cd "$dir" && mvn -B -q -DskipTests package) || die "the Maven build of ${dir#"$ROOT"/} failed (see above)"
    mkdir -p "$(dirname "$cached")"
    cp "$jar" "$cached.tmp" && mv "$cached.tmp" "$cached"
  elif ! cmp -s "$cached" "$jar" 2>/dev/null; then
    mkdir -p "$(dirname "$jar")"
    cp "$cached" "$jar"
  fi
  say "$what jar ready ($hash)"
}

# The Camunda 7.24 engine (docker/camunda).
build_engine() { build_maven_jar "$ROOT/docker/camunda" "$ENGINE_JAR" engine "Camunda 7.24 engine"; }

# Operaton, the second engine (docker/operaton).
OPERATON_JAR="$ROOT/docker/operaton/target/procos-operaton-engine.jar"
build_operaton() { build_maven_jar "$ROOT/docker/operaton" "$OPERATON_JAR" operaton "Operaton engine"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until `url` answers, or dies naming `what` and its log.
wait_for_url() {
  local url=$1 what=$2 log=$3
  for _ in $(seq 1 120); do
    curl -fs "$url" >/dev/null 2>&1 && return 0
    sleep 1
  done
  tail -30 "$log" >&2 || true
  die "$what did not answer at $url within 120 s"
}

# Docker Compose v2, built from its Go module into the cache (once: a few minutes) where none is
# installed. `go install` refuses the module (its go.mod has exclude directives), so it is built
# inside a copy of it.
COMPOSE_VERSION=v2.40.3
compose_v2() {
  local bin="$PROCOS_CACHE/compose/$COMPOSE_VERSION/docker-compose" log scratch
  if [ ! -x "$bin" ]; then
    command -v go >/dev/null 2>&1 || die "Go is missing: install Go 1.24+ (https://go.dev/dl) and run again"
    log="$PROCOS_CACHE/logs/compose-build.log"
    mkdir -p "$PROCOS_CACHE/logs"
    say "building Docker Compose $COMPOSE_VERSION from its Go module (a few minutes the first time)"
    scratch=$(mktemp -d)
    if ! (
      set -e
      cd "$scratch"
      module=$(go mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
      cp -R "$module" source
      chmod -R u+w source
      cd source
      CGO_ENABLED=0 go build -trimpath -o "$scratch/docker-compose" \
        -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" ./cmd
    ) >"$log" 2>&1; then
      tail -30 "$log"
      rm -rf "$scratch"
      die "building Docker Compose failed (log: $log)"
    fi
    mkdir -p "$(dirname "$bin")"
    mv "$scratch/docker-compose" "$bin"
    rm -rf "$scratch"
  fi
  printf '%s\n' "$bin"
}
