"""Races closed by issue 9, end to end: Status's bounded login probe (ipc.md §7.1, daemon.md §1.3),
Status's session fields logged out, and a Read whose stream lookup stalls on a wedged
connection (ipc.md §7.13 step 5, daemon.md §6, behaviour 47)."""

from __future__ import annotations

import json
import threading
from typing import Any
from urllib.parse import urlsplit

import pytest
from daemonfixture import DaemonHome, setup_world, wait_for
from httpproxy import RecordingProxy
from serverfixture import ServerProcess
from tcpproxy import TcpForwarder

from ppz import ipc

SOURCES = ("GET", "/api/v1/sources")


class GatedProxy(RecordingProxy):
    """Holds every ``GET /api/v1/sources`` until ``gate`` is set, and counts how many were held
    at once: a slow server, without a clock."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.gate = threading.Event()
        self.held = 0
        self.most_held = 0
        self._count = threading.Lock()

    def handle(self, req: Any, raw: bytes) -> None:
        if (req.command, urlsplit(req.path).path) != SOURCES:
            super().handle(req, raw)
            return
        with self._count:
            self.held += 1
            self.most_held = max(self.most_held, self.held)
        self.gate.wait(30)
        with self._count:
            self.held -= 1
        super().handle(req, raw)


@pytest.mark.timeout(60)
def test_status_holds_its_reply_for_a_slow_login_probe_at_most_a_second(ppz_server: ServerProcess,
                                                                          ppz_home: DaemonHome) -> None:
    proxy = GatedProxy(ppz_server.url).start()
    proxy.gate.set()
    try:
        h = ppz_home
        h.login(proxy.url, ppz_server.add_key("acme"))
        h.kill()
        proxy.gate.clear()  # the server is slow from now on
        # A fresh daemon (login check unverified again), polled with the CLI's 2 s Status deadline.
        h.start_foreground()
        statuses = [h.call("Status", {"session": "test-session"}, timeout=2.0) for _ in range(3)]
        assert all(s["logged_in"] and "login_check" not in s for s in statuses), statuses
        assert proxy.most_held == 1  # one probe in flight at a time
        # The probe finishes in the background; a later Status sees its outcome.
        proxy.gate.set()
        wait_for(lambda: h.status().get("login_check") == "ok", what="the probe's outcome")
    finally:
        proxy.gate.set()
        proxy.stop()


def test_status_reports_the_sessions_handle_and_namespace_logged_out(ppz_server: ServerProcess,
                                                                    ppz_home: DaemonHome) -> None:
    h = ppz_home
    setup_world(ppz_server, h)
    h.call("SetNamespace", {"namespace": "team-a", "session": "test-session"})
    h.call("Logout", {})
    h.home.current_json.write_text(json.dumps({"test-session": "alice"}))  # the poller reloads it
    status = wait_for(lambda: (s := h.status()).get("current") and s, what="the reloaded current.json")
    assert not status["logged_in"]
    assert (status["current"], status["current_namespace"]) == ("alice", "team-a")
    assert "current" not in h.call("Status", {"session": "other"})


@pytest.mark.timeout(90)
def test_a_read_whose_lookup_stalls_on_a_wedged_connection_gets_its_messages(
        ppz_server: ServerProcess, home_factory: Any) -> None:
    host, nats_port = ppz_server.nats_addr.split(":")
    proxy = TcpForwarder(0, (host, int(nats_port)))
    proxy.start()
    try:
        h = home_factory(PPZ_NATS_URL=f"nats://127.0.0.1:{proxy.port}")
        setup_world(ppz_server, h)
        for n in range(3):
            h.call("Send", {"handle": "alice", "payload": f"m{n}", "session": "s"})
        proxy.wedge()  # connections open now stay open but forward nothing; new ones work
        events = list(ipc.stream("Read", {"handle": "alice", "channel": "inbox", "session": "s"},
                                 path=str(h.home.socket)))
        assert [ev["msg"]["payload"] for ev in events] == ["m0", "m1", "m2"], events
        types = [(e["type"], e.get("caller")) for e in h.events()]
        assert ("force_close", "reportNATSFailure") in types, types
        assert types.index(("force_close", "reportNATSFailure")) < types.index(("reconnect", "ensureNATS"))
    finally:
        proxy.stop()
