"""SendBatch figure: one IPC ``SendBatch`` of 1 000 × 128 B payloads (publish all, wait for every
PubAck) against raw nats-py ``publish_async`` of the same 1 000 encoded envelopes followed by
waiting for all acks, on the same server and stream. Messages per second = 1 000 / batch wall
time; the figure is the median over batches. ppz and baseline rounds alternate.
"""

from __future__ import annotations

from common import PAYLOAD_SIZE, Rig, Row, log, median, run_workers

COUNT = 1000
TARGET = 0.6


def run(quick: bool = False) -> list[Row]:
    rounds, batches = (2, 2) if quick else (4, 4)
    rates: dict[str, list[float]] = {"ipc-batch": [], "nats-batch": []}
    with Rig("batch") as rig:
        env = rig.env()
        log(f"{rounds} rounds × {batches} batches of {COUNT} × {PAYLOAD_SIZE} B per side, alternating")
        for r in range(rounds):
            for kind in (["ipc-batch", "nats-batch"] if r % 2 == 0 else ["nats-batch", "ipc-batch"]):
                (res,) = run_workers([[kind, batches, COUNT, PAYLOAD_SIZE]], env)
                rates[kind] += [res["count"] / (ns / 1e9) for ns in res["elapsed_ns"]]
    ppz, raw = median(rates["ipc-batch"]), median(rates["nats-batch"])
    return [
        Row(f"SendBatch {COUNT} × {PAYLOAD_SIZE} B throughput", ppz, raw, "msg/s", target=f"≥ {TARGET:.2f}×",
            ok=ppz >= TARGET * raw,
            note=f"median of {len(rates['ipc-batch'])} batches per side; batch wall p50 "
                 f"{COUNT / ppz * 1000:.0f} ms vs {COUNT / raw * 1000:.0f} ms"),
    ]
