"""Send figure: IPC ``Send`` latency (p50/p99) with one client, and throughput with 8 concurrent
clients, against raw nats-py ``js.publish`` (publish + wait for the PubAck) on the same server
and stream.

The IPC floor is measured too: a verb the daemon does not know, answered with its error on the
event loop (connect, request line, decoding, validation, reply, close; no handler), and an IPC
``Status`` round trip (no NATS work, but a handler on a thread that asks two actors).
Every client is its own process (``worker.py``): ``ipc-send`` calls ``ppz.ipc.call("Send")``
(one connection per request, as the CLI does); ``nats-publish`` holds one NATS connection and
publishes the same encoded envelope the daemon would publish for a 128 B payload. ppz and
baseline blocks alternate so that load drift on the machine hits both alike.

Throughput target (issue 13): the daemon holds **one** NATS connection for every client, so 8
concurrent IPC senders are held against one nats-py connection with 8 concurrent ``js.publish``
coroutines (``nats-publish-concurrent``), each awaiting its PubAck. Eight processes with a
connection each (the first round's baseline) are still measured, as information.
"""

from __future__ import annotations

from common import PAYLOAD_SIZE, Rig, Row, log, percentile, run_workers

P50_TARGET = 2.0
TPUT_TARGET = 0.5
CLIENTS = 8


def latency_block(env: dict[str, str], kind: str, n: int, size: int = PAYLOAD_SIZE) -> tuple[list[float], float]:
    """``n`` sequential sends by one client process: latencies in ms, and messages/s."""
    (res,) = run_workers([[kind, n, 50, size]], env)
    lat_ms = [x / 1e6 for x in res["lat_ns"]]
    return lat_ms, res["n"] / ((res["end"] - res["start"]) / 1e9)


def alternating(kinds: list[str], block: int) -> list[str]:
    """``kinds`` in the order of block ``block``: rotated by one per block, so each kind runs
    first, middle and last equally often."""
    k = block % len(kinds)
    return kinds[k:] + kinds[:k]


def throughput_round(env: dict[str, str], kind: str, per_client: int) -> float:
    if kind == "nats-publish-concurrent":
        specs = [[kind, CLIENTS, per_client, 20, PAYLOAD_SIZE]]
    else:
        specs = [[kind, per_client, 20, PAYLOAD_SIZE] for _ in range(CLIENTS)]
    results = run_workers(specs, env)
    total = sum(r["n"] for r in results)
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    return total / (span / 1e9)


def run(quick: bool = False) -> list[Row]:
    blocks, per_block = (2, 200) if quick else (4, 500)
    rounds, per_client = (1, 50) if quick else (4, 300)
    lat: dict[str, list[float]] = {"ipc-send": [], "nats-publish": []}
    single: dict[str, list[float]] = {"ipc-send": [], "nats-publish": []}
    kinds = ["ipc-send", "nats-publish-concurrent", "nats-publish"]
    tput: dict[str, list[float]] = {k: [] for k in kinds}
    with Rig("send") as rig:
        env = rig.env()
        log(f"latency: {blocks} × {per_block} sequential sends per side, alternating")
        for b in range(blocks):
            for kind in alternating(["ipc-send", "nats-publish"], b):
                samples, rate = latency_block(env, kind, per_block)
                lat[kind] += samples
                single[kind].append(rate)
        (status_res,) = run_workers([["ipc-status", per_block, 50, 0]], env)
        (floor_res,) = run_workers([["ipc-floor", per_block, 50, 0]], env)
        log(f"throughput: {rounds} rounds × {CLIENTS} senders × {per_client} sends per side, rotating "
            f"ppz / one connection / {CLIENTS} connections")
        for r in range(rounds):
            for kind in alternating(kinds, r):
                tput[kind].append(throughput_round(env, kind, per_client))
    p50 = percentile(lat["ipc-send"], 50)
    b50 = percentile(lat["nats-publish"], 50)
    p99 = percentile(lat["ipc-send"], 99)
    b99 = percentile(lat["nats-publish"], 99)
    t8, c8, b8 = (sum(tput[k]) / rounds for k in kinds)
    status = [x / 1e6 for x in status_res["lat_ns"]]
    s50 = percentile(status, 50)
    f50 = percentile([x / 1e6 for x in floor_res["lat_ns"]], 50)
    t1 = sum(single["ipc-send"]) / blocks
    b1 = sum(single["nats-publish"]) / blocks
    n = blocks * per_block
    per_round = (f"ppz {[round(x) for x in tput['ipc-send']]}, one connection "
                 f"{[round(x) for x in tput['nats-publish-concurrent']]}, {CLIENTS} connections "
                 f"{[round(x) for x in tput['nats-publish']]}")
    return [
        Row("Send p50 latency (1 client)", p50, b50, "ms", target=f"≤ {P50_TARGET:g}×", ok=p50 <= P50_TARGET * b50,
            note=f"{n} sends per side", extra={"samples": len(lat["ipc-send"])}),
        Row("Send p99 latency (1 client)", p99, b99, "ms", note=f"{n} sends per side (info)"),
        Row("IPC floor p50 (unknown verb, answered on the loop)", f50, b50, "ms",
            note="connect, request, decode, validate, error reply, close; against the raw publish p50 (info)"),
        Row("IPC Status round trip p50", s50, b50, "ms",
            note="no NATS work, but a thread hand-off and two actor asks; against the raw publish p50 (info)"),
        Row("Send throughput, 1 client", t1, b1, "msg/s", note="sequential, one process per side (info)"),
        Row(f"Send throughput, {CLIENTS} clients vs 1 connection", t8, c8, "msg/s", target=f"≥ {TPUT_TARGET:.2f}×",
            ok=t8 >= TPUT_TARGET * c8,
            note=f"{CLIENTS} IPC sender processes vs one nats-py connection with {CLIENTS} concurrent "
                 f"js.publish coroutines; {per_client} sends each, mean of {rounds} rounds: {per_round}"),
        Row(f"Send throughput, {CLIENTS} clients vs {CLIENTS} connections", t8, b8, "msg/s",
            note=f"{CLIENTS} processes with a connection each (the first round's baseline; info)"),
    ]
