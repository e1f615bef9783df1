"""The heartbeat runner of ``ppz heartbeat`` (spec/cli.md §2.15, payload of spec/nats.md §10):
beats once, until a signal, or while a wrapped command runs (signals passed on to it)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ppz import __version__, errors, ipc
from ppz.commands.client import UsageError, duration_flag, error_text, fail, flag_on, flag_value, session_id, warn

AGENT_STATES = ("", "idle", "working")
_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "i386": "386",
           "i686": "386", "armv7l": "arm", "armv6l": "arm", "ppc64le": "ppc64le", "s390x": "s390x",
           "riscv64": "riscv64"}


def host_facts() -> dict[str, str]:
    """``hostname``, ``os`` and ``arch`` as Go-style tokens (``linux``/``amd64``)."""
    uname = os.uname()
    machine = uname.machine.lower()
    return {"hostname": uname.nodename, "os": uname.sysname.lower(), "arch": _ARCHES.get(machine, machine)}


class Heartbeat:
    """Publishes the presence beats of one handle (payload of nats.md §10)."""

    def __init__(self, handle: str, interval: int, state: str, harness: str, model: str) -> None:
        from ppz.timestamps import format_rfc3339

        self.handle = handle
        self.interval = interval
        self.session = session_id()
        self.seq = 0
        self.ensured = False
        self.child_pid = 0
        self.fixed = {"harness": harness, "harness_source": "env" if harness else "", "agent_state": state,
                      "model": model, **host_facts(), "pid": os.getpid(), "ppz_version": __version__,
                      "started_at": format_rfc3339(time.time())}

    def _call(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return ipc.call(method, {**params, "session": self.session})

    def ensure(self) -> None:
        """``EnsurePTY``, or ``Create`` a pty source when the handle does not exist yet."""
        try:
            self._call("EnsurePTY", {"handle": self.handle})
        except errors.PpzError as err:
            if err.code != errors.E_SOURCE_NOT_FOUND:
                raise
            self._call("Create", {"handle": self.handle, "kind": "pty"})
        self.ensured = True

    def payload(self) -> str:
        import json

        from ppz.timestamps import format_rfc3339

        self.seq += 1
        beat = {"ts": format_rfc3339(time.time()), "seq": self.seq, **self.fixed, "child_pid": self.child_pid,
                "interval_sec": self.interval}
        return json.dumps(beat, separators=(",", ":"))

    def beat(self) -> None:
        """One beat; raises PpzError."""
        if not self.ensured:
            self.ensure()
        self._call("Send", {"handle": self.handle, "channel": "heartbeat", "payload": self.payload()})

    def beat_or_warn(self) -> None:
        try:
            self.beat()
        except errors.PpzError as err:
            warn(f"warning: heartbeat failed: {error_text(err)}")

    def run(self, stop: Any) -> None:
        """Beat now and then every interval until ``stop`` (a threading.Event) is set."""
        due = time.monotonic()
        while True:
            self.beat_or_warn()
            due = max(due + self.interval, time.monotonic())
            if stop.wait(due - time.monotonic()):
                return


def heartbeat(handle: str, interval: Any, state: Any, harness: Any, model: Any, once: Any,
              command: Sequence[str] | None) -> None:
    seconds = 60 if interval is None else max(int(duration_flag("interval", interval)), 1)
    agent_state = flag_value(state)
    if agent_state not in AGENT_STATES:
        raise UsageError(f"ppz heartbeat: --state must be idle or working (got {agent_state!r})")
    one = flag_on("once", once)
    if one and command:
        raise UsageError("ppz heartbeat: --once cannot be combined with a command")
    hb = Heartbeat(str(handle), seconds, agent_state,
                   os.environ.get("PPZ_AGENT_HARNESS", "") if harness is None else str(harness),
                   os.environ.get("PPZ_AGENT_MODEL", "") if model is None else str(model))
    if one:
        try:
            hb.beat()
        except errors.PpzError as err:
            fail(err)
        return
    if command:
        raise SystemExit(run_wrapped(hb, list(command)))
    beat_until_signalled(hb)


def beat_until_signalled(hb: Heartbeat) -> None:
    import signal
    import threading

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    hb.run(stop)


def run_wrapped(hb: Heartbeat, command: list[str]) -> int:
    """Run COMMAND with inherited stdio while beating in the background; its exit status
    (128 + N when killed by signal N). SIGINT/SIGTERM are passed on to it."""
    import signal
    import subprocess
    import threading

    env = {**os.environ, "PPZ_SESSION": hb.handle, "PPZ_CURRENT_HANDLE": hb.handle}
    children: list[subprocess.Popen[bytes]] = []
    pending: list[int] = []  # signals that arrived before the command started

    def forward(signum: int, frame: Any) -> None:
        if not children:
            pending.append(signum)
        elif children[0].poll() is None:
            children[0].send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    try:
        child = subprocess.Popen(command, env=env)
    except OSError as exc:
        warn(f"error: heartbeat: cannot run {command[0]!r}: {exc.strerror or exc}")
        return 126 if isinstance(exc, PermissionError) else 127
    children.append(child)
    for signum in pending:
        child.send_signal(signum)
    hb.child_pid = child.pid
    stop = threading.Event()
    threading.Thread(target=hb.run, args=(stop,), name="heartbeat", daemon=True).start()
    code = child.wait()
    stop.set()
    return 128 - code if code < 0 else code
