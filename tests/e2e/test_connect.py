"""The background connect loop and ensure-NATS against a server that misbehaves
(spec/daemon.md §4, §5.5; behaviours 33–35), through the recording proxy of tests/httpproxy.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from daemonfixture import DaemonHome, wait_for
from httpproxy import EXCHANGE, RecordingProxy
from serverfixture import ServerProcess
from tcpproxy import TcpForwarder

from ppz import errors
from ppz.serverclient import ServerClient

ROUTE = ("POST", EXCHANGE)


@pytest.fixture
def proxy(ppz_server: ServerProcess) -> Iterator[RecordingProxy]:
    p = RecordingProxy(ppz_server.url).start()
    yield p
    p.stop()


def exchanges(proxy: RecordingProxy) -> int:
    return sum(1 for r in proxy.records if r.route == ROUTE)


def logged_in(ppz_server: ServerProcess, h: DaemonHome, proxy: RecordingProxy) -> dict[str, Any]:
    key = ppz_server.add_key("acme")
    h.login(proxy.url, key)
    status = h.wait_connected()

    class Creds:
        url, api_key, account_id = ppz_server.url, key, status["account_id"]

    ServerClient().create_source(Creds, "bob", "message", "")
    return {"key": key, "acct": status["account_id"]}


def restart(h: DaemonHome, proxy: RecordingProxy) -> None:
    out = h.ppz("daemon", "stop")
    assert out.returncode == 0, out.stderr
    proxy.records.clear()
    out = h.ppz("daemon", "start")
    assert out.returncode == 0, out.stderr


@pytest.mark.timeout(60)
def test_cold_exchange_503s_are_retried_until_connected(ppz_server: ServerProcess, ppz_home: DaemonHome,
                                                       proxy: RecordingProxy) -> None:
    logged_in(ppz_server, ppz_home, proxy)
    proxy.fail[ROUTE] = [503, 503]
    restart(ppz_home, proxy)
    ppz_home.wait_connected(timeout=30)
    assert exchanges(proxy) == 3


@pytest.mark.timeout(60)
def test_cold_exchange_401_stops_the_loop(ppz_server: ServerProcess, ppz_home: DaemonHome,
                                         proxy: RecordingProxy) -> None:
    logged_in(ppz_server, ppz_home, proxy)
    proxy.fail[ROUTE] = [401, 401, 401, 401]
    # The key is refused everywhere: a Status probe (GET /sources) answered 200 after the
    # exchange's 401 was handled would otherwise set the login check back to "ok".
    proxy.fail[("GET", "/api/v1/sources")] = [401] * 100
    restart(ppz_home, proxy)
    wait_for(lambda: exchanges(proxy) >= 1, timeout=10, what="the cold exchange")
    wait_for(lambda: ppz_home.status().get("login_check") == "invalid", timeout=10, what="login check invalid")
    seen = exchanges(proxy)
    import time

    time.sleep(5)  # the loop would have retried after 2 s and 4 s
    assert exchanges(proxy) == seen
    assert "nats_state" not in ppz_home.status()


@pytest.mark.timeout(60)
def test_concurrent_verbs_share_one_cold_exchange(ppz_server: ServerProcess, ppz_home: DaemonHome,
                                                 proxy: RecordingProxy) -> None:
    logged_in(ppz_server, ppz_home, proxy)
    proxy.delay[ROUTE] = 1.0
    restart(ppz_home, proxy)
    results: list[Any] = []

    def send(i: int) -> None:
        try:
            results.append(ppz_home.call("Send", {"handle": "bob", "channel": "inbox", "payload": str(i),
                                                  "session": "s"}))
        except errors.PpzError as exc:
            results.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(isinstance(r, dict) for r in results), results
    assert exchanges(proxy) == 1
    # All eight ended on one connection: since the restart, one dial, installed once.
    events = since_last_start(ppz_home)
    swaps = [e for e in events if e["type"] == "swap"]
    assert len(swaps) == 1 and swaps[0]["reason"] == f"old=- new={swaps[0]['nc_id']}", swaps
    assert [(e["type"], e["nc_id"]) for e in events if e["type"] in ("connect", "reconnect")] == [
        ("connect", swaps[0]["nc_id"])]


def since_last_start(h: DaemonHome) -> list[dict[str, Any]]:
    """The events recorded since the newest ``daemon_start``."""
    events = h.events()
    starts = [i for i, e in enumerate(events) if e["type"] == "daemon_start"]
    assert starts, events
    return events[starts[-1] + 1:]


@pytest.mark.timeout(60)
def test_empty_nats_url_fails_verbs_but_not_the_daemon(ppz_server: ServerProcess, home_factory: Any,
                                                      proxy: RecordingProxy) -> None:
    h = home_factory("h")
    logged_in(ppz_server, h, proxy)
    proxy.rewrite[ROUTE] = lambda body: {**body, "nats_url": ""}
    restart(h, proxy)
    wait_for(lambda: exchanges(proxy) >= 1, timeout=10, what="the cold exchange")
    for verb, params in (("Send", {"handle": "bob", "channel": "inbox", "payload": "x"}),
                         ("List", {})):
        with pytest.raises(errors.PpzError) as info:
            h.call(verb, params)
        assert info.value.code == "E_NATS_UNREACHABLE"
    assert h.status()["logged_in"] is True
    assert "nats_url" not in h.home.credentials.read_text()
    # PPZ_NATS_URL overrides the reply's (empty) nats_url.
    h.ppz("daemon", "stop")
    h.env["PPZ_NATS_URL"] = ppz_server.nats_url
    h.ppz("daemon", "start")
    h.wait_connected()
    assert h.call("Send", {"handle": "bob", "channel": "inbox", "payload": "y"})["bytes"] == 1


@pytest.mark.timeout(90)
def test_login_whose_dial_fails_still_succeeds_and_connects_later(ppz_server: ServerProcess, ppz_home: DaemonHome,
                                                                 proxy: RecordingProxy) -> None:
    h = ppz_home
    key = ppz_server.add_key("acme")
    h.login(proxy.url, key)
    first = h.wait_connected()
    host, nats_port = ppz_server.nats_addr.split(":")
    forwarder = TcpForwarder(0, (host, int(nats_port)))  # its port is held, refusing dials until start()
    port = forwarder.port
    proxy.rewrite[ROUTE] = lambda body: {**body, "nats_url": f"nats://127.0.0.1:{port}"}
    try:
        out = h.ppz("login", proxy.url, "--apikey", key)
        assert out.returncode == 0, out.stderr  # the exchange worked; the dial did not
        status = h.status()
        assert status["logged_in"] is True and "nats_state" not in status  # the old one was swapped out
        swaps = [e for e in h.events() if e["type"] == "swap"]
        assert swaps[-1]["caller"] == "handleLogin" and swaps[-1]["reason"].endswith("new=-")
        forwarder.start()
        # No command: the background connect loop dials again (2 s, 4 s, … backoff).
        h.wait_connected(timeout=30)
        assert h.status()["account_id"] == first["account_id"]
    finally:
        forwarder.stop()
