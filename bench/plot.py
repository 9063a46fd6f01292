"""PNG charts of a bench run: ``python -m bench --plot DIR``, or from a saved run,
``python -m bench.plot RUN.json DIR``.

Three charts, each drawn only when the run has its figure:

- ``start-latency.png`` and ``cancel-latency.png``: the distribution of each
  system's samples (jobsup, the bare forkserver, RQ, Celery) as cumulative
  curves on one logarithmic time axis, so medians and tails read side by side;
- ``throughput.png``: no-op jobs a second for jobsup and each baseline,
  median bars with every round's value marked, beside the fork limit.

matplotlib comes with the ``bench`` extra only; the product never needs it.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

COLOURS = {
    "jobsup": "#1f6feb",
    "forkserver": "#6e7781",
    "Event.set": "#6e7781",
    "RQ": "#d1242f",
    "Celery": "#2da44e",
    "fork limit": "#8250df",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _latency(rows: list[dict[str, Any]], figure: str, title: str, path: Path) -> bool:
    samples: dict[str, list[float]] = {}
    for row in rows:
        if row["figure"] != figure:
            continue
        for key, values in row["extra"].items():
            if key.endswith("_s") and isinstance(values, list):
                samples.setdefault(key[:-2], values)
    if "jobsup" not in samples:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for name, values in samples.items():
        ms = sorted(v * 1000 for v in values)
        share = [(i + 1) / len(ms) for i in range(len(ms))]
        label = f"{name} (p50 {statistics.median(ms):.2f} ms)"
        ax.step(ms, share, where="post", label=label, color=COLOURS.get(name), linewidth=1.6)
    ax.set_xscale("log")
    ax.set_xlabel("ms (log scale)")
    ax.set_ylabel("share of samples at or below")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _throughput(rows: list[dict[str, Any]], path: Path) -> bool:
    rates: dict[str, list[float]] | None = None
    for row in rows:
        if row["figure"] == "throughput" and "jobs_per_s" in row["extra"]:
            rates = row["extra"]["jobs_per_s"]
            break
    if not rates:
        return False
    names = [name for name in ("jobsup", "RQ", "Celery", "fork limit") if rates.get(name)]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    medians = [statistics.median(rates[name]) for name in names]
    bars = ax.bar(names, medians, color=[COLOURS[name] for name in names], alpha=0.85)
    for i, name in enumerate(names):
        ax.plot([i] * len(rates[name]), rates[name], "k.", markersize=5)
    ours = medians[0]
    for bar, value in zip(bars, medians, strict=True):
        ax.annotate(
            f"{value:,.0f}\n({ours / value:.2f}x)" if value != ours else f"{value:,.0f}",
            (bar.get_x() + bar.get_width() / 2, value),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylabel("no-op jobs/s, concurrency 2")
    ax.set_title("Throughput: medians, rounds as dots (jobsup's ratio in brackets)")
    ax.set_ylim(0, max(max(v) for v in rates.values() if v) * 1.2)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def plot(rows: list[dict[str, Any]], outdir: Path) -> list[Path]:
    """Draw the charts the run's rows allow; returns the files written."""
    outdir.mkdir(parents=True, exist_ok=True)
    charts = [
        (
            outdir / "start-latency.png",
            lambda p: _latency(rows, "start latency", "Start latency: POST to first line", p),
        ),
        (
            outdir / "cancel-latency.png",
            lambda p: _latency(rows, "cancel latency", "Cancel latency: request to exited", p),
        ),
        (outdir / "throughput.png", lambda p: _throughput(rows, p)),
    ]
    return [path for path, draw in charts if draw(path)]


if __name__ == "__main__":
    report = json.loads(Path(sys.argv[1]).read_text())
    for written in plot(report["rows"], Path(sys.argv[2])):
        print(written)
