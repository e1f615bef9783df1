"""``make bench``: run every benchmark figure and print one summary table.

Each figure starts its own ppz-server (with nats-server) and daemon in a temp dir, measures the
project's number and a baseline in the same run against the same server, and stops everything
it started, also on failure or Ctrl-C. Figures (see each module's docstring):

    cli     ``ppz send`` wall time vs a minimal one-round-trip Python process
    send    IPC ``Send`` latency and 8-client throughput vs raw nats-py ``js.publish``
    batch   ``SendBatch`` 1 000 × 128 B vs raw nats-py ``publish_async``
    follow  publish → follower latency vs a raw ordered consumer; 200 concurrent follows
    idle    daemon RSS and CPU over 30 s idle (vs an idle, connected nats-py process)

Scale curves (``--scale``, each point against a baseline measured in the same run):

    follows  10 / 100 / 1 000 concurrent follows: last receipt, daemon RSS and CPU
    ls       ``ppz ls`` over 10 / 100 / 1 000 pipes vs a raw listing
    payload  ``Send`` p50 at 128 B / 8 KiB / 60 KiB vs raw ``js.publish``
    daemons  1 / 10 / 50 daemons on one server, 10 s JWTs: exchange latency, server CPU

Usage: ``python bench/run.py [--scale] [--only cli,send,...] [--quick] [--plots DIR] [--json FILE]
[--markdown] [--strict]``.
Exit status 1 when a figure could not be measured (or, with ``--strict``, when a target is missed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, failed_row  # noqa: E402

FIGURES = ["cli", "send", "batch", "follow", "wait", "mcp", "idle"]
# Scale curves (``--scale``), modules ``scale_<name>.py``.
SCALE = ["follows", "ls", "payload", "daemons"]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) // 1024} MiB"
    except (OSError, ValueError, IndexError):
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "kernel": platform.release(), "memory": mem, "loadavg_at_start": load}


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "daemons":
        return f"{value:.0f}"
    if unit in ("msg/s",):
        return f"{value:,.0f} {unit}"
    if unit == "%":
        return f"{value:.2f} %"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.2f} {unit}"


def cells(row: Row) -> list[str]:
    ratio = row.ratio
    result = {True: "pass", False: "MISS", None: "info"}[row.ok]
    return [row.figure, fmt(row.ppz, row.unit), fmt(row.baseline, row.unit),
            "—" if ratio is None else f"{ratio:.2f}×", row.target, result]


HEADERS = ["figure", "ppz", "baseline", "ratio", "target", "result"]


def text_table(rows: list[Row]) -> str:
    table = [HEADERS] + [cells(r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADERS))]
    lines = []
    for n, r in enumerate(table):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) if i < 4 else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"  [{r.figure}] {r.note}" for r in rows if r.note]
    return "\n".join(lines + (["", "notes:"] + notes if notes else []))


def markdown_table(rows: list[Row]) -> str:
    out = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join(["---"] + ["---:"] * 3 + ["---", "---"]) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |" for r in rows]
    return "\n".join(out)


def run_figure(name: str, quick: bool) -> list[Row]:
    import importlib

    module = importlib.import_module(f"scale_{name}" if name in SCALE else f"fig_{name}")
    try:
        return module.run(quick=quick)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one failing figure must not hide the others
        traceback.print_exc()
        return [failed_row(name, exc)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated figures to run, from {FIGURES + SCALE}")
    parser.add_argument("--scale", action="store_true", help=f"also run the scale curves {SCALE} (~10 min)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test, not for numbers)")
    parser.add_argument("--plots", metavar="DIR", help="write a PNG chart of each scale curve (needs the bench "
                        "extra: pip install -e '.[bench]')")
    parser.add_argument("--json", metavar="FILE", help="also write the rows (with raw samples) as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = parser.parse_args()
    if args.only:
        chosen = [f.strip() for f in args.only.split(",") if f.strip()]
    else:
        chosen = FIGURES + (SCALE if args.scale else [])
    unknown = [f for f in chosen if f not in FIGURES + SCALE]
    if unknown:
        parser.error(f"unknown figure(s) {unknown}; choose from {FIGURES + SCALE}")
    if args.plots:
        try:
            import plots  # noqa: F401 - fail now, not after a 10-minute run
        except ImportError as exc:
            print(f"--plots needs matplotlib, from the bench extra: {Path(sys.executable).parent}/pip install -e "
                  f"'.[bench]' ({exc})", file=sys.stderr)
            return 2

    # SIGTERM unwinds like Ctrl-C, so every context manager stops what it started.
    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    info = machine()
    print(f"machine: {info['nproc']} × {info['cpu']}, Python {info['python']}, Linux {info['kernel']}, "
          f"{info['memory']}, load average at start {info['loadavg_at_start']}", flush=True)
    rows: list[Row] = []
    started = time.monotonic()
    interrupted = False
    try:
        for name in chosen:
            print(f"== {name}", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            rows += run_figure(name, args.quick)
            print(f"   ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted; partial results:", file=sys.stderr)
    info["loadavg_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print(text_table(rows))
    print(f"\ntotal {time.monotonic() - started:.0f} s; load average at end {info['loadavg_at_end']}")
    if args.markdown:
        print()
        print(markdown_table(rows))
    if args.plots:
        import plots

        for path in plots.write_charts(rows, Path(args.plots), info):
            print(f"chart: {path}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "rows": [r.as_json() for r in rows]}, indent=1))
    broken = [r for r in rows if r.ok is False and r.ppz is None]
    misses = [r for r in rows if r.ok is False]
    if interrupted:
        return 130
    return 1 if broken or (args.strict and misses) else 0


if __name__ == "__main__":
    sys.exit(main())
