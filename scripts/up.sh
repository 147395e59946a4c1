#!/usr/bin/env bash
# Runs ProcOS: the Camunda 7.24 engine (H2), the kernel and a local worker fleet.
# Installs what is missing, builds what is not built yet, then hands over to `procos up`.
# Extra arguments go to `procos up` (e.g. --workers 4, --port 8081).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_toolchain
build_engine
say "building procos (release)"
cargo build --release --locked --quiet --bin procos
exec "$CARGO_TARGET_DIR/release/procos" up "$@"
