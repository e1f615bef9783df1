"""The daemon as ``bootstrap`` starts it, in process: the warm path is on after start-up."""

from __future__ import annotations

import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ppz import handlers, home, ipc
from ppz.bootstrap import Daemon
from ppz.eventlog import EventLog
from ppz.home import Home


@pytest.fixture
def started_daemon() -> Iterator[Daemon]:
    # A short root: the socket path must fit in sun_path.
    with tempfile.TemporaryDirectory(prefix="ppz-boot-") as root:
        home_ = Home.at(Path(root))
        daemon = Daemon(home_, EventLog(home_.events, home_.lifecycle), home.load_state(home_))
        old_hup = signal.getsignal(signal.SIGHUP)
        try:
            daemon.start()
            yield daemon
        finally:
            daemon.stop()
            signal.signal(signal.SIGHUP, old_hup)


@pytest.fixture
def fast_status(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """Install a fast handler for ``Status`` that answers on the loop and records its thread."""
    threads: list[threading.Thread] = []

    async def answer_fast(_system: Any, _params: dict[str, Any]) -> dict[str, Any]:
        threads.append(threading.current_thread())
        return {"fast": True}

    monkeypatch.setitem(handlers.FAST_HANDLERS, "Status", answer_fast)
    return threads


def test_fast_handlers_answer_on_the_loop_right_after_start_up(
    fast_status: list[threading.Thread], started_daemon: Daemon
) -> None:
    # Without the loop the acceptor serves every request on a thread and never asks a fast
    # handler: the warm path would be off and Status would get its normal reply.
    reply = ipc.call("Status", {}, timeout=10, path=str(started_daemon.home.socket))

    assert reply == {"fast": True}
    assert [t.name for t in fast_status] == ["ppz-nats"]


def test_a_stopped_daemon_has_stopped_its_loop(
    fast_status: list[threading.Thread], started_daemon: Daemon
) -> None:
    ipc.call("Status", {}, timeout=10, path=str(started_daemon.home.socket))
    started_daemon.stop()

    [loop_thread] = fast_status
    assert not loop_thread.is_alive()
