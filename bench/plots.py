"""PNG charts of the scale curves (``run.py --plots DIR``): one file per curve, one panel per
metric, ppz against its baseline over the curve's x, with the target drawn in.

Needs matplotlib from the ``bench`` extra (``pip install -e '.[bench]'``), never a runtime
dependency of ppz; importing this module without it raises ImportError.
"""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from common import REPO, Row  # noqa: E402


def commit() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+uncommitted" if dirty else "") if head else "unknown"


def footer(info: dict[str, Any]) -> str:
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{date} · commit {commit()} · {info.get('nproc')} × {info.get('cpu')}, Python {info.get('python')} · "
            f"load {info.get('loadavg_at_start')} → {info.get('loadavg_at_end', '?')}")


def curves(rows: list[Row]) -> dict[str, dict[str, list[Row]]]:
    """Scale rows grouped by curve, then metric, in x order."""
    out: dict[str, dict[str, list[Row]]] = {}
    for row in rows:
        curve = row.extra.get("curve")
        if curve is None or row.ppz is None:
            continue
        out.setdefault(curve, {}).setdefault(row.extra["metric"], []).append(row)
    for metrics in out.values():
        for points in metrics.values():
            points.sort(key=lambda r: r.extra["x"])
    return out


def panel(ax: Any, metric: str, points: list[Row]) -> None:
    xs = [r.extra["x"] for r in points]
    unit = points[0].unit
    ax.plot(xs, [r.ppz for r in points], "o-", color="tab:blue", label="ppz")
    if any(r.baseline is not None for r in points):
        bx = [r.extra["x"] for r in points if r.baseline is not None]
        ax.plot(bx, [r.baseline for r in points if r.baseline is not None], "s--", color="tab:gray",
                label="baseline")
    for r in points:
        if r.ok is False:
            ax.plot([r.extra["x"]], [r.ppz], "x", color="tab:red", markersize=12, mew=2)
    first = points[0].extra
    at = first.get("target_at")
    if first.get("target_abs") is not None:
        label = "target" + (f" (at {at:,})" if at is not None else "")
        ax.axhline(first["target_abs"], color="tab:red", linestyle=":", label=label)
    if first.get("target_ratio") is not None:
        tx = [r.extra["x"] for r in points if r.baseline is not None]
        ty = [first["target_ratio"] * r.baseline for r in points if r.baseline is not None]
        ax.plot(tx, ty, ":", color="tab:red", label=f"target ({first['target_ratio']:g}× baseline)")
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{x:,}" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel(first["x_label"])
    ax.set_ylabel(unit)
    ax.set_title(metric)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def write_charts(rows: list[Row], directory: Path, info: dict[str, Any]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for curve, metrics in curves(rows).items():
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.8), squeeze=False)
        for ax, (metric, points) in zip(axes[0], metrics.items(), strict=True):
            panel(ax, metric, points)
        fig.suptitle(f"scale: {curve}")
        fig.text(0.01, 0.01, footer(info), fontsize=7, color="dimgray")
        fig.tight_layout(rect=(0, 0.04, 1, 0.95))
        path = directory / f"scale-{curve}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
