"""Idle figure: the daemon's resident memory and CPU over 30 s at rest, after it has done some
work (sends, a batch, a drain, a list), next to an idle nats-py process holding one connection
with the same credential (the smallest Python process that "is connected"), sampled over the
same window. Targets are absolute: RSS ≤ 60 MB, CPU ≤ 1 % of one core.
"""

from __future__ import annotations

import time

from common import HANDLE, SESSION, Rig, Row, Worker, log, proc_stat, proc_threads

WINDOW = 30.0
RSS_TARGET_MB = 60.0
CPU_TARGET_PCT = 1.0


def exercise(rig: Rig) -> None:
    """Some real work first, so that the idle state is that of a daemon that has been used."""
    for i in range(50):
        rig.call("Send", {"handle": HANDLE, "channel": "inbox", "payload": f"warm {i}", "session": SESSION})
    rig.call("SendBatch", {"handle": HANDLE, "channel": "inbox", "payloads": ["x" * 128] * 200, "session": SESSION})
    from ppz import ipc

    for _ in ipc.stream("Read", {"handle": HANDLE, "channel": "inbox", "head_limit": 0, "session": SESSION},
                        path=rig.socket):
        pass
    rig.call("List", {"session": SESSION})
    rig.call("Status", {"session": SESSION})


def run(quick: bool = False) -> list[Row]:
    window = 8.0 if quick else WINDOW
    with Rig("idle") as rig:
        exercise(rig)
        base = Worker(["nats-idle"], rig.env())
        try:
            base.readline(30)
            pid, bpid = rig.daemon_pid(), base.proc.pid
            time.sleep(2.0)  # let the last replies and receipts settle
            log(f"sampling daemon {pid} and baseline {bpid} for {window:.0f} s")
            c0, _ = proc_stat(pid)
            b0, _ = proc_stat(bpid)
            t0 = time.monotonic()
            peak = bpeak = 0
            while time.monotonic() - t0 < window:
                time.sleep(1.0)
                peak = max(peak, proc_stat(pid)[1])
                bpeak = max(bpeak, proc_stat(bpid)[1])
            elapsed = time.monotonic() - t0
            c1, rss = proc_stat(pid)
            b1, brss = proc_stat(bpid)
            threads = proc_threads(pid)
        finally:
            base.stop()
    cpu = (c1 - c0) / elapsed * 100
    bcpu = (b1 - b0) / elapsed * 100
    mb, bmb = rss / 1e6, brss / 1e6
    return [
        Row("Idle daemon RSS", mb, bmb, "MB", target=f"≤ {RSS_TARGET_MB:.0f} MB", ok=mb <= RSS_TARGET_MB,
            note=f"at the end of {elapsed:.0f} s idle (peak {peak / 1e6:.1f} vs {bpeak / 1e6:.1f} MB); "
                 f"daemon threads: {threads}; baseline = idle connected nats-py process"),
        Row("Idle daemon CPU", cpu, bcpu, "%", target=f"≤ {CPU_TARGET_PCT:.0f} %", ok=cpu <= CPU_TARGET_PCT,
            note=f"user+sys over {elapsed:.0f} s, % of one core"),
    ]
