"""Smoke test of the benchmark code (``bench/``), so it cannot rot: ``bench/run.py --quick``
runs one tiny point of each scale curve (``--scale``'s follows, ls, payload, daemons) against
real servers and daemons. It checks that every curve measured something, not the numbers: those
belong to ``make bench`` on a quiet machine (docs/performance.md)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CURVES = {"follows": {"last receipt", "RSS", "CPU during broadcasts"},
          "ls": {"ppz ls wall", "IPC List vs raw listing"},
          "payload": {"Send p50"},
          "daemons": {"exchange p50", "exchange p99", "server CPU", "daemons connected, no swap"}}


@pytest.mark.timeout(240)
def test_quick_scale_run_measures_every_curve(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    cmd = [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--only", ",".join(CURVES), "--json", str(out)]
    plots = importlib.util.find_spec("matplotlib") is not None
    if plots:
        cmd += ["--plots", str(tmp_path / "charts")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=220, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert not [r for r in rows if r["ppz"] is None], rows
    seen: dict[str, set[str]] = {}
    for r in rows:
        seen.setdefault(r["curve"], set()).add(r["metric"])
        if r["curve"] == "follows" and r["metric"] == "last receipt":
            assert "10 s 5/5" in r["note"], r  # every follower got every broadcast
        if r["curve"] == "daemons" and r["metric"] == "daemons connected, no swap":
            assert r["ok"], r
    assert seen == CURVES
    if plots:
        assert sorted(p.name for p in (tmp_path / "charts").iterdir()) == sorted(f"scale-{c}.png" for c in CURVES)


def test_plots_flag_without_matplotlib_says_what_to_install(tmp_path: Path) -> None:
    # A sitecustomize that hides matplotlib, as in a venv without the bench extra.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['matplotlib'] = None\n")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--only", "cli", "--plots",
                           str(tmp_path / "charts")], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr
    assert "--plots needs matplotlib" in proc.stderr and ".[bench]" in proc.stderr
    assert not (tmp_path / "charts").exists()
