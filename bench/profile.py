"""Profile the daemon under one benchmark workload with py-spy (from the ``bench`` extra).

Usage: ``python bench/profile.py WORKLOAD [--seconds S] [--idle] [--out FILE]`` where WORKLOAD is

    send8    8 IPC sender processes (``worker.py ipc-send``) in a loop
    send1    one IPC sender process
    list     IPC ``List`` calls in a loop over 100 uncollared pipes
    follows  N follows (``--follows N``, default 1 000) and a broadcast every 100 ms

It starts a rig (``common.Rig``), runs the workload, records the daemon with ``py-spy record
--format raw --threads`` (``--idle`` also counts waiting stacks) and prints the heaviest
frames: self time per function, and inclusive time of the functions under ``ppz/``. The raw
collapsed stacks are written to ``--out`` (default ``/tmp/ppz-profile-WORKLOAD.txt``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PAYLOAD_SIZE, SESSION, Rig, Worker, clock_ns, log, workers  # noqa: E402

PY_SPY = str(Path(sys.executable).with_name("py-spy"))


def record(pid: int, seconds: float, out: Path, idle: bool) -> None:
    cmd = [PY_SPY, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--format", "raw",
           "--threads", "--rate", "200", "--output", str(out), "--nonblocking"]
    if idle:
        cmd.append("--idle")
    subprocess.run(cmd, check=True, capture_output=True, timeout=seconds + 60)


def report(path: Path, top: int = 25) -> None:
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        total += n
        threads[frames[0]] += n
        self_time[frames[-1]] += n
        for frame in set(frames[1:]):
            if "ppz/" in frame and "site-packages" not in frame:
                inclusive[frame] += n
    print(f"{total} samples")
    for title, counter in (("by thread", threads), ("self", self_time), ("inclusive, ppz/", inclusive)):
        print(f"\n-- {title}")
        for frame, n in counter.most_common(top):
            print(f"{n / total * 100:6.1f} %  {frame}")


def send_loop(rig: Rig, clients: int, stop: threading.Event) -> None:
    env = rig.env()
    while not stop.is_set():
        with workers([["ipc-send", 500, 0, PAYLOAD_SIZE] for _ in range(clients)], env) as ws:
            for w in ws:
                w.readline(60)
            for w in ws:
                w.send()
            for w in ws:
                w.readline(120)


def list_loop(rig: Rig, stop: threading.Event, ready: threading.Event) -> None:
    for i in range(100):
        rig.call("PipeCreate", {"name": f"p{i:03d}", "session": SESSION})
        rig.call("Send", {"bare_target": f"p{i:03d}", "payload": "x", "session": SESSION})
    ready.set()
    while not stop.is_set():
        rig.call("List", {"session": SESSION})


def follows_loop(rig: Rig, n: int, stop: threading.Event, ready: threading.Event) -> None:
    from fig_follow import body, connect, warm_up

    async def main() -> None:
        src = rig.create_source("crowd")
        worker = Worker(["ppz-follow", n], {**rig.env(), **src})
        nc = await connect(rig)
        try:
            worker.readline(120)
            js = nc.jetstream()
            await warm_up(js, src["BENCH_SUBJECT"], worker, 0.25, 300)
            ready.set()
            b = 0
            while not stop.is_set():
                await js.publish(src["BENCH_SUBJECT"], body(f"b:{b}:{clock_ns()}"))
                b += 1
                await asyncio.sleep(0.1)
                while worker.poll() is not None:
                    pass
        finally:
            await nc.close()
            worker.stop()

    asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=["send8", "send1", "list", "follows"])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--idle", action="store_true", help="count idle (waiting) stacks too")
    parser.add_argument("--follows", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out or Path(f"/tmp/ppz-profile-{args.workload}.txt")
    stop, ready = threading.Event(), threading.Event()
    with Rig(f"profile-{args.workload}") as rig:
        if args.workload == "follows":
            target = threading.Thread(target=follows_loop, args=(rig, args.follows, stop, ready), daemon=True)
        elif args.workload == "list":
            target = threading.Thread(target=list_loop, args=(rig, stop, ready), daemon=True)
        else:
            clients = 8 if args.workload == "send8" else 1
            target = threading.Thread(target=send_loop, args=(rig, clients, stop), daemon=True)
        if args.workload.startswith("send"):
            ready.set()
        target.start()
        ready.wait(600)
        time.sleep(2.0)
        pid = rig.daemon_pid()
        log(f"recording daemon {pid} for {args.seconds:.0f} s (load {os.getloadavg()[0]:.2f})")
        t0 = time.process_time()
        record(pid, args.seconds, out, args.idle)
        stop.set()
        target.join(60)
        del t0
    report(out)
    print(f"\nraw stacks: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
