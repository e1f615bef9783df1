"""``ppz daemon stop`` against a daemon that does not stop (spec/daemon.md §1.4; behaviour 83)."""

from __future__ import annotations

import os
import signal

from daemonfixture import DaemonHome, wait_for

from ppz import home


def test_stop_gives_up_after_5s_when_the_daemon_is_still_running(ppz_home: DaemonHome) -> None:
    out = ppz_home.ppz("daemon", "start")
    assert out.returncode == 0, out.stderr
    pid = ppz_home.pid()
    os.kill(pid, signal.SIGSTOP)  # alive, lock held, SIGTERM left pending
    try:
        out = ppz_home.ppz("daemon", "stop")
        assert (out.returncode, out.stdout, out.stderr) == (
            1, "", f"error: daemon did not stop within 5s (pid={pid})\n")
        assert home.lock_is_held(ppz_home.home.lock)
    finally:
        os.kill(pid, signal.SIGCONT)
    # Resumed, it acts on the SIGTERM it was sent: a graceful stop.
    wait_for(lambda: not home.lock_is_held(ppz_home.home.lock), timeout=10, what="the daemon to stop")
    assert ppz_home.ppz("daemon", "stop").stdout == "daemon not running\n"
