"""Scale curve: ``ppz ls`` over 10 / 100 / 1 000 pipes (``--scale``; issue 13 §2).

The pipes are uncollared pipes created with IPC ``PipeCreate`` (plus the rig's source ``bob``
with its ``inbox``), each holding one message, so every row has a last message to preview.

ppz: wall time of ``.venv/bin/ppz ls`` (a process, as users run it). Baseline: what the
cheapest daemon-backed CLI could do with raw nats-py: the CLI floor (a stdlib ``python -c``
that does one IPC ``Status`` round trip, as in the CLI figure) **plus** a raw listing on an open
nats-py connection: ``$JS.API.STREAM.LIST`` (paged) and a ``$JS.API.STREAM.MSG.GET`` of the last
message of every stream, all in flight at once. The IPC ``List`` round trip (the daemon's
share, no process start) against the raw listing alone is an info row. Runs alternate.
Targets: ``ppz ls`` ≤ 1.5× the baseline at every size and ≤ 1 s at 1 000.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from common import PPZ_BIN, PY, SESSION, Rig, Row, curve_row, log, median
from fig_cli import BASELINE, timed
from fig_follow import body, connect

SIZES = [10, 100, 1000]
QUICK_SIZES = [5]
RATIO_TARGET = 1.5
ABS_TARGET_S = 1.0
X_LABEL = "pipes"


async def raw_listing(nc: Any, subject_filter: str) -> int:
    """List every stream, then read the last message of each non-empty one; returns the count."""
    streams: list[dict[str, Any]] = []
    while True:
        msg = await nc.request("$JS.API.STREAM.LIST", json.dumps({"offset": len(streams),
                                                                  "subject": subject_filter}).encode(), timeout=10)
        reply = json.loads(msg.data)
        page = reply.get("streams") or []
        streams += page
        if not page or len(streams) >= int(reply.get("total") or 0):
            break

    async def last(s: dict[str, Any]) -> bytes:
        name, seq = s["config"]["name"], s["state"]["last_seq"]
        msg = await nc.request(f"$JS.API.STREAM.MSG.GET.{name}", json.dumps({"seq": seq}).encode(), timeout=10)
        return msg.data

    await asyncio.gather(*(last(s) for s in streams if s["state"]["messages"]))
    return len(streams)


async def add_pipes(rig: Rig, nc: Any, have: int, want: int) -> None:
    """Create pipes ``p<have>`` … ``p<want-1>`` and publish one message to each."""
    from ppz import names

    js = nc.jetstream()
    for i in range(have, want):
        name = f"p{i:04d}"
        rig.call("PipeCreate", {"name": name, "session": SESSION})
        await js.publish(names.subject(rig.account_id, "", "", name), body(f"message of {name}"))


async def scenario(rig: Rig, sizes: list[int], runs: int) -> dict[int, dict[str, list[float]]]:
    from ppz import names

    env = rig.env()
    nc = await connect(rig)
    out: dict[int, dict[str, list[float]]] = {}
    try:
        await nc.jetstream().publish(rig.subject, body("message of bob"))
        have = 0
        for n in sizes:
            t0 = time.monotonic()
            await add_pipes(rig, nc, have, n)
            have = n
            log(f"{n} pipes ready ({time.monotonic() - t0:.1f} s)")
            reply = rig.call("List", {"session": SESSION})
            listed = len(reply["uncollared_pipes"])
            if listed != n:
                raise RuntimeError(f"List shows {listed} uncollared pipes, expected {n}")
            got = await raw_listing(nc, names.account_wildcard(rig.account_id))
            if got < n + 1:
                raise RuntimeError(f"raw listing found {got} streams, expected {n + 1}")
            samples: dict[str, list[float]] = {"ppz": [], "floor": [], "raw": [], "ipc": []}
            timed([PPZ_BIN, "ls"], env)  # warm-up
            for r in range(runs):
                order = ["ppz", "floor", "raw", "ipc"] if r % 2 == 0 else ["raw", "ipc", "ppz", "floor"]
                for what in order:
                    if what == "ppz":
                        samples[what].append(timed([PPZ_BIN, "ls"], env))
                    elif what == "floor":
                        samples[what].append(timed([PY, "-c", BASELINE], env))
                    elif what == "raw":
                        t = time.perf_counter()
                        await raw_listing(nc, names.account_wildcard(rig.account_id))
                        samples[what].append(time.perf_counter() - t)
                    else:
                        t = time.perf_counter()
                        rig.call("List", {"session": SESSION})
                        samples[what].append(time.perf_counter() - t)
            out[n] = samples
    finally:
        await nc.close()
    return out


def run(quick: bool = False) -> list[Row]:
    sizes, runs = (QUICK_SIZES, 3) if quick else (SIZES, 10)
    with Rig("ls") as rig:
        log(f"{sizes} pipes, {runs} runs per side and size")
        res = asyncio.run(scenario(rig, sizes, runs))
    rows: list[Row] = []
    for n in sizes:
        s = res[n]
        ppz = median(s["ppz"]) * 1000
        floor, raw = median(s["floor"]) * 1000, median(s["raw"]) * 1000
        base = floor + raw
        ok = ppz <= RATIO_TARGET * base and (n < 1000 or ppz <= ABS_TARGET_S * 1000)
        rows.append(curve_row(
            "ls", n, X_LABEL, "ppz ls wall", ppz, base, "ms",
            target=f"≤ {RATIO_TARGET:g}×" + (f", ≤ {ABS_TARGET_S:g} s" if n >= 1000 else ""), ok=ok,
            target_ratio=RATIO_TARGET,
            note=f"baseline = CLI floor {floor:.1f} ms + raw listing {raw:.1f} ms; medians of {len(s['ppz'])} runs"))
        rows.append(curve_row(
            "ls", n, X_LABEL, "IPC List vs raw listing", median(s["ipc"]) * 1000, raw, "ms",
            note="the daemon's share: IPC List round trip from a warm client vs the raw listing alone (info)"))
    return rows
