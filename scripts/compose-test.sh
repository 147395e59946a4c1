#!/usr/bin/env bash
# The compose fleet under test: brings compose.yaml up under a project of its own (engine on a
# free loopback port, a random password, one worker replica), runs the ignored test
# `compose::` against it (300 instances with 1, 3 and 6 replicas, a replica killed mid-run, an
# incident checked through the REST API and photographed in Cockpit), and takes it all down.
# The Cockpit screenshot is kept in test-artifacts/.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_toolchain

# Compose v2 where it exists, else Debian's docker-compose (1.29); both read compose.yaml.
if docker compose version >/dev/null 2>&1; then
  compose_cmd="docker compose"
else
  command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose
  compose_cmd="docker-compose"
fi
# Headless Chromium and playwright-core to drive it (not Playwright's own browser download).
[ -x /usr/bin/chromium ] || apt_install chromium
playwright="$PROCOS_CACHE/playwright"
if [ ! -f "$playwright/node_modules/playwright-core/package.json" ]; then
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  say "installing playwright-core from npm"
  mkdir -p "$playwright"
  (cd "$playwright" && npm install --no-audit --no-fund --silent playwright-core@1.65.1 >/dev/null) \
    || die "npm install of playwright-core failed"
fi

bash "$ROOT/scripts/compose-images.sh"

project="procos-test-$$"
port=$(free_port)
export PROCOS_ENGINE_USER=procos
PROCOS_ENGINE_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
export PROCOS_ENGINE_PASSWORD ENGINE_PORT=$port WORKER_REPLICAS=1
compose="$compose_cmd --project-name $project --file $ROOT/compose.yaml"
log="$PROCOS_CACHE/logs/compose-test.log"

stop_fleet() {
  $compose logs --no-color --timestamps >"$log" 2>&1 || true
  $compose down --volumes --remove-orphans >/dev/null 2>&1 || true
  # Sandbox containers a killed replica left behind (the live ones remove their own).
  docker ps -aq --filter label=io.procos.task --filter status=exited | xargs -r docker rm -f >/dev/null 2>&1 || true
}
on_exit stop_fleet

say "compose up ($compose_cmd, project $project, engine on 127.0.0.1:$port)"
$compose up -d --no-build >/dev/null 2>&1 || { $compose up -d --no-build; die "compose up failed"; }
wait_for_url "http://127.0.0.1:$port/engine-rest/engine" "the compose engine" "$log"

export PROCOS_TEST_COMPOSE="$compose" PROCOS_TEST_COMPOSE_URL="http://127.0.0.1:$port" \
  PROCOS_TEST_ARTIFACTS="$ROOT/test-artifacts" \
  PROCOS_TEST_PLAYWRIGHT="$playwright/node_modules/playwright-core"
say "the compose fleet test (logs of every service afterwards: $log)"
if ! cargo test --locked --test it compose:: -- --ignored --nocapture; then
  $compose ps || true
  $compose logs --no-color --tail 40 || true
  die "the compose fleet test failed"
fi
say "compose fleet test passed; Cockpit screenshot: test-artifacts/cockpit-incident.png"
