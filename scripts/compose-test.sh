#!/usr/bin/env bash
# The compose fleet under test: brings compose.yaml up under a project of its own (engine on a
# free loopback port, a random password, one worker replica, the `llm` topic on the fleet's own
# model service with the test's prompt from tests/compose/llm.yaml, and the namespace worker of
# the profile `namespace`),
# runs the ignored test `compose::` against it (300 instances across the adapters with 1, 3 and
# 6 replicas, a replica killed mid-run, an incident checked through the REST API and
# photographed in Cockpit; Python steps in bubblewrap on the namespace worker, and one reaching
# for the network ending in an incident), and takes it all down.
# The Cockpit screenshot is kept in test-artifacts/. Then the same with the `postgres` profile:
# the engine on PostgreSQL, with the kernel's deployment in its tables.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_toolchain

# PROCOS_COMPOSE when set (e.g. "docker-compose" to test Debian's 1.29), else Compose v2: the
# installed one, else one built here. The namespace worker (profile `namespace`) needs v2:
# docker-compose 1.29 hands its systempaths=unconfined to the engine, which refuses it, so with
# 1.29 the fleet is tested without it.
if [ -n "${PROCOS_COMPOSE:-}" ]; then
  compose_cmd=$PROCOS_COMPOSE
elif docker compose version >/dev/null 2>&1; then
  compose_cmd="docker compose"
else
  compose_cmd=$(compose_v2)
fi
case "$($compose_cmd version --short 2>/dev/null)" in
  1.*)
    say "$compose_cmd is Compose v1: the fleet is tested without the namespace worker (it needs Compose v2)"
    export PROCOS_TEST_NAMESPACE=0
    ;;
  *) export COMPOSE_PROFILES=namespace PROCOS_TEST_NAMESPACE=1 ;;
esac
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
compose="$compose_cmd --project-name $project --file $ROOT/compose.yaml --file $ROOT/tests/compose/llm.yaml"
log="$PROCOS_CACHE/logs/compose-test.log"

# Sandbox containers of the fleet's sandboxed topics (docker/compose/procos.toml) that exist
# before the fleet does: not the fleet's to remove. Only those topics: tests of other topics
# may run sandboxes on the same Docker engine meanwhile (the suite's run on Operaton does).
sandbox_containers() {
  for topic in docker python scilab; do
    docker ps -aq --no-trunc --filter label=io.procos.task --filter "label=io.procos.topic=$topic"
  done | sort
}
sandboxes_before=$(sandbox_containers)
stop_fleet() {
  $compose logs --no-color --timestamps >"$log" 2>&1 || true
  $compose down --volumes --remove-orphans >/dev/null 2>&1 || true
  # Sandbox containers a killed replica left behind (created, waiting warm, or exited); a
  # replica that stops removes its own.
  comm -13 <(printf '%s\n' "$sandboxes_before") <(sandbox_containers) | xargs -r docker rm -f >/dev/null 2>&1 || true
}
on_exit stop_fleet

say "compose up ($compose_cmd, project $project, engine on 127.0.0.1:$port)"
$compose up -d --no-build >/dev/null 2>&1 || { $compose up -d --no-build; die "compose up failed"; }

export PROCOS_TEST_COMPOSE="$compose" PROCOS_TEST_COMPOSE_URL="http://127.0.0.1:$port" \
  PROCOS_TEST_ARTIFACTS="$ROOT/test-artifacts" \
  PROCOS_TEST_PLAYWRIGHT="$playwright/node_modules/playwright-core"
say "the compose fleet test (logs of every service afterwards: $log)"
test_log="$PROCOS_CACHE/logs/compose-test-cargo.log"
if ! cargo test --locked --test it compose::the_compose_fleet -- --ignored --nocapture 2>&1 | tee "$test_log"; then
  $compose ps || true
  $compose logs --no-color --tail 40 || true
  # The reason last, where a reader of the run's end looks first.
  say "why the compose fleet test failed (whole output: $test_log):"
  grep -A 15 "panicked at" "$test_log" >&2 || tail -40 "$test_log" >&2
  die "the compose fleet test failed"
fi
say "compose fleet test passed; Cockpit screenshot: test-artifacts/cockpit-incident.png"
stop_fleet

# The `postgres` profile: the engine on PostgreSQL, the kernel's deployment and root instance in
# its tables. The official postgres image cannot be pulled here; a Debian PostgreSQL image with
# the same variables stands in (tests/docker/postgres).
if ! docker image inspect postgres:17 >/dev/null 2>&1; then
  docker build -q -t procos-test/postgres:15 "$ROOT/tests/docker/postgres" >"$PROCOS_CACHE/logs/build-postgres.log" 2>&1 \
    || { tail -20 "$PROCOS_CACHE/logs/build-postgres.log"; die "building the PostgreSQL stand-in failed"; }
  export POSTGRES_IMAGE=procos-test/postgres:15
fi
POSTGRES_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
export COMPOSE_PROFILES=postgres POSTGRES_PASSWORD DB_PASSWORD="$POSTGRES_PASSWORD" \
  DB_DRIVER=org.postgresql.Driver DB_URL=jdbc:postgresql://postgres:5432/procos DB_USERNAME=procos
project="procos-test-pg-$$"
compose="$compose_cmd --project-name $project --file $ROOT/compose.yaml"
log="$PROCOS_CACHE/logs/compose-test-postgres.log"
say "compose up with the postgres profile (project $project)"
$compose up -d --no-build >/dev/null 2>&1 || { $compose up -d --no-build; die "compose up (postgres) failed"; }
export PROCOS_TEST_COMPOSE="$compose"
pg_test_log="$PROCOS_CACHE/logs/compose-test-postgres-cargo.log"
if ! cargo test --locked --test it compose::on_postgresql -- --ignored --nocapture >"$pg_test_log" 2>&1; then
  $compose logs --no-color --tail 40 || true
  say "why the PostgreSQL test failed (whole output: $pg_test_log):"
  grep -A 15 "panicked at" "$pg_test_log" >&2 || tail -40 "$pg_test_log" >&2
  die "the compose fleet on PostgreSQL failed"
fi
say "postgres profile passed: the engine runs on PostgreSQL, the root orchestrator is in its tables"

# Operaton instead of Camunda 7.24 (compose's engine switch): the engine service alone from the
# Operaton image compose-images.sh built, with the fleet's settings (basic authentication on,
# H2); the fleet's own run above used the same REST API on Camunda.
stop_fleet
unset COMPOSE_PROFILES DB_DRIVER DB_URL DB_USERNAME DB_PASSWORD
project="procos-test-operaton-$$"
compose="$compose_cmd --project-name $project --file $ROOT/compose.yaml"
log="$PROCOS_CACHE/logs/compose-test-operaton.log"
export CAMUNDA_IMAGE=procos/operaton:1.0.3 ENGINE_BUILD=docker/operaton
say "compose up engine on Operaton (project $project)"
$compose up -d --no-build --wait engine >/dev/null 2>&1 \
  || { $compose logs --no-color --tail 40 engine || true; die "the Operaton engine did not become healthy under compose"; }
rest="http://127.0.0.1:$port/engine-rest"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$rest/version")" = 401 ] \
  || die "the Operaton engine under compose answers without credentials"
version=$(curl -fsS -u "$PROCOS_ENGINE_USER:$PROCOS_ENGINE_PASSWORD" "$rest/version") \
  || die "the Operaton engine under compose refuses the fleet's login"
case "$version" in *'"1.0.'*) ;; *) die "the engine under compose is not Operaton 1.0: $version" ;; esac
say "Operaton under compose: $version, basic authentication on, the fleet's login taken"
