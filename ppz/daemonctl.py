"""Starting and stopping the daemon from the CLI (spec/daemon.md §1.3, §1.4).

Standard library only: this runs in the short-lived ``ppz`` process.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

from ppz import errors, home, ipc
from ppz.home import Home

PROBE_DEADLINE = 2.0
START_WAIT = 5.0
STOP_WAIT = 5.0
POLL = 0.05


class CtlError(Exception):
    """An uncoded CLI error (exit 1) with its message."""


def probe(home_: Home, timeout: float = PROBE_DEADLINE) -> int | None:
    """The running daemon's pid, or None when ``Status`` gets no reply in time."""
    try:
        reply = ipc.call("Status", {}, timeout=timeout, path=str(home_.socket))
    except errors.PpzError:
        return None
    pid = reply.get("daemon_pid")
    return pid if isinstance(pid, int) else 0


def spawn(home_: Home) -> None:
    """Start ``ppz daemon start --foreground`` detached, logging to ``daemon.log``."""
    home_.ensure_dir()
    env = dict(os.environ)
    env["PPZ_HOME"] = str(home_.root)
    env["PPZ_IPC_SOCKET"] = str(home_.socket)
    fd = os.open(home_.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with open(os.devnull, "rb") as devnull:
            subprocess.Popen(
                [sys.executable, "-m", "ppz.cli", "daemon", "start", "--foreground"],
                stdin=devnull,
                stdout=fd,
                stderr=fd,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
    finally:
        os.close(fd)


def ensure_running(home_: Home) -> tuple[int, bool]:
    """daemon.md §1.3: returns (pid, started_by_us)."""
    pid = probe(home_)
    if pid is not None:
        return pid, False
    spawn(home_)
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        pid = probe(home_, timeout=max(0.05, min(PROBE_DEADLINE, deadline - time.monotonic())))
        if pid is not None:
            return pid, True
        time.sleep(POLL)
    raise CtlError(f"daemon did not come up within 5s; see {home_.log}")


def stop(home_: Home) -> int | None:
    """daemon.md §1.4: returns the stopped pid, or None when no daemon ran."""
    if not home_.lock.exists() or not home.lock_is_held(home_.lock):
        return None
    pid = home.read_pid(home_.pid)
    if pid <= 0:
        raise CtlError("daemon is running but daemon.pid is unreadable")
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return None
        raise CtlError(f"cannot signal daemon pid={pid}: {exc.strerror}") from None
    deadline = time.monotonic() + STOP_WAIT
    while time.monotonic() < deadline:
        if not home.lock_is_held(home_.lock):
            return pid
        time.sleep(POLL)
    raise CtlError(f"daemon did not stop within 5s (pid={pid})")
