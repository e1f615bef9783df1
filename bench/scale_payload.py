"""Scale curve: payload size 128 B / 8 KiB / 60 KiB → IPC ``Send`` p50 against raw
``js.publish`` of the same encoded envelope (``--scale``; issue 13 §2). One client process per
side (``worker.py ipc-send`` / ``nats-publish``), blocks alternating; the Send p50 target
(≤ 2× raw) is drawn.
"""

from __future__ import annotations

from common import Rig, Row, curve_row, log, percentile
from fig_send import P50_TARGET, alternating, latency_block

SIZES = [128, 8192, 61440]
X_LABEL = "payload bytes"


def run(quick: bool = False) -> list[Row]:
    blocks, per_block = (2, 50) if quick else (4, 300)
    lat: dict[int, dict[str, list[float]]] = {n: {"ipc-send": [], "nats-publish": []} for n in SIZES}
    with Rig("payload") as rig:
        env = rig.env()
        log(f"{SIZES} B: {blocks} × {per_block} sequential sends per side and size, alternating")
        for b in range(blocks):
            for size in SIZES:
                for kind in alternating(["ipc-send", "nats-publish"], b):
                    lat[size][kind] += latency_block(env, kind, per_block, size)[0]
    rows: list[Row] = []
    for size in SIZES:
        p50, b50 = percentile(lat[size]["ipc-send"], 50), percentile(lat[size]["nats-publish"], 50)
        p99, b99 = percentile(lat[size]["ipc-send"], 99), percentile(lat[size]["nats-publish"], 99)
        rows.append(curve_row(
            "payload", size, X_LABEL, "Send p50", p50, b50, "ms", target=f"≤ {P50_TARGET:g}×",
            ok=p50 <= P50_TARGET * b50, target_ratio=P50_TARGET,
            note=f"{len(lat[size]['ipc-send'])} sends per side; p99 {p99:.2f} vs {b99:.2f} ms"))
    return rows
