"""Draws the chart of `bench/run.sh peers` (peers.png) from its results (peers.json).

matplotlib rather than a Rust plotting crate: its wheels carry their own fonts, so the chart comes
out the same on a bare machine, where plotters' text would need the system's fontconfig and
FreeType; and the benchmark already installs Python for the Python peer.

Usage: chart.py RESULTS.json OUTPUT.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

COLORS = {
    "procos": "#c0392b",
    "java": "#2c7fb8",
    "js": "#e6a700",
    "python": "#4a9d5b",
    "ceiling": "#7f7f7f",
}


def bars(ax, runs, value, title, unit, fmt):
    runs = [r for r in runs if r["figures"] and value(r["figures"]) is not None]
    labels = [r["label"].replace(" (no-op task)", "\n(no-op task)") for r in runs]
    values = [value(r["figures"]) for r in runs]
    colors = [COLORS.get(r["contender"], "#333333") for r in runs]
    drawn = ax.bar(range(len(values)), values, color=colors)
    ax.bar_label(drawn, labels=[fmt(v) for v in values], fontsize=8, padding=2)
    ax.set_xticks(range(len(values)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(unit, fontsize=8)
    ax.margins(y=0.15)
    ax.tick_params(axis="y", labelsize=8)


def plain_log_axis(axis):
    """Log-scale ticks as plain numbers (5, 10, 50, 100) rather than powers of ten."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def ms(value):
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def pickup(ax, runs):
    runs = [r for r in runs if r["figures"] and r["figures"].get("pickup")]
    ax.set_title("Pickup latency p50 / p99 (pale)", fontsize=10)
    if not runs:
        return
    xs = range(len(runs))
    p50 = [r["figures"]["pickup"]["p50_ms"] for r in runs]
    p99 = [r["figures"]["pickup"]["p99_ms"] for r in runs]
    colors = [COLORS.get(r["contender"], "#333333") for r in runs]
    width = 0.4
    # Drawn on a log scale from 0.1 ms: a p50 below it (timestamps are whole milliseconds on the
    # engine's side, so it can even be 0) shows as the floor, labelled with its value.
    floor = 0.1
    a = ax.bar([x - width / 2 for x in xs], [max(v, floor) for v in p50], width, color=colors)
    b = ax.bar([x + width / 2 for x in xs], [max(v, floor) for v in p99], width, color=colors,
               alpha=0.45)
    ax.bar_label(a, labels=[ms(v) for v in p50], fontsize=7, padding=2)
    ax.bar_label(b, labels=[ms(v) for v in p99], fontsize=7, padding=2)
    ax.set_xticks(list(xs), [r["label"] for r in runs], rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor, top=max(p99 + [floor]) * 3)
    plain_log_axis(ax.yaxis)
    ax.set_ylabel("ms (log scale)", fontsize=8)
    ax.tick_params(axis="y", labelsize=8)


def scaling(ax, report):
    runs = report["scaling"]
    settings = report["settings"]
    contenders = []
    for r in runs:
        if r["contender"] not in contenders:
            contenders.append(r["contender"])
    values = []
    for c in contenders:
        points = [
            (r["workers"], r["figures"]["tasks_per_s"])
            for r in runs
            if r["contender"] == c and r["figures"]
        ]
        if not points:
            continue
        values += [y for _, y in points]
        label = next(r["label"] for r in runs if r["contender"] == c)
        ax.plot(*zip(*points), marker="o", color=COLORS.get(c, "#333333"), label=label)
        # The curves that meet are ProcOS's and the JS client's, and the Java and Python
        # clients': one of each pair is labelled above its points, the other below.
        offset = (0, 6) if c in ("procos", "python") else (0, -12)
        for x, y in points:
            ax.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=offset,
                        ha="center", fontsize=7, color=COLORS.get(c, "#333333"))
    # Log scales on both axes: linear scaling is a straight line of slope 1 whatever the level.
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    if values:
        low, high = min(values) / 1.5, max(values) * 1.5
        ax.set_ylim(low, high)
        ax.set_yticks([t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
                       if low <= t <= high])
    plain_log_axis(ax.yaxis)
    ax.set_xticks(settings["scaling_workers"], [str(w) for w in settings["scaling_workers"]])
    ax.set_xlabel("worker processes", fontsize=9)
    ax.set_ylabel("tasks/s (log scale)", fontsize=9)
    ax.set_title(
        f"Scaling: {settings['scaling_delay_ms']} ms task body, "
        f"{settings['scaling_instances']} instances per run",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def main():
    source, target = sys.argv[1], sys.argv[2]
    with open(source, encoding="utf-8") as f:
        report = json.load(f)
    main_runs = report["main"]
    machine = report["machine"]
    fig = plt.figure(figsize=(15, 9), layout="constrained")
    grid = fig.add_gridspec(2, 4)
    bars(fig.add_subplot(grid[0, 0]), main_runs, lambda f: f["tasks_per_s"],
         "Throughput (higher is better)", "tasks/s", lambda v: f"{v:.0f}")
    pickup(fig.add_subplot(grid[0, 1]), main_runs)
    bars(fig.add_subplot(grid[0, 2]), main_runs, lambda f: f.get("worker_cpu_s_per_1000"),
         "Worker CPU per 1,000 tasks (lower is better)", "CPU seconds", lambda v: f"{v:.2f}")
    bars(fig.add_subplot(grid[0, 3]), main_runs, lambda f: f.get("worker_peak_rss_mb"),
         "Worker peak RSS (lower is better)", "MB", lambda v: f"{v:.0f}")
    if report["scaling"]:
        scaling(fig.add_subplot(grid[1, :]), report)
    fig.suptitle(
        f"ProcOS and the official Camunda 7 external task clients, echo task, "
        f"{report['settings']['instances']} instances, one worker process each — "
        f"{report['date']}, {machine['cpu']}, {machine['cores']} cores",
        fontsize=11,
    )
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main()
