"""Scale curve: daemons per server (``--scale``; issue 13 §2).

1 / 10 / 50 real daemons (``ppz daemon start --foreground``, each with its own ``PPZ_HOME`` and
its own API key) logged in to one ``ppz-server`` whose NATS JWTs live 10 s
(``PPZ_NATS_JWT_TTL=10s``): every daemon exchanges its key every 5 s (the refresh lead is half
the lifetime) and rotates its NATS connection in place. The daemons are added cumulatively
(1, then 9 more, then 40 more); each point is a 60 s window once all are connected.

The daemons reach the server through a timing proxy in this process (``common.TimingProxy``),
which records each ``POST /api/v1/auth/exchange`` from request to response. Baseline: the same
exchange by one client alone (this process, sequentially, through the same proxy) before the
first daemon starts and after the last one stops. Server CPU is ppz-server's user+sys over the
window (its nats-server child in the note). Every daemon must stay connected with no ``swap``
event in the window (rotations are in place). Target at 50: exchange p99 ≤ 100 ms.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import PY, Row, TimingProxy, curve_row, log, percentile, proc_stat
from daemonfixture import DaemonHome, wait_for
from serverfixture import ServerProcess

SIZES = [1, 10, 50]
QUICK_SIZES = [1, 2]
WINDOW = 60.0
QUICK_WINDOW = 7.0
P99_TARGET_MS = 100.0
EXCHANGE = "/api/v1/auth/exchange"
X_LABEL = "daemons on one server"


def baseline_exchanges(proxy: TimingProxy, key: str, count: int) -> list[float]:
    from ppz.serverclient import ServerClient

    client = ServerClient()
    client.exchange(proxy.url, key)  # warm-up: the daemons' first exchange (at login) is outside the window too
    since = time.monotonic()
    for _ in range(count):
        client.exchange(proxy.url, key)
    return proxy.take(EXCHANGE, since)


def start_daemons(root: Path, server: ServerProcess, proxy: TimingProxy, first: int, last: int
                  ) -> list[DaemonHome]:
    """Start daemons ``first`` … ``last - 1``, log each in with a key of its own, wait until
    every one is connected."""
    homes = []
    for i in range(first, last):
        h = DaemonHome(root / f"home{i:02d}", env={"PPZ_SESSION": "bench"})
        h.root.mkdir(parents=True)
        log_file = open(root / f"home{i:02d}.log", "ab")  # noqa: SIM115 - handed to the child
        h.foreground = subprocess.Popen([PY, "-m", "ppz.cli", "daemon", "start", "--foreground"], env=h.env,
                                        stdout=log_file, stderr=log_file, stdin=subprocess.DEVNULL)
        log_file.close()
        homes.append(h)
    for i, h in enumerate(homes, start=first):
        wait_for(lambda h=h: h.status_or_none() is not None, timeout=60, what=f"daemon {i} to answer")
        h.call("Login", {"url": proxy.url, "api_key": server.add_key("bench", f"user{i}")})
    for h in homes:
        h.wait_connected(60)
    return homes


def swaps(h: DaemonHome) -> int:
    return sum(1 for e in h.events() if e.get("type") == "swap")


def window(server: ServerProcess, proxy: TimingProxy, homes: list[DaemonHome], seconds: float) -> dict[str, Any]:
    assert server.proc is not None
    spid, npid = server.proc.pid, server.nats_pid()
    before = [swaps(h) for h in homes]
    rotations0 = sum(sum(1 for e in h.events() if e.get("type") == "rotate") for h in homes)
    s0, _ = proc_stat(spid)
    n0, _ = proc_stat(npid)
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    s1, srss = proc_stat(spid)
    n1, _ = proc_stat(npid)
    connected = sum(1 for h in homes if (h.status_or_none() or {}).get("nats_state") == "connected")
    swapped = sum(1 for h, b in zip(homes, before, strict=True) if swaps(h) > b)
    rotations = sum(sum(1 for e in h.events() if e.get("type") == "rotate") for h in homes) - rotations0
    return {"lat": proxy.take(EXCHANGE, t0), "server_cpu": (s1 - s0) / elapsed * 100,
            "nats_cpu": (n1 - n0) / elapsed * 100, "server_rss_mb": srss / 1e6, "connected": connected,
            "swapped": swapped, "rotations": rotations, "elapsed": elapsed}


def run(quick: bool = False) -> list[Row]:
    sizes, seconds, base_n = (QUICK_SIZES, QUICK_WINDOW, 5) if quick else (SIZES, WINDOW, 20)
    root = Path(tempfile.mkdtemp(prefix="ppz-bench-daemons-"))
    server = ServerProcess(root / "server", env={"PPZ_NATS_JWT_TTL": "10s"})
    proxy: TimingProxy | None = None
    homes: list[DaemonHome] = []
    points: dict[int, dict[str, Any]] = {}
    try:
        server.start()
        assert server.proc is not None
        proxy = TimingProxy("127.0.0.1", server.http_port).start()
        base_key = server.add_key("bench", "baseline")
        base = baseline_exchanges(proxy, base_key, base_n)
        for n in sizes:
            t0 = time.monotonic()
            homes += start_daemons(root, server, proxy, len(homes), n)
            log(f"{n} daemons connected ({time.monotonic() - t0:.0f} s); {seconds:.0f} s window")
            points[n] = window(server, proxy, homes, seconds)
        for h in homes:
            h.kill()
        homes = []
        base += baseline_exchanges(proxy, base_key, base_n)
    finally:
        for h in homes:
            try:
                h.kill()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                log(f"daemon stop: {exc}")
        if proxy is not None:
            proxy.stop()
        try:
            server.close()
        finally:
            shutil.rmtree(root, ignore_errors=True)
    b50, b99 = percentile(base, 50), percentile(base, 99)
    top = max(sizes)
    rows: list[Row] = []
    for n in sizes:
        pt = points[n]
        lat = pt["lat"]
        if not lat:
            raise RuntimeError(f"no exchange recorded with {n} daemons in {pt['elapsed']:.0f} s")
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        rows.append(curve_row("daemons", n, X_LABEL, "exchange p50", p50, b50, "ms",
                              note=f"{len(lat)} exchanges in {pt['elapsed']:.0f} s; baseline: {len(base)} "
                                   f"exchanges by one client alone (info)"))
        rows.append(curve_row("daemons", n, X_LABEL, "exchange p99", p99, b99, "ms",
                              target=f"≤ {P99_TARGET_MS:.0f} ms at {top}",
                              ok=p99 <= P99_TARGET_MS if n == top else None,
                              target_abs=P99_TARGET_MS, target_at=top, note=f"max {max(lat):.1f} ms"))
        rows.append(curve_row("daemons", n, X_LABEL, "server CPU", pt["server_cpu"], None, "%",
                              note=f"ppz-server user+sys, % of one core; nats-server {pt['nats_cpu']:.1f} %; "
                                   f"ppz-server RSS {pt['server_rss_mb']:.0f} MB"))
        ok = pt["connected"] == n and pt["swapped"] == 0
        rows.append(curve_row("daemons", n, X_LABEL, "daemons connected, no swap", pt["connected"] - pt["swapped"],
                              n, "daemons", target="all", ok=ok,
                              note=f"connected {pt['connected']}/{n}, with a swap in the window {pt['swapped']}; "
                                   f"{pt['rotations']} in-place rotations"))
    return rows
