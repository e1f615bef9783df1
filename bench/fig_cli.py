"""CLI figure: wall time of one ``ppz send`` against a minimal Python process that does one IPC
round trip (the floor for any Python CLI).

Both run as subprocesses of this process, alternating (so drift in machine load hits both
alike), against the same logged-in daemon, with the same interpreter and environment. The
bytecode cache lives in the rig's temp dir (``PYTHONPYCACHEPREFIX``) so that neither pays for
compiling sources, as after a normal ``pip install``. If the CLI has no working ``send`` yet,
``ppz status`` is measured instead and the row says so.
"""

from __future__ import annotations

import subprocess
import time

from common import HANDLE, PAYLOAD_SIZE, PPZ_BIN, PY, Rig, Row, log, median, percentile

# stdlib only: connect, write one Status request line, read the reply line.
BASELINE = """\
import json, os, socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(os.environ["BENCH_SOCKET"])
s.sendall(b'{"method":"Status","params":{"session":"bench"}}\\n')
buf = b""
while not buf.endswith(b"\\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
assert "result" in json.loads(buf)
"""

TARGET = 1.5


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[1:3]} exited {out.returncode}: {out.stderr.strip()}")
    return elapsed


def choose_command(env: dict[str, str]) -> tuple[list[str], str]:
    """``ppz send`` when it works, else ``ppz status``."""
    send = [PPZ_BIN, "send", HANDLE, "x" * PAYLOAD_SIZE]
    probe = subprocess.run(send, env=env, capture_output=True, text=True, timeout=30)
    if probe.returncode == 0:
        return send, "ppz send"
    log(f"`ppz send` failed ({probe.returncode}: {probe.stderr.strip()[:120]}); measuring `ppz status`")
    return [PPZ_BIN, "status"], "ppz status (stand-in: send missing)"


def measure(cmd: list[str], base: list[str], env: dict[str, str], runs: int, warmup: int
            ) -> tuple[list[float], list[float]]:
    for _ in range(warmup):
        timed(cmd, env)
        timed(base, env)
    ppz: list[float] = []
    floor: list[float] = []
    for i in range(runs):
        pair = [(cmd, ppz), (base, floor)]
        for c, into in pair if i % 2 else reversed(pair):
            into.append(timed(c, env))
    return ppz, floor


def run(quick: bool = False) -> list[Row]:
    runs = 8 if quick else 30
    with Rig("cli") as rig:
        env = rig.env()
        cmd, label = choose_command(env)
        base = [PY, "-c", BASELINE]
        log(f"{runs} × `{label}` vs {runs} × minimal IPC process")
        ppz, floor = measure(cmd, base, env, runs, warmup=3)
        # Informational: the same without any bytecode cache for ppz (this sandbox's default,
        # PYTHONDONTWRITEBYTECODE=1 and no __pycache__ under ppz/): every run recompiles ppz.
        cold_env = {k: v for k, v in env.items() if k != "PYTHONPYCACHEPREFIX"}
        cold_env["PYTHONDONTWRITEBYTECODE"] = "1"
        cold_runs = 5 if quick else 10
        cold, cold_floor = measure(cmd, base, cold_env, cold_runs, warmup=1)
    p50, f50 = median(ppz) * 1000, median(floor) * 1000
    rows = [
        Row(f"CLI `{label}` wall p50", p50, f50, "ms", target=f"≤ {TARGET:.1f}×",
            ok=p50 <= TARGET * f50,
            note=f"{runs} runs each; p90 {percentile(ppz, 90) * 1000:.1f} vs {percentile(floor, 90) * 1000:.1f} ms",
            extra={"samples_ms": [x * 1000 for x in ppz], "baseline_samples_ms": [x * 1000 for x in floor]}),
        Row(f"CLI `{label}` p50, no bytecode cache", median(cold) * 1000, median(cold_floor) * 1000, "ms",
            note=f"{cold_runs} runs each; PYTHONDONTWRITEBYTECODE=1 as in this sandbox (info)"),
    ]
    return rows
