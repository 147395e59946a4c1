#!/usr/bin/env bash
# ProcOS benchmarks (release builds): `bench/run.sh [worker|sandbox|all] [flags…]`.
#   worker   worker throughput and pickup latency against a scratch engine booted here
#            (flags: see `worker-throughput --help`, e.g. --workers 1 --max-tasks 64)
#   sandbox  sandboxed step latency on the local Docker engine: docker run vs the docker
#            adapter, python steps cold vs warm (flags: see `sandbox-latency --help`)
#   all      both, with default flags (the default)
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$ROOT"
which="${1:-all}"
[ $# -gt 0 ] && shift
ensure_toolchain
say "building the benchmarks (release)"
cargo build --locked --release -p procos-bench --quiet
case "$which" in
  worker | all)
    build_engine
    start_scratch_engine
    "$CARGO_TARGET_DIR/release/worker-throughput" --engine-url "$ENGINE_URL" "$@"
    ;;&
  sandbox | all)
    bash "$ROOT/scripts/docker-engine.sh"
    "$CARGO_TARGET_DIR/release/sandbox-latency" "$@"
    ;;
  worker) ;;
  *) die "unknown benchmark \`$which\`: worker, sandbox or all" ;;
esac
