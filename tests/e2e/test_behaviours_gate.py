"""The login gate of the messaging verbs (spec/ipc.md §6, §7.10–7.15; behaviour 6).

Logged out, ``Send``, ``SendBatch``, ``Read``, ``List`` and ``ListWatch`` answer
``E_NOT_LOGGED_IN`` before any server or NATS work — only ``Send``'s priority and subject checks
and an empty ``SendBatch`` come earlier. The daemon talks to the server through
:class:`RecordingProxy`, so "no server work" (not even an exchange, which every NATS dial needs)
is an empty record.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from daemonfixture import DaemonHome
from httpproxy import RecordingProxy
from serverfixture import ServerProcess
from sharedserver import fresh_world, module_server  # noqa: F401 - module_server is a fixture

from ppz import errors

NOT_LOGGED_IN = ("E_NOT_LOGGED_IN", "not logged in; run 'ppz login URL --apikey KEY'")


@pytest.fixture(scope="module")
def logged_out_home(module_server: ServerProcess,  # noqa: F811
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonHome, RecordingProxy]]:
    """One daemon for the module, logged in (through the proxy), warmed, then logged out."""
    proxy = RecordingProxy(module_server.url).start()
    h = DaemonHome(tmp_path_factory.mktemp("gate") / "home")
    try:
        world = fresh_world(module_server, h, ("bob",))
        key = world["key"]
        h.login(proxy.url, key)  # through the proxy from now on
        h.wait_connected()
        # Warm every path: the stream of bob.inbox is known, so a logged-in Send would not even
        # ask the state actor.
        h.call("Send", {"handle": "bob", "channel": "inbox", "payload": "warm", "session": "s"})
        assert h.call("List", {"session": "s"})["sources"]
        assert h.call("Logout", {}) == {}
        yield h, proxy
    finally:
        h.kill()
        proxy.stop()


@pytest.fixture
def logged_out(logged_out_home: tuple[DaemonHome, RecordingProxy]) -> tuple[DaemonHome, RecordingProxy]:
    logged_out_home[1].records.clear()
    return logged_out_home


def error_of(h: DaemonHome, method: str, params: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(errors.PpzError) as info:
        h.call(method, params)
    return info.value.code, info.value.message


def read_lines(h: DaemonHome, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every line a ``Read`` sends before the daemon closes the connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(30)
        conn.connect(str(h.home.socket))
        conn.sendall(json.dumps({"method": "Read", "params": params}).encode() + b"\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


def test_messaging_verbs_are_refused_logged_out_before_any_server_or_nats_work(
        logged_out: tuple[DaemonHome, RecordingProxy]) -> None:
    h, proxy = logged_out
    refused: list[tuple[str, dict[str, Any]]] = [
        ("Send", {"handle": "bob", "channel": "inbox", "payload": "x", "session": "s"}),  # was warm
        ("Send", {"handle": "bob", "payload": "x", "priority": 3, "msg_subject": "user:ack:read"}),
        ("Send", {"handle": "BAD!", "channel": "Bad_Pipe", "payload": "x"}),  # the gate before validation
        ("Send", {"bare_target": "Bad!", "payload": "x"}),
        ("Send", {"payload": "x", "session": "s"}),  # no handle: the gate before E_NO_CURRENT_SOURCE
        ("SendBatch", {"handle": "bob", "channel": "inbox", "payloads": ["a", "b"], "session": "s"}),
        ("SendBatch", {"handle": "BAD!", "payloads": ["a"]}),
        ("List", {"session": "s"}),
        ("List", {"patterns": ["bob.*"], "long": True}),
        ("ListWatch", {"session": "s", "patterns": ["bob.inbox"]}),
    ]
    for method, params in refused:
        assert error_of(h, method, params) == NOT_LOGGED_IN, (method, params)
    for params in ({"handle": "bob", "channel": "inbox", "session": "s"},
                   {"handle": "BAD!", "channel": "Bad_Pipe"},
                   {"bare_target": "Bad!"},
                   {"session": "s"},
                   {"handle": "bob", "follow": True, "seed_latest": True},
                   {"handle": "bob", "all": True}):
        assert read_lines(h, params) == [{"error": {"code": NOT_LOGGED_IN[0], "message": NOT_LOGGED_IN[1]}}], params
    assert proxy.records == []  # not one server call, not even the exchange a NATS dial needs
    assert "nats_state" not in h.status()


def test_send_checks_priority_and_subject_and_an_empty_batch_answers_before_the_gate(
        logged_out: tuple[DaemonHome, RecordingProxy]) -> None:
    h, proxy = logged_out
    for priority in (-1, 4, 99):
        assert error_of(h, "Send", {"handle": "bob", "payload": "x", "priority": priority})[0] == \
            "E_INVALID_PRIORITY"
    assert error_of(h, "Send", {"handle": "bob", "payload": "x", "msg_subject": "ack:x"})[0] == "E_INVALID_SUBJECT"
    assert h.call("SendBatch", {"handle": "BAD!", "payloads": []}) == {"ids": [], "subject": "", "bytes": []}
    assert h.call("SendBatch", {}) == {"ids": [], "subject": "", "bytes": []}
    assert proxy.records == []


def test_status_diag_who_and_complete_still_answer_logged_out(logged_out: tuple[DaemonHome, RecordingProxy]) -> None:
    h, proxy = logged_out
    assert h.call("Status", {"session": "s"})["logged_in"] is False
    diag = h.call("Diag", {})
    assert isinstance(diag["patterns"], list) and isinstance(diag["nats_events"], list)
    assert h.call("Who", {}) == {"entries": []}
    assert h.call("Complete", {}) == {"sources": [], "stale": True}
    out = h.ppz("send", "bob", "hi")
    assert out.returncode == 10, out.stderr
    assert proxy.records == []
