#!/usr/bin/env bash
# A real OpenTelemetry trace receiver for the integration tests, offline: Jaeger v2 (the Jaeger
# distribution of the OpenTelemetry Collector), built from its Go module (the release binaries
# are not reachable here) and keeping traces in memory, so a test can export spans over OTLP and
# read them back through Jaeger's query API. Installs into $PROCOS_CACHE/jaeger.
#
#   scripts/jaeger.sh install          build Jaeger once (idempotent); log in
#                                      $PROCOS_CACHE/logs/jaeger-build.log
#   scripts/jaeger.sh start OTLP_GRPC_PORT OTLP_HTTP_PORT QUERY_PORT
#                                      install, then run in the background on 127.0.0.1 only:
#                                      OTLP/gRPC, OTLP/HTTP (POST /v1/traces) and the query
#                                      API (/api/v3/..., /api/traces); prints the PID once both
#                                      the query API and the OTLP/HTTP receiver answer; logs to
#                                      $PROCOS_CACHE/logs/jaeger.log
#
# v1.75.0 is the approved release; its cmd/jaeger is the v2 binary. The build takes about ten
# minutes of one core the first time (a large dependency graph: every storage backend and
# receiver Jaeger ships is compiled in), so it runs at a lower priority than the project's own
# builds and is cached by version.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

JAEGER_VERSION=v1.75.0
JAEGER_MODULE=github.com/jaegertracing/jaeger
JAEGER_DIR="$PROCOS_CACHE/jaeger"
JAEGER="$JAEGER_DIR/$JAEGER_VERSION/jaeger"
BUILD_LOG="$PROCOS_CACHE/logs/jaeger-build.log"

build_jaeger() {
  [ -x "$JAEGER" ] && return 0
  command -v go >/dev/null 2>&1 || die "Go is missing: install Go 1.24+ (https://go.dev/dl) and run again"
  command -v curl >/dev/null 2>&1 || apt_install curl
  mkdir -p "$(dirname "$JAEGER")" "$PROCOS_CACHE/logs"
  say "building Jaeger $JAEGER_VERSION from its Go module (about ten minutes the first time)"
  # The command is a package of the Jaeger module, not a module of its own, so it is built as a
  # tool of a throwaway module that pins the release. Into a scratch directory first: an
  # interrupted build must not leave a binary that looks done.
  local scratch
  scratch=$(mktemp -d)
  if ! (
    set -e
    cd "$scratch"
    go mod init procos-jaeger
    go get -tool "$JAEGER_MODULE/cmd/jaeger@$JAEGER_VERSION"
    # Static and stripped: the binary moves between machines of the project with the cache.
    CGO_ENABLED=0 nice -n 10 go build -trimpath -o "$scratch/jaeger" \
      -ldflags "-s -w -X $JAEGER_MODULE/internal/version.latestVersion=$JAEGER_VERSION" \
      "$JAEGER_MODULE/cmd/jaeger"
  ) >"$BUILD_LOG" 2>&1; then
    tail -30 "$BUILD_LOG" >&2
    rm -rf "$scratch"
    die "building Jaeger $JAEGER_VERSION failed (log: $BUILD_LOG)"
  fi
  mv "$scratch/jaeger" "$JAEGER"
  rm -rf "$scratch"
}

# Jaeger v2 is configured like a collector. Only what the tests need: the OTLP receiver, an
# in-memory trace store and the query API, all on loopback. Its own metrics endpoint (0.0.0.0:8888
# by default) is off, and so is the query service's self-tracing, whose spans would otherwise be
# exported to a default OTLP address and could land among the tests' traces. The query gRPC API
# is unused; port 0 lets the system pick a free one, so several receivers can run side by side.
write_config() {
  local file=$1 grpc_port=$2 http_port=$3 query_port=$4
  cat >"$file" <<EOF
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info

extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memstore
    enable_tracing: false
    http:
      endpoint: 127.0.0.1:$query_port
    grpc:
      endpoint: 127.0.0.1:0

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$grpc_port
      http:
        endpoint: 127.0.0.1:$http_port

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
EOF
}

# Ready once the query API lists services and the OTLP/HTTP receiver accepts an empty export (no
# spans, so nothing is stored); dies if the process exits first, e.g. on a port in use.
wait_for_jaeger() {
  local http_port=$1 query_port=$2 pid=$3 log=$4
  for _ in $(seq 1 120); do
    if curl -fs "http://127.0.0.1:$query_port/api/v3/services" >/dev/null 2>&1 \
      && curl -fs -X POST -H 'Content-Type: application/json' -d '{}' \
        "http://127.0.0.1:$http_port/v1/traces" >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { tail -20 "$log" >&2; die "Jaeger exited while starting (log: $log)"; }
    sleep 0.5
  done
  kill "$pid" 2>/dev/null || true
  tail -20 "$log" >&2
  die "Jaeger did not answer on 127.0.0.1:$query_port within 60 s (log: $log)"
}

case "${1:-}" in
  install) build_jaeger ;;
  start)
    usage="usage: jaeger.sh start OTLP_GRPC_PORT OTLP_HTTP_PORT QUERY_PORT"
    grpc_port="${2:?$usage}"
    http_port="${3:?$usage}"
    query_port="${4:?$usage}"
    build_jaeger
    mkdir -p "$JAEGER_DIR/run" "$PROCOS_CACHE/logs"
    # One file per query port, so that receivers started side by side keep their own.
    config="$JAEGER_DIR/run/config-$query_port.yaml"
    log="$PROCOS_CACHE/logs/jaeger.log"
    write_config "$config" "$grpc_port" "$http_port" "$query_port"
    "$JAEGER" --config "$config" >"$log" 2>&1 &
    pid=$!
    wait_for_jaeger "$http_port" "$query_port" "$pid" "$log"
    echo "$pid"
    ;;
  *) die "usage: jaeger.sh install | start OTLP_GRPC_PORT OTLP_HTTP_PORT QUERY_PORT" ;;
esac
