"""Scale curve: concurrent follows on one daemon (``--scale``; issue 13 §2).

10 / 100 / 1 000 follows of one source. The ppz side is what ``ppz read --tail`` sends, one IPC
``Read{follow}`` per connection (its own session each), but driven from **one** process
(``worker.py ppz-follow``: many sockets on one selector), because 1 000 ``ppz read --tail``
processes would swamp a 2-core machine; the daemon sees the same thing either way. The baseline
is as many raw nats-py ordered consumers on one connection (``nats-follow``).

Per point, once the serving process has gone quiet after every follower received a warm-up
message (the setup's tail: ``fig_follow.fanout_phase(quiet=True)``): the time until the last
follower has a broadcast message (worst of the broadcasts),
RSS of the process serving the follows (the daemon; the baseline worker) once all receive, and
its CPU over the broadcasts. Targets at 1 000: last receipt ≤ 250 ms, RSS ≤ 150 MB, no
follower missing a message (none without it after ``DEADLINE_S`` = 10 s).
"""

from __future__ import annotations

import asyncio
from typing import Any

from common import Rig, Row, curve_row, log
from fig_follow import fanout_phase, worst

SIZES = [10, 100, 1000]
QUICK_SIZES = [5]
LAST_TARGET_MS = 250.0
RSS_TARGET_MB = 150.0
X_LABEL = "concurrent follows"
DEADLINE_S = 10.0  # a broadcast is "missing" for a follower that has not got it after this long


async def scenario(rig: Rig, sizes: list[int], broadcasts: int) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for i, n in enumerate(sizes):
        kinds = ["ppz-follow", "nats-follow"] if i % 2 == 0 else ["nats-follow", "ppz-follow"]
        point: dict[str, Any] = {}
        for kind in kinds:
            reports, stats = await fanout_phase(rig, kind, f"{kind.split('-')[0]}-crowd{n}", broadcasts, n=n,
                                                setup_timeout=60 + n * 0.3, deadline=DEADLINE_S,
                                                quiet=True)
            point[kind] = {"reports": reports, **stats}
        out[n] = point
    return out


def run(quick: bool = False) -> list[Row]:
    sizes, broadcasts = (QUICK_SIZES, 2) if quick else (SIZES, 5)
    with Rig("follows") as rig:
        log(f"{sizes} follows × {broadcasts} broadcasts per side")
        res = asyncio.run(scenario(rig, sizes, broadcasts))
    rows: list[Row] = []
    top = max(sizes)
    for n in sizes:
        ppz, raw = res[n]["ppz-follow"], res[n]["nats-follow"]
        last, got = worst(ppz["reports"])
        blast, bgot = worst(raw["reports"])
        at_top = n == top
        complete = got == n
        ok_last = complete and last is not None and (last <= LAST_TARGET_MS or not at_top)
        medians = [round(r["p50_ns"] / 1e6, 1) for r in ppz["reports"] if r["p50_ns"] is not None]
        rows.append(curve_row(
            "follows", n, X_LABEL, "last receipt", last, blast, "ms",
            target=f"all {n} get it; ≤ {LAST_TARGET_MS:.0f} ms at {top:,}", ok=ok_last if at_top else complete,
            target_abs=LAST_TARGET_MS, target_at=top,
            note=f"fewest followers reached within {DEADLINE_S:g} s {got}/{n} (baseline {bgot}/{n}); "
                 f"per-broadcast median receipt "
                 f"{medians} ms; setup {ppz['setup_s']:.1f} s vs {raw['setup_s']:.1f} s, "
                 f"then quiet after {ppz['settle_s']:.1f} s vs {raw['settle_s']:.1f} s"))
        rows.append(curve_row(
            "follows", n, X_LABEL, "RSS", ppz["rss_mb"], raw["rss_mb"], "MB",
            target=f"≤ {RSS_TARGET_MB:.0f} MB at {top:,}", ok=ppz["rss_mb"] <= RSS_TARGET_MB if at_top else None,
            target_abs=RSS_TARGET_MB, target_at=top,
            note=f"daemon threads {ppz['threads']} (baseline process {raw['threads']})"))
        rows.append(curve_row(
            "follows", n, X_LABEL, "CPU during broadcasts", ppz["cpu_pct"], raw["cpu_pct"], "%",
            note="user+sys of the serving process while broadcasts flow, % of one core (info)"))
    return rows
