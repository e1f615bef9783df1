"""Follow figure: publish → follower latency, and 200 concurrent follows.

The publisher is this process, with raw nats-py (``js.publish`` of an encoded envelope whose
payload carries the CLOCK_MONOTONIC send time). Followers are separate processes
(``worker.py``):

* ``ppz-follow``: IPC ``Read`` with ``follow`` (what ``ppz read --tail`` sends), one session per
  connection, events decoded with the stdlib as the CLI does;
* ``nats-follow``: raw nats-py ordered consumers (``deliver_policy=new``) on one connection.

Latency: one follower, messages paced 5 ms apart (no queueing), ppz and baseline blocks
alternating, each block on a fresh source so nothing is drained first. Fan-out: 200 follows of
one source, then broadcasts one at a time; the figure is the time until the 200th follower has
the message (worst broadcast), and every follower must have it within 1 s.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from common import Rig, Row, Worker, clock_ns, log, percentile, proc_stat, proc_threads, sign_cb

P50_TARGET = 1.5
P99_TARGET_MS = 5.0
FANOUT = 200
FANOUT_TARGET_S = 1.0
PACE = 0.005


async def connect(rig: Rig) -> Any:
    import nats

    assert rig.nats is not None
    jwt, seed = rig.nats.jwt, rig.nats.seed
    return await nats.connect(rig.nats.url, user_jwt_cb=lambda: jwt.encode(), signature_cb=sign_cb(seed),
                              allow_reconnect=False)


def body(text: str) -> bytes:
    from ppz.envelope import new_envelope

    return new_envelope(sender="bench", payload=text).encode()


async def warm_up(js: Any, subject: str, worker: Worker, interval: float, timeout: float) -> None:
    """Publish ``warm`` until the worker says every follower received one."""
    deadline = time.monotonic() + timeout
    while True:
        await js.publish(subject, body("warm"))
        end = time.monotonic() + interval
        while time.monotonic() < end:
            line = worker.poll()
            if line is not None and "warm" in line:
                return
            await asyncio.sleep(0.005)
        if time.monotonic() > deadline:
            raise TimeoutError(f"followers not receiving after {timeout}s")


async def latency_phase(rig: Rig, kind: str, handle: str, n: int) -> list[float]:
    src = rig.create_source(handle)
    worker = Worker([kind, 1], {**rig.env(), **src})
    nc = await connect(rig)
    try:
        worker.readline(30)
        js = nc.jetstream()
        await warm_up(js, src["BENCH_SUBJECT"], worker, 0.05, 20)
        await asyncio.sleep(0.2)
        for _ in range(n):
            await js.publish(src["BENCH_SUBJECT"], body(f"t:{clock_ns()}"))
            await asyncio.sleep(PACE)
        await js.publish(src["BENCH_SUBJECT"], body("stop"))
        res = worker.readline(30)["result"]
    finally:
        await nc.close()
        worker.stop()
    if len(res["lat_ns"]) != n:
        raise RuntimeError(f"{kind}: {len(res['lat_ns'])} of {n} messages arrived")
    return [x / 1e6 for x in res["lat_ns"]]


async def settle(pid: int, quiet_pct: float = 15.0, window: float = 0.25, timeout: float = 30.0) -> float:
    """Wait until process ``pid`` is quiet (CPU below ``quiet_pct`` % of a core over ``window``
    seconds, at most ``timeout``); returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        cpu0, _ = proc_stat(pid)
        await asyncio.sleep(window)
        cpu1, _ = proc_stat(pid)
        if (cpu1 - cpu0) / window * 100 < quiet_pct:
            break
    return time.monotonic() - t0


async def fanout_phase(rig: Rig, kind: str, handle: str, broadcasts: int, n: int = FANOUT,
                       setup_timeout: float = 90.0, deadline: float = 3.0, quiet: bool = False
                       ) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """``n`` follows of a fresh source, then ``broadcasts`` messages one at a time.

    Returns the worker's per-broadcast reports and resource figures of the process that serves
    the follows (the daemon for ``ppz-follow``, the worker itself for ``nats-follow``): RSS once
    every follow receives, CPU % over the broadcasts, and the setup time. A broadcast that has
    not reached every follower after ``deadline`` seconds is reported with those it reached.
    With ``quiet``, the broadcasts start once that process has gone quiet after the warm-up
    (``settle_s``): a follower receives its first message before its ``Read`` handler has
    finished setting the follow up, and at 1 000 follows that tail of the setup (hundreds of
    threads still busy) otherwise lands on the first broadcast.
    """
    src = rig.create_source(handle)
    worker = Worker([kind, n], {**rig.env(), **src, "BENCH_BROADCAST_DEADLINE": str(deadline)})
    pid = rig.daemon_pid() if kind == "ppz-follow" else worker.proc.pid
    nc = await connect(rig)
    out = []
    try:
        worker.readline(setup_timeout)
        js = nc.jetstream()
        t0 = time.monotonic()
        await warm_up(js, src["BENCH_SUBJECT"], worker, 0.25, setup_timeout)
        setup = time.monotonic() - t0
        log(f"{kind}: {n} follows receiving after {setup:.1f} s")
        await asyncio.sleep(0.5)
        settled = await settle(pid) if quiet else 0.0
        cpu0, rss = proc_stat(pid)
        c0 = time.monotonic()
        for b in range(broadcasts):
            await js.publish(src["BENCH_SUBJECT"], body(f"b:{b}:{clock_ns()}"))
            out.append(worker.readline(deadline + 10))
            await asyncio.sleep(0.3)
        cpu1, rss1 = proc_stat(pid)
        stats = {"rss_mb": max(rss, rss1) / 1e6, "cpu_pct": (cpu1 - cpu0) / (time.monotonic() - c0) * 100,
                 "setup_s": setup, "settle_s": settled, "threads": proc_threads(pid)}
        await js.publish(src["BENCH_SUBJECT"], body("stop"))
        worker.readline(30)
    finally:
        await nc.close()
        worker.stop()
    return out, stats


def worst(reports: list[dict[str, Any]]) -> tuple[float | None, int]:
    """(last receipt in ms of the worst broadcast, fewest followers any broadcast reached)."""
    got = min(r["received"] for r in reports)
    if any(r["max_ns"] is None for r in reports):
        return None, got
    return max(r["max_ns"] for r in reports) / 1e6, got


async def scenario(rig: Rig, blocks: int, per_block: int, broadcasts: int) -> dict[str, Any]:
    lat: dict[str, list[float]] = {"ppz-follow": [], "nats-follow": []}
    for b in range(blocks):
        for kind in (["ppz-follow", "nats-follow"] if b % 2 == 0 else ["nats-follow", "ppz-follow"]):
            lat[kind] += await latency_phase(rig, kind, f"{kind.split('-')[0]}-lat{b}", per_block)
    fan = {kind: (await fanout_phase(rig, kind, f"{kind.split('-')[0]}-crowd", broadcasts))[0]
           for kind in ("nats-follow", "ppz-follow")}
    return {"lat": lat, "fan": fan}


def run(quick: bool = False) -> list[Row]:
    blocks, per_block, broadcasts = (2, 100, 2) if quick else (4, 250, 5)
    with Rig("follow") as rig:
        log(f"latency: {blocks} × {per_block} messages {PACE * 1000:.0f} ms apart per side; "
            f"fan-out: {FANOUT} follows × {broadcasts} broadcasts per side")
        res = asyncio.run(scenario(rig, blocks, per_block, broadcasts))
    ppz, raw = res["lat"]["ppz-follow"], res["lat"]["nats-follow"]
    p50, b50 = percentile(ppz, 50), percentile(raw, 50)
    p99, b99 = percentile(ppz, 99), percentile(raw, 99)

    fan_ms, fan_got = worst(res["fan"]["ppz-follow"])
    bfan_ms, _ = worst(res["fan"]["nats-follow"])
    fan_ok = fan_got == FANOUT and fan_ms is not None and fan_ms <= FANOUT_TARGET_S * 1000
    fan_p50 = [round(r["p50_ns"] / 1e6, 1) for r in res["fan"]["ppz-follow"] if r["p50_ns"] is not None]
    return [
        Row("Follow publish→follower p50", p50, b50, "ms", target=f"≤ {P50_TARGET:g}×", ok=p50 <= P50_TARGET * b50,
            note=f"{len(ppz)} messages per side"),
        Row("Follow publish→follower p99", p99, b99, "ms", target=f"≤ {P99_TARGET_MS:.0f} ms", ok=p99 <= P99_TARGET_MS),
        Row(f"{FANOUT} follows: last receipt of a broadcast", fan_ms, bfan_ms, "ms",
            target=f"all ≤ {FANOUT_TARGET_S * 1000:.0f} ms", ok=fan_ok,
            note=f"worst of {broadcasts} broadcasts; min followers reached {fan_got}/{FANOUT}; "
                 f"per-broadcast median receipt (ppz) {fan_p50} ms"),
    ]
