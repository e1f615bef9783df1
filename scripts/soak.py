"""Exactly-once soak: rotation under load, a NATS kill and a daemon restart, with real
``ppz read bob.inbox --tail --json`` followers, N times (``make soak``; docs/reliability.md).

Each run starts a fresh ``ppz-server`` (credentials valid ``--ttl``, so the daemon rotates them
every few seconds) and a fresh daemon, creates ``bob``, lifts the inbox's retention, and starts
``--followers`` CLI followers (each in its own session, so each has its own cursor) and
``--senders`` IPC senders, each sending distinct numbers as fast as the daemon acknowledges them.
While they run, the NATS child is SIGKILLed (ppz-server restarts it) and the daemon is restarted
with ``ppz daemon restart``. After ``--duration`` seconds the senders stop, and the soak waits
until every follower has every acknowledged message (or ``--catch-up`` seconds pass).

One line per run: messages acknowledged, delivered per follower, duplicates per follower,
gaps per follower (acknowledged but never delivered), extra (delivered but never acknowledged:
sends that failed after their message was stored, which is allowed), swaps and rotations from
the daemon's ``nats-events.jsonl``, daemon starts, and send errors by code. A run is clean when
every follower got every acknowledged message exactly once and no message twice, every follower
is still running, both faults happened, and at least one message was acknowledged after the
daemon restart. Exit 1 if any run is not clean (its directory is kept and printed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # serverfixture / daemonfixture (reused, not copied)

from daemonfixture import CLI, DaemonHome, setup_world  # noqa: E402
from serverfixture import ServerProcess  # noqa: E402

from ppz import errors, ipc  # noqa: E402

HANDLE = "bob"
SENDER_SPAN = 10_000_000  # sender k sends k * SENDER_SPAN + i
NATS_UNREACHABLE_EXIT = errors.exit_status(errors.E_NATS_UNREACHABLE)


class Follower:
    """One ``ppz read bob.inbox --tail --json`` subprocess and the payloads it printed.

    The CLI redials by itself after a swap or a daemon restart (cli.md §2.8), but a redial that
    lands while NATS is down gets an ``error`` event and exits ``E_NATS_UNREACHABLE`` (19): as a
    user or a supervisor would, the soak then starts ``ppz read --tail`` again in the same
    session (same cursor) after 1 s and counts it in ``reruns``. Any other exit ends it."""

    def __init__(self, h: DaemonHome, session: str, log: IO[bytes]) -> None:
        self.session = session
        self.env = {**h.env, "PPZ_SESSION": session}
        self.log = log
        self.payloads: list[int] = []
        self.arrivals: list[float] = []  # wall-clock time of each payload, for the report
        self.reruns = 0
        self.stopping = threading.Event()
        self.lock = threading.Lock()  # a rerun and stop() never cross
        self.proc = self._spawn()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*CLI, "read", f"{HANDLE}.inbox", "--tail", "--json"], env=self.env,
                                stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL)

    def _read(self) -> None:
        while True:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.payloads.append(int(json.loads(line)["payload"]))
                self.arrivals.append(time.time())
            if self.proc.wait() != NATS_UNREACHABLE_EXIT or self.stopping.wait(1.0):
                return
            with self.lock:
                if self.stopping.is_set():
                    return
                self.reruns += 1
                self.proc = self._spawn()

    @property
    def running(self) -> bool:
        return self.reader.is_alive()

    def stop(self) -> int | None:
        """Ctrl-C (exit 0 expected); returns the exit status, or None if it had to be killed.
        A follower that ended by itself returns its own status."""
        with self.lock:
            self.stopping.set()
        if not self.running:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        self.reader.join(10)
        return self.proc.returncode


@dataclass
class Run:
    """What one run saw."""

    acked: list[int] = field(default_factory=list)
    acked_after_restart: int = 0
    send_errors: Counter[str] = field(default_factory=Counter)
    faults: list[str] = field(default_factory=list)
    fault_times: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def sender(h: DaemonHome, k: int, run: Run, pause: float, stop: threading.Event,
           restarted: threading.Event) -> None:
    """Send k * SENDER_SPAN + i for i = 0, 1, … (``pause`` seconds apart) until ``stop``; record
    what was acknowledged."""
    i = 0
    while not stop.is_set():
        n = k * SENDER_SPAN + i
        i += 1
        after_restart = restarted.is_set()
        try:
            h.call("Send", {"handle": HANDLE, "channel": "inbox", "payload": str(n), "session": f"s{k}"},
                   timeout=15)
        except errors.PpzError as exc:
            run.send_errors[exc.code or type(exc).__name__] += 1
            if exc.code == errors.E_DAEMON_NOT_RUNNING:
                time.sleep(0.1)  # the daemon is restarting: don't spin on a missing socket
            continue
        run.acked.append(n)
        if after_restart:
            run.acked_after_restart += 1
        time.sleep(pause)


def chaos(h: DaemonHome, server: ServerProcess, run: Run, duration: float, stop: threading.Event,
          restarted: threading.Event) -> None:
    """A NATS kill at 30 % of the run and a daemon restart at 65 %."""
    start = time.monotonic()
    if stop.wait(max(0.0, start + 0.30 * duration - time.monotonic())):
        return
    try:
        run.fault_times["nats-kill"] = time.time()
        old = server.kill_nats()
        server.wait_nats_restarted(old, timeout=30)
        run.fault_times["nats-back"] = time.time()
        run.faults.append("nats-kill")
    except Exception as exc:  # noqa: BLE001 - reported as a problem of the run
        run.problems.append(f"nats kill: {exc}")
    if stop.wait(max(0.0, start + 0.65 * duration - time.monotonic())):
        return
    run.fault_times["daemon-restart"] = time.time()
    out = h.ppz("daemon", "restart")
    run.fault_times["daemon-back"] = time.time()
    restarted.set()
    if out.returncode == 0:
        run.faults.append("daemon-restart")
    else:
        run.problems.append(f"daemon restart exited {out.returncode}: {out.stderr.strip()}")


def ranges(numbers: list[int]) -> list[list[int]]:
    """Sorted numbers as [first, last] runs."""
    out: list[list[int]] = []
    for n in sorted(numbers):
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return out


def write_report(path: Path, h: DaemonHome, run: Run, followers: list[Follower]) -> None:
    """For a run that is not clean: the stream sequences a follower missed or got twice (from a
    reread of the whole inbox), with when it printed the messages around them."""
    seq_of: dict[int, int] = {}
    try:
        events = ipc.stream("Read", {"handle": HANDLE, "channel": "inbox", "session": "soak-audit", "all": True,
                                     "limit": 0}, path=str(h.home.socket))
        for seq, ev in enumerate((e for e in events if "msg" in e), start=1):
            seq_of[int(ev["msg"]["payload"])] = seq
    except errors.PpzError as exc:
        seq_of = {}
        print(f"#   reread for the report failed: {exc}", flush=True)
    acked = set(run.acked)
    per_follower: dict[str, object] = {}
    for f in followers:
        got = Counter(f.payloads)
        missing = sorted(seq_of.get(n, -1) for n in acked - set(got))
        twice = sorted(seq_of.get(n, -1) for n, c in got.items() if c > 1)
        around: set[int] = set()
        for first, last in ranges(missing) + ranges(twice):
            around.update(range(first - 3, last + 4))
        timeline = [[seq_of.get(n, -1), n, t] for n, t in zip(f.payloads, f.arrivals, strict=True)
                    if seq_of.get(n, -1) in around]
        per_follower[f.session] = {
            "missing_seq_ranges": ranges(missing), "duplicate_seqs": twice, "reruns": f.reruns,
            "printed": len(f.payloads), "timeline_around": timeline[:2000]}
    path.write_text(json.dumps({"fault_times": run.fault_times, "followers": per_follower}, indent=1))


def event_counts(h: DaemonHome) -> Counter[str]:
    """Event types of the daemon's event log (all generations: one home per run)."""
    counts: Counter[str] = Counter()
    for path in (h.home.events.with_name(h.home.events.name + ".2"),
                 h.home.events.with_name(h.home.events.name + ".1"), h.home.events):
        with contextlib.suppress(FileNotFoundError):
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError, AttributeError):
                    counts[json.loads(line).get("type", "?")] += 1
    return counts


def one_run(index: int, args: argparse.Namespace, root: Path) -> tuple[bool, str]:
    """Run once under ``root``; returns (clean, the result line)."""
    root.mkdir(parents=True)
    server = ServerProcess(root / "server", env={"PPZ_NATS_JWT_TTL": args.ttl})
    h = DaemonHome(root / "home")
    run = Run()
    followers: list[Follower] = []
    stop = threading.Event()
    restarted = threading.Event()
    log = open(root / "followers.log", "ab")  # noqa: SIM115 - closed in finally
    started = time.monotonic()
    try:
        server.start()
        setup_world(server, h, handles=(HANDLE,))
        h.call("PipeSet", {"handle": HANDLE, "name": "inbox", "max_msgs": -1, "max_bytes": -1})
        followers = [Follower(h, f"f{i}", log) for i in range(args.followers)]
        threads = [threading.Thread(target=sender, args=(h, k, run, args.pause, stop, restarted), daemon=True)
                   for k in range(args.senders)]
        threads.append(threading.Thread(target=chaos, args=(h, server, run, args.duration, stop, restarted),
                                        daemon=True))
        for t in threads:
            t.start()
        stop.wait(args.duration)
        stop.set()
        for t in threads:
            t.join(60)
            if t.is_alive():
                run.problems.append(f"{t.name} did not stop")
        acked = set(run.acked)
        deadline = time.monotonic() + args.catch_up
        while time.monotonic() < deadline and not all(acked <= set(f.payloads) for f in followers):
            if not all(f.running for f in followers):
                break
            time.sleep(0.2)
        for f in followers:
            rc = f.stop()
            if rc != 0:
                run.problems.append(f"follower {f.session} exited {rc}")
        events = event_counts(h)
        if any(not acked <= set(f.payloads) or len(f.payloads) != len(set(f.payloads)) for f in followers):
            write_report(root / "report.json", h, run, followers)
    finally:
        stop.set()
        for f in followers:
            f.stopping.set()
            if f.proc.poll() is None:
                f.proc.kill()
        log.close()
        h.kill()
        try:
            server.close()
        except Exception as exc:  # noqa: BLE001 - report, keep going
            run.problems.append(f"server stop: {exc}")
    acked = set(run.acked)
    delivered = [len(acked & set(f.payloads)) for f in followers]
    dups = [sum(c - 1 for c in Counter(f.payloads).values()) for f in followers]
    gaps = [len(acked - set(f.payloads)) for f in followers]
    extra = len(set().union(*(set(f.payloads) for f in followers)) - acked) if followers else 0
    for fault in ("nats-kill", "daemon-restart"):
        if fault not in run.faults:
            run.problems.append(f"no {fault}")
    if not run.acked_after_restart:
        run.problems.append("nothing acknowledged after the daemon restart")
    clean = not run.problems and not any(dups) and not any(gaps) and bool(acked)
    slash = "/".join
    line = (f"run {index:2d}  {time.monotonic() - started:5.1f}s  acked={len(acked)}"
            f"  delivered={slash(map(str, delivered))}  duplicates={slash(map(str, dups))}"
            f"  gaps={slash(map(str, gaps))}  extra={extra}  swaps={events['swap']}"
            f"  rotations={events['rotate']}  daemon_starts={events['daemon_start']}"
            f"  follower_reruns={slash(str(f.reruns) for f in followers)}"
            f"  send_errors={dict(sorted(run.send_errors.items()))}  {'clean' if clean else 'NOT CLEAN'}")
    if run.problems:
        line += "  (" + "; ".join(run.problems) + ")"
    return clean, line


def header(args: argparse.Namespace) -> str:
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return (f"# soak  commit={commit}{'+dirty' if dirty else ''}  date={date}"
            f"  machine={platform.node()} {platform.machine()} cpus={os.cpu_count()}"
            f"  python={platform.python_version()}\n"
            f"# runs={args.runs} duration={args.duration:g}s senders={args.senders} pause={args.pause:g}s"
            f" followers={args.followers}"
            f" ttl={args.ttl} catch_up={args.catch_up:g}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--duration", type=float, default=55.0, help="seconds of sending per run")
    parser.add_argument("--senders", type=int, default=6)
    parser.add_argument("--followers", type=int, default=3)
    parser.add_argument("--pause", type=float, default=0.02, help="seconds each sender waits between sends")
    parser.add_argument("--ttl", default="5s", help="credential lifetime (PPZ_NATS_JWT_TTL)")
    parser.add_argument("--catch-up", type=float, default=60.0,
                        help="seconds to wait for the followers after the senders stop")
    parser.add_argument("--keep", action="store_true", help="keep the directories of clean runs too")
    args = parser.parse_args(argv)
    # A shell without job control starts background commands (``make soak &``, nohup) with
    # SIGINT ignored, and children inherit an ignored signal: the followers, stopped with SIGINT,
    # would not stop. A handled signal is reset to the default in a child. SIGTERM cleans up like
    # Ctrl-C: every run stops its followers, daemon and server in ``finally``.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(header(args), flush=True)
    base = Path(tempfile.mkdtemp(prefix="ppz-soak-"))
    failed = 0
    for i in range(1, args.runs + 1):
        root = base / f"run{i:02d}"
        clean, line = one_run(i, args, root)
        print(line, flush=True)
        if clean and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        elif not clean:
            failed += 1
            print(f"#   kept {root}", flush=True)
    print(f"# {args.runs - failed}/{args.runs} runs clean", flush=True)
    if not failed and not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
