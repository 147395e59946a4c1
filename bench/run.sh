#!/usr/bin/env bash
# ProcOS benchmarks (release builds): `bench/run.sh [worker|sandbox|peers|reload|steps|all] [flags…]`.
#   worker   worker throughput and pickup latency (flags: see `worker-throughput --help`, e.g.
#            --workers 1 --max-tasks 64)
#   sandbox  sandboxed step latency on the local Docker engine: docker run vs the docker
#            adapter, python steps cold vs warm (flags: see `sandbox-latency --help`)
#   peers    ProcOS workers against the official Java, JS and Python external task clients and
#            the engine's ceiling, on one engine; installs the peers from Maven Central,
#            npm and PyPI, writes bench/results/peers.{md,json,png} and prints the table
#            (flags: see `peers --help`, e.g. --instances 300 --scaling-instances 200)
#   reload   `procos worker` reloading its topic table: file write to the new topic's first task
#            served, by file watch and by SIGHUP; writes bench/results/reload.{md,json} and
#            prints the table (flags: see `reload-latency --help`)
#   steps    sequential Python steps, the shape of windmill.dev's benchmark (40 light steps of
#            fib(10), 10 heavy of fib(33), one instance at a time) on the python adapter's Docker
#            and namespace backends and the echo adapter, beside the host's bare python3; writes
#            bench/results/steps.{md,json,png} and prints the table (flags: see `steps --help`,
#            e.g. --rounds 3 --configs echo,namespace)
#   all      worker and sandbox, with default flags (the default)
# The engine benchmarks boot their own scratch engine from the jar built here, through the
# kernel's code (fresh H2 database, free port, stopped at the end); `--engine-url URL` measures
# a running engine instead.
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
    "$CARGO_TARGET_DIR/release/worker-throughput" "$@"
    ;;&
  sandbox | all)
    bash "$ROOT/scripts/docker-engine.sh"
    "$CARGO_TARGET_DIR/release/sandbox-latency" "$@"
    ;;
  worker) ;;
  reload)
    cargo build --locked --release -p procos --quiet
    build_engine
    "$CARGO_TARGET_DIR/release/reload-latency" --procos-bin "$CARGO_TARGET_DIR/release/procos" \
      --results-dir "$ROOT/bench/results" "$@"
    ;;
  peers)
    source "$ROOT/bench/peers/install.sh"
    cargo build --locked --release -p procos --quiet
    ensure_peer_tools
    java_jar=$(install_java_peer)
    js_worker=$(install_js_peer)
    python=$(install_venv "$ROOT/bench/peers/python/requirements.txt" "the Python peer (camunda-external-task-client-python3)")
    chart_python=$(install_venv "$ROOT/bench/chart/requirements.txt" "matplotlib for the chart")
    build_engine
    # Worker configurations, logs and pickup records of the last run, for a look afterwards.
    work_dir="$PEERS_CACHE/last-run"
    rm -rf "$work_dir" && mkdir -p "$work_dir"
    "$CARGO_TARGET_DIR/release/peers" \
      --procos-bin "$CARGO_TARGET_DIR/release/procos" --java-jar "$java_jar" \
      --js-worker "$js_worker" --python "$python" --python-worker "$ROOT/bench/peers/python/worker.py" \
      --chart-python "$chart_python" --chart-script "$ROOT/bench/chart/chart.py" \
      --work-dir "$work_dir" --results-dir "$ROOT/bench/results" --doc "$ROOT/bench/README.md" "$@"
    say "results in peers.md, peers.json and peers.png (bench/results/ unless --results-dir says otherwise); worker logs in $work_dir"
    ;;
  steps)
    source "$ROOT/bench/peers/install.sh"
    bash "$ROOT/scripts/docker-engine.sh"
    command -v bwrap >/dev/null 2>&1 || apt_install bubblewrap
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_install python3-venv
    chart_python=$(install_venv "$ROOT/bench/chart/requirements.txt" "matplotlib for the chart")
    build_engine
    "$CARGO_TARGET_DIR/release/steps" \
      --chart-python "$chart_python" --chart-script "$ROOT/bench/chart/steps.py" \
      --results-dir "$ROOT/bench/results" "$@"
    say "results in steps.md, steps.json and steps.png (bench/results/ unless --results-dir says otherwise)"
    ;;
  *) die "unknown benchmark \`$which\`: worker, sandbox, reload, peers, steps or all" ;;
esac
