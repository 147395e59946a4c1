"""Draws the chart of `bench/run.sh steps` (steps.png) from its results (steps.json).

Two panels, light and heavy: ProcOS's configurations measured here (median end to end, the
whiskers the fastest and slowest round), the host's bare Python for the heavy steps, and beside
them the figures other systems published for the same shape on other hardware (pale, hatched).

Usage: steps.py RESULTS.json OUTPUT.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)

COLORS = {
    "echo": "#7f7f7f",
    "docker": "#2c7fb8",
    "namespace": "#c0392b",
    "host": "#4a9d5b",
    "published": "#d9d9d9",
}


def panel(ax, report, shape, title):
    measured = [s for s in report["summaries"] if s["shape"] == shape]
    labels, values, lows, highs, colors, hatches = [], [], [], [], [], []
    for s in measured:
        median = s["end_to_end_median_ms"] / 1000
        labels.append(s["label"].replace(" (", "\n("))
        values.append(median)
        lows.append(median - s["end_to_end_min_ms"] / 1000)
        highs.append(s["end_to_end_max_ms"] / 1000 - median)
        colors.append(COLORS.get(s["config"], "#333333"))
        hatches.append("")
    if shape == "heavy":
        for h in report["host"]:
            median = h["heavy_total_median_ms"] / 1000
            labels.append(f"host python3 {h['version']}\n(bare, one process)")
            values.append(median)
            lows.append(median - h["heavy_total_min_ms"] / 1000)
            highs.append(h["heavy_total_max_ms"] / 1000 - median)
            colors.append(COLORS["host"])
            hatches.append("")
    for p in sorted(
        (p for p in report["published"] if p["shape"] == shape),
        key=lambda p: p["end_to_end_s"],
    ):
        labels.append(p["system"].replace(", ", ",\n") + "\n(published)")
        values.append(p["end_to_end_s"])
        lows.append(0)
        highs.append(0)
        colors.append(COLORS["published"])
        hatches.append("//")
    xs = range(len(values))
    bars = ax.bar(xs, values, color=colors)
    # Whiskers only where there are rounds: a published figure is a single number.
    spread = [i for i, h in enumerate(hatches) if not h]
    ax.errorbar(spread, [values[i] for i in spread],
                yerr=[[lows[i] for i in spread], [highs[i] for i in spread]],
                fmt="none", ecolor="black", elinewidth=0.8, capsize=3)
    for bar, hatch in zip(bars, hatches):
        bar.set_hatch(hatch)
        if hatch:
            bar.set_edgecolor("#888888")
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7, padding=2)
    ax.set_xticks(list(xs), labels, rotation=45, ha="right", fontsize=7)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("end to end, s", fontsize=8)
    ax.margins(y=0.15)
    ax.tick_params(axis="y", labelsize=8)


def main():
    source, output = sys.argv[1], sys.argv[2]
    with open(source, encoding="utf-8") as f:
        report = json.load(f)
    s = report["settings"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.8))
    panel(axes[0], report, "light", f"{s['light_steps']} sequential steps of fib({s['light_n']})")
    panel(axes[1], report, "heavy", f"{s['heavy_steps']} sequential steps of fib({s['heavy_n']})")
    m = report["machine"]
    fig.suptitle(
        f"ProcOS, one instance at a time: median of {s['rounds']} rounds (whiskers: min and max) "
        f"on {m['cores']} cores, {report['date']}\n"
        f"Pale, hatched: figures published by windmill.dev on {report['published_machine']}, "
        "not measured here",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(output, dpi=120)


if __name__ == "__main__":
    main()
