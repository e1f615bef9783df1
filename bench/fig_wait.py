"""Wait figure: a waiting read woken by a send, against a raw nats-py ordered consumer.

* ppz: an IPC ``Read`` with ``wait_ms`` (what ``ppz read inbox --wait=10s`` sends) on a source
  whose messages were all read, so the read registers its wait; 100 ms later this process
  publishes an envelope to the inbox with raw nats-py (``js.publish``, as a ``ppz send`` from
  another daemon lands). Latency: publish → the ``msg`` line read from the IPC socket. It
  includes the wake, the consumer's stop and the fresh drain from the cursor (agents.md §1).
* baseline: a raw nats-py ordered consumer (``deliver_policy=new``) on its own connection;
  latency: publish → its callback. Same pacing, same loop, same server, same run.

Publisher, IPC client and baseline consumer run on one asyncio loop in this process; the blocks
of the two sides alternate.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from common import SESSION, Rig, Row, clock_ns, log, percentile
from fig_follow import body, connect

P50_TARGET_MS = 5.0
ARM = 0.1  # from the Read request to the publish: the read's drain is over, its wait armed
WAIT_MS = 10_000


async def ppz_wait_once(rig: Rig, js: Any, handle: str, subject: str, i: int) -> float:
    from ppz import ipc

    reader, writer = await asyncio.open_unix_connection(rig.socket)
    try:
        writer.write(ipc.encode_request("Read", {"handle": handle, "channel": "inbox", "head_limit": 10,
                                                 "wait_ms": WAIT_MS, "sender": "bench-reader",
                                                 "session": SESSION}))
        await writer.drain()
        await asyncio.sleep(ARM)
        t0 = clock_ns()
        await js.publish(subject, body(f"w:{i}"))
        line = await asyncio.wait_for(reader.readline(), WAIT_MS / 1000)
        t1 = clock_ns()
        event = json.loads(line)
        if event.get("msg", {}).get("payload") != f"w:{i}":
            raise RuntimeError(f"the wait returned {event!r}")
        rest = await asyncio.wait_for(reader.read(), 10)
        if rest.strip():
            raise RuntimeError(f"more than the one message after the wait: {rest!r}")
        return (t1 - t0) / 1e6
    finally:
        writer.close()


async def nats_once(js: Any, subject: str, got: asyncio.Queue[int], i: int) -> float:
    await asyncio.sleep(ARM)
    t0 = clock_ns()
    await js.publish(subject, body(f"n:{i}"))
    t1 = await asyncio.wait_for(got.get(), 10)
    return (t1 - t0) / 1e6


async def scenario(rig: Rig, blocks: int, per_block: int) -> dict[str, list[float]]:
    from nats.js.api import DeliverPolicy

    ppz_src = rig.create_source("waiter")
    raw_src = rig.create_source("raw-waiter")
    pub = await connect(rig)
    sub_nc = await connect(rig)
    got: asyncio.Queue[int] = asyncio.Queue()

    async def on_msg(msg: Any) -> None:
        got.put_nowait(clock_ns())

    lat: dict[str, list[float]] = {"ppz": [], "nats": []}
    try:
        js = pub.jetstream()
        sub = await sub_nc.jetstream().subscribe(raw_src["BENCH_SUBJECT"], cb=on_msg, ordered_consumer=True,
                                                 deliver_policy=DeliverPolicy.NEW)
        # Warm both paths (the daemon's source cache, the consumer), unmeasured.
        await ppz_wait_once(rig, js, ppz_src["BENCH_HANDLE"], ppz_src["BENCH_SUBJECT"], -1)
        await nats_once(js, raw_src["BENCH_SUBJECT"], got, -1)
        for b in range(blocks):
            order = ["ppz", "nats"] if b % 2 == 0 else ["nats", "ppz"]
            for side in order:
                for i in range(per_block):
                    if side == "ppz":
                        lat[side].append(await ppz_wait_once(rig, js, ppz_src["BENCH_HANDLE"],
                                                             ppz_src["BENCH_SUBJECT"], b * per_block + i))
                    else:
                        lat[side].append(await nats_once(js, raw_src["BENCH_SUBJECT"], got, b * per_block + i))
        await sub.unsubscribe()
    finally:
        await pub.close()
        await sub_nc.close()
    return lat


def run(quick: bool = False) -> list[Row]:
    blocks, per_block = (2, 15) if quick else (4, 50)
    with Rig("wait") as rig:
        log(f"wait: {blocks} × {per_block} waits woken per side, {ARM * 1000:.0f} ms after each request")
        lat = asyncio.run(scenario(rig, blocks, per_block))
    ppz, raw = lat["ppz"], lat["nats"]
    p50, b50 = percentile(ppz, 50), percentile(raw, 50)
    p99, b99 = percentile(ppz, 99), percentile(raw, 99)
    return [
        Row("Wait send→read --wait returns p50", p50, b50, "ms", target=f"≤ {P50_TARGET_MS:.0f} ms",
            ok=p50 <= P50_TARGET_MS, note=f"{len(ppz)} waits; baseline: a raw ordered consumer"),
        Row("Wait send→read --wait returns p99", p99, b99, "ms", note=f"{len(raw)} baseline messages"),
    ]
