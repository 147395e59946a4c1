# The peers of `bench/run.sh peers` and the chart's Python, installed from their registries
# into $PROCOS_CACHE/bench (never into the repository). Sourced by bench/run.sh after
# scripts/lib.sh; each install is keyed by the hash of its pinned inputs, so a second run reuses
# it and a changed pin installs afresh. Nothing depends on the cache being there.

PEERS="$ROOT/bench/peers"
PEERS_CACHE="$PROCOS_CACHE/bench"

# sha256 of the given files, short: the cache key of what they pin.
peer_hash() { cat "$@" | sha256sum | cut -c1-16; }

ensure_peer_tools() {
  local missing=()
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge 20 ] || die "camunda-external-task-client-js 3 needs Node 20 or later (found $(node --version)): install it and run again"
}

# The Java peer: one jar with the official client (Maven Central). Prints the jar's path.
install_java_peer() {
  local hash dir
  hash=$(cd "$PEERS/java" && peer_hash pom.xml $(find src -type f | sort))
  dir="$PEERS_CACHE/java/$hash"
  if [ ! -f "$dir/java-peer.jar" ]; then
    say "building the Java peer (camunda-external-task-client from Maven Central)"
    (cd "$PEERS/java" && mvn -B -q -Dpeer.buildDirectory="$dir/target" package) >&2 \
      || die "the Maven build of bench/peers/java failed (see above)"
    cp "$dir/target/java-peer.jar" "$dir/java-peer.jar.tmp" && mv "$dir/java-peer.jar.tmp" "$dir/java-peer.jar"
  fi
  printf '%s\n' "$dir/java-peer.jar"
}

# The JS peer: `npm ci` of the pinned lock file, with worker.mjs next to its node_modules (ES
# modules resolve packages from the script's directory). Prints worker.mjs's path.
install_js_peer() {
  local hash dir
  hash=$(cd "$PEERS/js" && peer_hash package.json package-lock.json)
  dir="$PEERS_CACHE/js/$hash"
  if [ ! -f "$dir/.installed" ]; then
    say "installing the JS peer (camunda-external-task-client-js from npm)"
    rm -rf "$dir" && mkdir -p "$dir"
    cp "$PEERS/js/package.json" "$PEERS/js/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >&2 || die "npm ci of bench/peers/js failed (see above)"
    touch "$dir/.installed"
  fi
  cp "$PEERS/js/worker.mjs" "$dir/worker.mjs"
  printf '%s\n' "$dir/worker.mjs"
}

# A virtualenv with the pinned requirements of `$1`. Prints its python.
install_venv() {
  local requirements=$1 what=$2 hash dir
  hash=$(peer_hash "$requirements")
  dir="$PEERS_CACHE/venv/$hash"
  if [ ! -f "$dir/.installed" ]; then
    say "installing $what from PyPI"
    rm -rf "$dir"
    python3 -m venv "$dir" || die "cannot create a virtualenv in $dir"
    "$dir/bin/pip" install -q --disable-pip-version-check -r "$requirements" >&2 \
      || die "pip install -r $requirements failed (see above)"
    touch "$dir/.installed"
  fi
  printf '%s\n' "$dir/bin/python"
}
