"""Messaging end to end through the daemon's IPC verbs (spec/ipc.md §7.10–7.15, nats.md §6–9)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from daemonfixture import DaemonHome, setup_world, wait_for
from serverfixture import ServerProcess

from ppz import errors, ipc


@pytest.fixture
def world(ppz_server: ServerProcess, ppz_home: DaemonHome) -> Iterator[dict[str, Any]]:
    yield setup_world(ppz_server, ppz_home)


def send(h: DaemonHome, target: str, payload: str, session: str = "alice-s", **extra: Any) -> dict[str, Any]:
    handle, _, pipe = target.partition(".")
    params = {"handle": handle, "channel": pipe or "inbox", "payload": payload, "session": session, **extra}
    if not pipe:
        params["bare_target"] = handle
    return h.call("Send", params)


def read(h: DaemonHome, handle: str, pipe: str = "inbox", session: str = "bob-s", **extra: Any) -> list[dict[str, Any]]:
    params = {"handle": handle, "channel": pipe, "session": session, **extra}
    return list(ipc.stream("Read", params, path=str(h.home.socket)))


def payloads(events: list[dict[str, Any]]) -> list[str]:
    return [e["msg"]["payload"] for e in events if "msg" in e]


def test_two_sessions_talk(world: dict[str, Any]) -> None:
    h = world["home"]
    reply = send(h, "bob", "hi bob", sender="alice")
    assert reply["subject"] == f"{world['acct']}.bob.inbox" and reply["bytes"] == 6
    events = read(h, "bob")
    assert payloads(events) == ["hi bob"]
    msg = events[0]["msg"]
    assert msg["sender"] == "alice" and msg["id"] == reply["id"]
    assert set(msg) == {"id", "sender", "subject", "payload", "created_at", "in_reply_to", "ack_requested",
                        "priority"}
    assert msg["created_at"].endswith("Z") and len(msg["created_at"]) == 20
    assert read(h, "bob") == []  # read once, never again
    assert payloads(read(h, "bob", session="other")) == ["hi bob"]  # another session: still unread
    assert payloads(read(h, "bob", all=True)) == ["hi bob"]  # reread never moves cursors
    assert read(h, "bob") == []


def test_request_ack_and_receipt(world: dict[str, Any]) -> None:
    h = world["home"]
    sent = send(h, "bob", "please ack", sender="alice", ack_requested=True, msg_subject="user:ack:read",
                priority=1)
    read(h, "bob", sender="bob")
    receipts = wait_for(lambda: payloads_full(read(h, "alice", session="alice-s2", no_advance=True)),
                        timeout=5, what="receipt")
    assert len(receipts) == 1
    r = receipts[0]
    assert (r["subject"], r["payload"], r["in_reply_to"], r["ack_requested"], r["priority"], r["sender"]) == (
        "ack:read", "", sent["id"], False, 0, "bob")
    # reread and no_advance never send receipts
    read(h, "bob", session="x", all=True)
    read(h, "bob", session="y", no_advance=True)
    time.sleep(0.5)
    assert len(payloads_full(read(h, "alice", session="alice-s3"))) == 1


def payloads_full(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["msg"] for e in events if "msg" in e]


def test_in_reply_to_and_priority_order(world: dict[str, Any]) -> None:
    h = world["home"]
    send(h, "bob", "low", priority=3)
    send(h, "bob", "unset")
    first = send(h, "bob", "high", priority=1)
    send(h, "bob", "medium", priority=2)
    send(h, "bob", "reply", in_reply_to=first["id"])
    msgs = payloads_full(read(h, "bob"))
    assert [m["payload"] for m in msgs] == ["high", "unset", "medium", "reply", "low"]
    assert msgs[3]["in_reply_to"] == first["id"]


def test_envelope_size_limit(world: dict[str, Any]) -> None:
    h = world["home"]
    # Find the payload length whose envelope is exactly 65 536 bytes.
    probe = send(h, "bob", "x")
    env = json.dumps({"id": probe["id"], "sender": "", "subject": "", "payload": "", "created_at":
                      "2026-01-01T00:00:00.000000Z", "in_reply_to": "", "ack_requested": False, "priority": 0},
                     separators=(",", ":"))
    fits = 65536 - len(env.encode())
    send(h, "bob", "y" * fits)
    with pytest.raises(errors.PpzError) as info:
        send(h, "bob", "y" * (fits + 1))
    assert info.value.code == "E_PAYLOAD_TOO_LARGE"
    with pytest.raises(errors.PpzError) as info:
        h.call("SendBatch", {"handle": "bob", "channel": "inbox", "payloads": ["ok", "y" * (fits + 1)]})
    assert info.value.code == "E_PAYLOAD_TOO_LARGE"
    assert payloads(read(h, "bob")) == ["x", "y" * fits]


def test_send_errors(world: dict[str, Any]) -> None:
    h = world["home"]
    cases = [
        ({"handle": "bob", "priority": 4}, "E_INVALID_PRIORITY"),
        ({"handle": "bob", "msg_subject": "ack:x"}, "E_INVALID_SUBJECT"),
        ({"handle": "", "session": "nobody"}, "E_NO_CURRENT_SOURCE"),
        ({"handle": "carol"}, "E_SOURCE_NOT_FOUND"),
        ({"handle": "bob", "channel": "notes"}, "E_PIPE_NOT_FOUND"),
        ({"handle": "bob", "channel": "Bad_Pipe"}, "E_INVALID_PIPE"),
    ]
    for params, code in cases:
        with pytest.raises(errors.PpzError) as info:
            h.call("Send", {"payload": "x", **params})
        assert info.value.code == code, params
    with pytest.raises(errors.PpzError) as info:
        h.call("Send", {"handle": "carol", "bare_target": "carol", "payload": "x"})
    assert info.value.message == "source 'carol' not found"
    with pytest.raises(errors.PpzError) as info:
        h.call("Send", {"handle": "bob", "channel": "notes", "payload": "x"})
    assert info.value.message == "pipe 'notes' not found on source 'bob'"


def test_send_batch(world: dict[str, Any]) -> None:
    h = world["home"]
    assert h.call("SendBatch", {"payloads": []}) == {"ids": [], "subject": "", "bytes": []}
    reply = h.call("SendBatch", {"handle": "bob", "channel": "inbox", "payloads": ["a", "bé", "c"]})
    assert len(reply["ids"]) == 3 and reply["bytes"] == [1, 3, 1]
    assert payloads(read(h, "bob")) == ["a", "bé", "c"]


def test_head_limit_and_more_unread(world: dict[str, Any]) -> None:
    h = world["home"]
    h.call("SendBatch", {"handle": "bob", "channel": "inbox", "payloads": [str(i) for i in range(25)]})
    events = read(h, "bob", head_limit=10)
    assert payloads(events) == [str(i) for i in range(10)]
    assert events[-1] == {"more_unread": 15}
    assert payloads(read(h, "bob", head_limit=10)) == [str(i) for i in range(10, 20)]
    events = read(h, "bob", all=True, skip=2, limit=3)
    assert payloads(events) == ["22", "23", "24"]


def test_cursors_survive_restart_and_recreated_source(world: dict[str, Any]) -> None:
    h = world["home"]
    for i in range(3):
        send(h, "bob", f"m{i}")
    assert len(read(h, "bob")) == 3
    out = h.ppz("daemon", "restart")
    assert out.returncode == 0, out.stderr
    h.wait_connected()
    assert read(h, "bob") == []
    send(h, "bob", "m3")
    assert payloads(read(h, "bob")) == ["m3"]
    # destroy and recreate: the cursor counts as 0 again
    client, creds = world["client"], world["creds"]
    client.delete_source(creds, "bob")
    client.create_source(creds, "bob", "message", "")
    send(h, "bob", "fresh")
    assert payloads(read(h, "bob")) == ["fresh"]


def test_uncollared_pipe_and_bare_target(world: dict[str, Any]) -> None:
    h = world["home"]
    from ppz.serverclient import PipeSpec

    world["client"].create_uncollared(world["creds"], PipeSpec(name="room"))
    reply = send(h, "room", "to the room")
    assert reply["subject"] == f"{world['acct']}.room"
    events = list(ipc.stream("Read", {"bare_target": "room", "session": "s"}, path=str(h.home.socket)))
    assert payloads(events) == ["to the room"]
    with pytest.raises(errors.PpzError) as info:
        list(ipc.stream("Read", {"bare_target": "nothere", "session": "s"}, path=str(h.home.socket)))
    assert info.value.message == "uncollared pipe 'nothere' not found at root"
    assert send(h, "bob", "dotless to a source")["subject"] == f"{world['acct']}.bob.inbox"


def test_empty_session_is_default(world: dict[str, Any]) -> None:
    h = world["home"]
    send(h, "bob", "x")
    assert payloads(read(h, "bob", session="")) == ["x"]
    listing = h.call("List", {})
    bob = next(s for s in listing["sources"] if s["handle"] == "bob")
    assert bob["pipe_infos"][0]["unread"] == 0
    assert read(h, "bob", session="default") == []


def test_list_and_watch(world: dict[str, Any]) -> None:
    h = world["home"]
    send(h, "bob", "hello\tthere\x1b[31m red")
    listing = h.call("List", {"session": "bob-s", "patterns": ["bob.*"]})
    assert [s["handle"] for s in listing["sources"]] == ["bob"]
    info = listing["sources"][0]["pipe_infos"][0]
    assert (info["total"], info["unread"], info["preview"]) == (1, 1, "hello there red")
    assert listing["uncollared_pipes"] == []
    # Watch returns at once while something matching is unread ...
    assert h.call("ListWatch", {"session": "bob-s", "patterns": ["bob.inbox"]})["sources"]
    read(h, "bob")
    # ... and otherwise blocks until a matching message arrives.
    result: dict[str, Any] = {}

    def watch() -> None:
        result["reply"] = ipc.call_wait("ListWatch", {"session": "bob-s", "patterns": ["bob.inbox"]},
                                        path=str(h.home.socket))

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    time.sleep(0.5)
    send(h, "alice", "not for bob")
    time.sleep(0.5)
    assert "reply" not in result
    send(h, "bob", "for bob")
    t.join(5)
    assert result["reply"]["sources"][0]["pipe_infos"][0]["unread"] == 1


def test_logout_answers_a_waiting_watch(world: dict[str, Any]) -> None:
    h = world["home"]
    result: dict[str, Any] = {}

    def watch() -> None:
        try:
            ipc.call_wait("ListWatch", {"session": "bob-s", "patterns": ["bob.inbox"]}, path=str(h.home.socket))
        except errors.PpzError as exc:
            result["error"] = exc

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    time.sleep(0.5)
    h.call("Logout", {})
    t.join(5)
    assert result["error"].code == "E_NOT_LOGGED_IN"


def test_follow_streams_live_messages(world: dict[str, Any]) -> None:
    h = world["home"]
    send(h, "bob", "old")
    read(h, "bob")
    got: list[str] = []
    ended = threading.Event()

    def follow() -> None:
        for ev in ipc.stream("Read", {"handle": "bob", "channel": "inbox", "session": "bob-s", "follow": True},
                             path=str(h.home.socket)):
            if "msg" in ev:
                got.append(ev["msg"]["payload"])
        ended.set()

    threading.Thread(target=follow, daemon=True).start()
    time.sleep(0.3)
    for i in range(5):
        send(h, "bob", f"live{i}")
    wait_for(lambda: len(got) == 5, timeout=5, what="live messages")
    assert got == [f"live{i}" for i in range(5)]
    assert read(h, "bob") == []  # the follow advanced the cursor
    assert not ended.is_set()


def follow_with_redial(h: DaemonHome, session: str, got: list[tuple[int, str]], stop: threading.Event,
                       ends: list[float]) -> None:
    """What ``ppz read --tail`` does: follow, and redial after a non-error end of stream."""
    while not stop.is_set():
        try:
            for ev in ipc.stream("Read", {"handle": "bob", "channel": "inbox", "session": session, "follow": True},
                                 path=str(h.home.socket)):
                if "msg" in ev:
                    got.append((int(ev["msg"]["payload"]), ev["msg"]["id"]))
                if stop.is_set():
                    return
        except errors.PpzError:
            pass
        ends.append(time.time())
        time.sleep(0.2)


@pytest.mark.timeout(300)
def test_follow_through_rotations(server_factory: Any, ppz_home: DaemonHome) -> None:
    world = setup_world(server_factory(PPZ_NATS_JWT_TTL="6s"), ppz_home)
    h = ppz_home
    got: list[tuple[int, str]] = []
    stop = threading.Event()
    ends: list[float] = []
    t = threading.Thread(target=follow_with_redial, args=(h, "follower", got, stop, ends), daemon=True)
    t.start()
    time.sleep(0.5)
    sent = []
    for i in range(300):
        sent.append(send(h, "bob", str(i))["id"])
        time.sleep(0.1)
    wait_for(lambda: len(got) >= 300, timeout=10, what="all messages")
    stop.set()
    assert [n for n, _ in got] == list(range(300))
    assert ends == []  # the follow connection was never closed
    kinds = [e["type"] for e in h.events()]
    assert kinds.count("rotate") >= 5
    assert "swap" not in kinds[kinds.index("connect") + 1:]
    del world


@pytest.mark.timeout(120)
def test_follow_through_nats_restart(world: dict[str, Any]) -> None:
    h, server = world["home"], world["server"]
    got: list[tuple[int, str]] = []
    stop = threading.Event()
    ends: list[float] = []
    threading.Thread(target=follow_with_redial, args=(h, "follower", got, stop, ends), daemon=True).start()
    time.sleep(0.5)
    acked: list[int] = []
    failed: list[str] = []
    killed = False
    for i in range(120):
        if i == 30:
            old = server.kill_nats()
            killed = True
        try:
            send(h, "bob", str(i))
            acked.append(i)
        except errors.PpzError as exc:
            failed.append(exc.code)
        if killed and i == 31:
            server.wait_nats_restarted(old)
        time.sleep(0.05)
    wait_for(lambda: set(acked) <= {n for n, _ in got}, timeout=20, what="every acknowledged message")
    stop.set()
    numbers = [n for n, _ in got]
    assert len(numbers) == len(set(numbers)), "a message was delivered twice"
    assert numbers == sorted(numbers)
    assert set(failed) <= {"E_NATS_UNREACHABLE", "E_DELIVERY_UNCONFIRMED"}
    assert len(acked) > 60
