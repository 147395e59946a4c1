#!/usr/bin/env bash
# Worker throughput and pickup latency against a scratch engine booted here; extra arguments go
# to the benchmark (see `worker-throughput --help`), e.g. bench/run.sh --workers 1 --max-tasks 64.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$ROOT"
ensure_toolchain
build_engine
say "building the benchmark (release)"
cargo build --locked --release -p procos-bench --quiet
start_scratch_engine
"$CARGO_TARGET_DIR/release/worker-throughput" --engine-url "$ENGINE_URL" "$@"
