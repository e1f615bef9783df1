"""The daemon's NATS connection seen from the wire (spec/daemon.md §5.2, §5.4, §5.5; ipc.md §7.15;
behaviours 38 and 60).

The daemon dials its ``nats-server`` through :class:`tcpproxy.TcpForwarder` (``PPZ_NATS_URL``),
which can cut the connection or tell the client an error, and shows the NATS protocol the daemon
speaks: the ``SUB``/``UNSUB`` of a ListWatch and the messages delivered to it.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from daemonfixture import DaemonHome, wait_for
from serverfixture import ServerProcess
from sharedserver import fresh_world, module_server  # noqa: F401 - module_server is a fixture
from tcpproxy import TcpForwarder, delivered, subscriptions, unsubscribed

from ppz import ipc


@pytest.fixture
def fwd(module_server: ServerProcess) -> Iterator[TcpForwarder]:  # noqa: F811
    host, port = module_server.nats_addr.split(":")
    forwarder = TcpForwarder(0, (host, int(port)))
    forwarder.start()
    yield forwarder
    forwarder.stop()


@pytest.fixture
def world(module_server: ServerProcess, home_factory: Callable[..., DaemonHome],  # noqa: F811
          fwd: TcpForwarder) -> dict[str, Any]:
    h = home_factory("home", PPZ_NATS_URL=f"nats://127.0.0.1:{fwd.port}")
    world = fresh_world(module_server, h, ("bob",))
    assert fwd.connections() == 1
    return world


def events_after(h: DaemonHome, count: int) -> list[tuple[str, str, str, str]]:
    """(type, caller, nc_id, reason) of the events after the first ``count``, from the file."""
    return [(e["type"], e.get("caller", ""), e.get("nc_id", ""), e.get("reason", ""))
            for e in h.events()[count:]]


def installed_id(h: DaemonHome) -> str:
    return [e for e in h.events() if e["type"] == "swap"][-1]["nc_id"]


def send_and_read(h: DaemonHome, payload: str) -> list[str]:
    h.call("Send", {"handle": "bob", "channel": "inbox", "payload": payload, "session": "s"})
    events = ipc.stream("Read", {"handle": "bob", "channel": "inbox", "session": "s"}, path=str(h.home.socket))
    return [e["msg"]["payload"] for e in events if "msg" in e]


# --- behaviour 38: a dead connection is replaced with no command ---------------------------------------------


@pytest.mark.timeout(60)
def test_a_cut_tcp_connection_comes_back_without_a_command(world: dict[str, Any], fwd: TcpForwarder) -> None:
    h = world["home"]
    nc = installed_id(h)
    before = len(h.events())
    assert fwd.cut() == 1
    # Only the events file is read meanwhile: no IPC command reaches the daemon.
    wait_for(lambda: ("reconnect", "nats-client", nc) in [e[:3] for e in events_after(h, before)],
             timeout=20, what="the client's own reconnect")
    assert [e[0] for e in events_after(h, before)] == ["disconnect", "reconnect"]  # same client, no swap
    assert fwd.connections() == 1
    assert send_and_read(h, "after the cut") == ["after the cut"]


@pytest.mark.timeout(60)
def test_a_connection_closed_underneath_is_replaced_without_a_command(world: dict[str, Any],
                                                                       fwd: TcpForwarder) -> None:
    h = world["home"]
    old = installed_id(h)
    before = len(h.events())
    # Any -ERR but a stale connection makes nats-py close the client for good (no reconnect).
    assert fwd.tell(b"-ERR 'closed by the test'\r\n") == 1
    wait_for(lambda: any(e[0] == "reconnect" and e[3] == "rebuilt connection" for e in events_after(h, before)),
             timeout=20, what="a rebuilt connection")
    new = installed_id(h)
    assert new != old
    after = events_after(h, before)
    assert ("closed", "nats-client", old) in [e[:3] for e in after]
    assert [e for e in after if e[0] == "swap"] == [("swap", "ensureNATS", new, f"old={old} new={new}")]
    assert fwd.connections() == 1
    assert send_and_read(h, "on the new connection") == ["on the new connection"]


@pytest.mark.timeout(60)
def test_the_closed_of_a_routinely_swapped_connection_causes_no_further_swap(world: dict[str, Any],
                                                                             fwd: TcpForwarder) -> None:
    h = world["home"]
    old = installed_id(h)
    before = len(h.events())
    h.login(world["server"].url, world["key"])  # a healthy connection replaced by another
    new = installed_id(h)
    assert new != old
    wait_for(lambda: ("closed", "nats-client", old) in [e[:3] for e in events_after(h, before)],
             timeout=10, what="the old connection's closed")
    # That closed kicked the connect loop; its ensure-NATS finds the new connection healthy.
    # Nothing can signal "nothing happened": give the loop a moment, then count.
    time.sleep(1.0)
    swaps = [e for e in events_after(h, before) if e[0] == "swap"]
    assert swaps == [("swap", "handleLogin", new, f"old={old} new={new}")]
    assert not [e for e in events_after(h, before) if e[0] in ("connect", "reconnect")]
    assert send_and_read(h, "still fine") == ["still fine"]


# --- behaviour 60: what wakes a ListWatch, and a client hang-up ----------------------------------------------


def open_watch(h: DaemonHome, params: dict[str, Any]) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(h.home.socket))
    conn.sendall(json.dumps({"method": "ListWatch", "params": params}).encode() + b"\n")
    return conn


def watch_sid(fwd: TcpForwarder, acct: str, known: int) -> str:
    """The sid of the ``known + 1``-th subscription on ``<acct>.>``, once the daemon sent it."""
    sids = wait_for(lambda: (s := subscriptions(fwd.to_server(), f"{acct}.>")) and len(s) > known and s,
                    timeout=10, what="the watch's SUB")
    return str(sids[known])


@pytest.mark.timeout(60)
def test_a_client_that_hangs_up_unregisters_its_watch(world: dict[str, Any], fwd: TcpForwarder) -> None:
    h, acct = world["home"], world["acct"]
    known = len(subscriptions(fwd.to_server(), f"{acct}.>"))
    conn = open_watch(h, {"session": "s", "patterns": ["bob.inbox"]})
    sid = watch_sid(fwd, acct, known)
    assert not unsubscribed(fwd.to_server(), sid)
    conn.close()
    wait_for(lambda: unsubscribed(fwd.to_server(), sid), timeout=10, what=f"UNSUB {sid}")
    # The daemon still answers and still delivers.
    assert send_and_read(h, "after the hang-up") == ["after the hang-up"]


@pytest.mark.timeout(60)
def test_presence_traffic_never_wakes_a_watch(world: dict[str, Any], fwd: TcpForwarder) -> None:
    h, acct = world["home"], world["acct"]
    world["client"].create_source(world["creds"], "agent", "pty", "")
    known = len(subscriptions(fwd.to_server(), f"{acct}.>"))
    result: dict[str, Any] = {}
    done = threading.Event()

    def watch() -> None:
        # No patterns: any snapshot taken after the beat would see the heartbeat pipe unread.
        result["reply"] = ipc.call_wait("ListWatch", {"session": "s"}, path=str(h.home.socket))
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    sid = watch_sid(fwd, acct, known)
    h.call("Send", {"handle": "agent", "channel": "heartbeat", "payload": "{}", "session": "s"})
    presence = f"{acct}._presence.agent"
    wait_for(lambda: delivered(fwd.to_client(), presence, sid), timeout=10, what="the beat at the watch")
    # The beat reached the watch's subscription; had it woken the watch, its snapshot (heartbeat
    # unread) would be the reply within moments.
    assert not done.wait(1.5), result
    h.call("Send", {"handle": "bob", "channel": "inbox", "payload": "wake", "session": "s"})
    assert done.wait(10)
    rows = {(s["handle"], i["pipe"]): i["unread"] for s in result["reply"]["sources"] for i in s["pipe_infos"]}
    assert rows[("agent", "heartbeat")] == 1 and rows[("bob", "inbox")] == 1
