"""Read, follow, receipts, priority and List previews end to end (spec/ipc.md §7.13, §7.14;
nats.md §6, §9; behaviours 43, 51, 59, 65, 66).

One ppz-server serves the module; every test logs a fresh home into an account of its own.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from daemonfixture import DaemonHome, wait_for
from serverfixture import ServerProcess, nats_request
from sharedserver import fresh_world, module_server  # noqa: F401 - module_server is a fixture

from ppz import ipc, names
from ppz.serverclient import PipeSpec

_tests = itertools.count(1)


@pytest.fixture(scope="module")
def shared(module_server: ServerProcess,  # noqa: F811
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One daemon and account for the module (a daemon start and login cost seconds)."""
    h = DaemonHome(tmp_path_factory.mktemp("read") / "home")
    try:
        yield fresh_world(module_server, h, ())
    finally:
        h.kill()


@pytest.fixture
def world(shared: dict[str, Any]) -> dict[str, Any]:
    """The shared world with sources of this test's own: ``bob``, ``alice`` (message) and the
    names ``agent`` and ``room``, each with a suffix no other test uses."""
    n = next(_tests)
    handles = {name: f"{name}-{n}" for name in ("bob", "alice", "agent", "room")}
    for name in ("bob", "alice"):
        shared["client"].create_source(shared["creds"], handles[name], "message", "")
    return {**shared, **handles}


def send(h: DaemonHome, handle: str, pipe: str, payload: str, **extra: Any) -> dict[str, Any]:
    return h.call("Send", {"handle": handle, "channel": pipe, "payload": payload, "session": "sender", **extra})


def read(h: DaemonHome, handle: str, pipe: str = "inbox", session: str = "reader",
         **extra: Any) -> list[dict[str, Any]]:
    params = {"handle": handle, "channel": pipe, "session": session, **extra}
    return [e["msg"] for e in ipc.stream("Read", params, path=str(h.home.socket)) if "msg" in e]


def payloads(msgs: list[dict[str, Any]]) -> list[str]:
    return [m["payload"] for m in msgs]


def cursor_seq(h: DaemonHome, session: str, key: str) -> int | None:
    path = h.root / "cursors" / f"{session}.json"
    if not path.exists():
        return None
    entry = json.loads(path.read_text()).get(key)
    return None if entry is None else int(entry["seq"] if isinstance(entry, dict) else entry)


class Follow:
    """A ``Read`` with ``follow`` on a thread; ``msgs`` grows as messages arrive."""

    def __init__(self, h: DaemonHome, params: dict[str, Any]) -> None:
        self.msgs: list[dict[str, Any]] = []
        self._params = {**params, "follow": True}
        self._h = h
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for ev in ipc.stream("Read", self._params, path=str(self._h.home.socket)):
                if "msg" in ev:
                    self.msgs.append(ev["msg"])
        except Exception:  # noqa: BLE001 - ended when the test's daemon is stopped
            pass

    def wait(self, n: int) -> list[dict[str, Any]]:
        wait_for(lambda: len(self.msgs) >= n, timeout=10, what=f"{n} followed message(s)")
        return self.msgs


# --- behaviour 51: seed_latest and a cursor that covers the stream ------------------------------------------


def test_seed_latest_without_a_cursor_skips_the_backlog_yet_delivers_what_follows(world: dict[str, Any]) -> None:
    h, acct = world["home"], world["acct"]
    bob = world["bob"]
    key = names.cursor_key(acct, "", bob, "inbox")
    for i in range(3):
        send(h, bob, "inbox", f"old{i}")
    assert read(h, bob, session="seeded", seed_latest=True) == []
    assert cursor_seq(h, "seeded", key) == 3  # the seed is persisted
    send(h, bob, "inbox", "new")
    assert payloads(read(h, bob, session="seeded", seed_latest=True)) == ["new"]
    # With a cursor entry, seed_latest changes nothing: unread stays unread.
    assert payloads(read(h, bob, session="partial", head_limit=1)) == ["old0"]
    assert payloads(read(h, bob, session="partial", seed_latest=True)) == ["old1", "old2", "new"]


def test_a_first_follow_with_seed_latest_has_no_backlog_but_gets_new_messages(world: dict[str, Any]) -> None:
    h, acct = world["home"], world["acct"]
    bob = world["bob"]
    key = names.cursor_key(acct, "", bob, "inbox")
    for i in range(3):
        send(h, bob, "inbox", f"old{i}")
    f = Follow(h, {"handle": bob, "channel": "inbox", "session": "tail", "seed_latest": True})
    wait_for(lambda: cursor_seq(h, "tail", key) == 3, timeout=10, what="the seeded cursor")
    send(h, bob, "inbox", "new")
    assert payloads(f.wait(1)) == ["new"]
    wait_for(lambda: cursor_seq(h, "tail", key) == 4, timeout=10, what="the follow to advance the cursor")
    assert payloads(f.msgs) == ["new"]


# --- behaviour 65: receipts ------------------------------------------------------------------------------------


def receipts(h: DaemonHome, alice: str) -> list[dict[str, Any]]:
    return [m for m in read(h, alice, session="alice-inbox", no_advance=True) if m["subject"] == "ack:read"]


@pytest.mark.timeout(60)
def test_a_failed_receipt_does_not_stop_the_next_nor_hold_the_cursor(world: dict[str, Any]) -> None:
    h = world["home"]
    bob, alice = world["bob"], world["alice"]
    # The first receipt goes to ghost.inbox, which has no stream: it fails, after the 5 s PubAck wait.
    send(h, bob, "inbox", "from a ghost", sender="ghost", ack_requested=True)
    second = send(h, bob, "inbox", "from alice", sender=alice, ack_requested=True)
    assert payloads(read(h, bob, sender=bob)) == ["from a ghost", "from alice"]
    # The read advanced the cursor while the receipts were still on their way (in order: the
    # ghost's first, so alice's cannot be there yet).
    assert read(h, bob) == []
    assert receipts(h, alice) == []
    got = wait_for(lambda: receipts(h, alice), timeout=20, what="alice's receipt")
    assert [(r["in_reply_to"], r["sender"]) for r in got] == [(second["id"], bob)]


def test_a_follow_sends_one_receipt_per_delivered_message(world: dict[str, Any]) -> None:
    h = world["home"]
    bob, alice = world["bob"], world["alice"]
    f = Follow(h, {"handle": bob, "channel": "inbox", "session": "tail", "sender": bob})
    first = send(h, bob, "inbox", "probe", sender=alice)  # no receipt asked for
    f.wait(1)
    sent = [send(h, bob, "inbox", f"m{i}", sender=alice, ack_requested=True)["id"] for i in range(2)]
    f.wait(3)
    got = wait_for(lambda: (r := receipts(h, alice)) and len(r) >= 2 and r, timeout=10, what="two receipts")
    assert [r["in_reply_to"] for r in got] == sent
    assert first["id"] not in [r["in_reply_to"] for r in got]


# --- behaviour 66: priority sort only for a drain of inbox, broadcast or uncollared ---------------------------


PRIORITIES = [3, 0, 1, 2, 1]
SORTED = ["p1", "p1b", "p0", "p2", "p3"]
UNSORTED = ["p3", "p0", "p1", "p2", "p1b"]


def send_priorities(h: DaemonHome, **target: Any) -> None:
    for priority, payload in zip(PRIORITIES, UNSORTED, strict=True):
        h.call("Send", {**target, "payload": payload, "priority": priority, "session": "sender"})


def test_priority_sort_never_reorders_other_pipes(world: dict[str, Any]) -> None:
    h, client, creds = world["home"], world["client"], world["creds"]
    bob, agent, room = world["bob"], world["agent"], world["room"]
    client.create_pipe(creds, bob, PipeSpec(name="notes"))
    client.create_pipe(creds, bob, PipeSpec(name="broadcast"))
    client.create_source(creds, agent, "pty", "")
    client.create_uncollared(creds, PipeSpec(name=room))
    for handle, pipe in ((bob, "notes"), (bob, "broadcast"), (agent, "stdout"), (agent, "stdin"),
                         (agent, "stdctrl")):
        send_priorities(h, handle=handle, channel=pipe)
    send_priorities(h, bare_target=room)
    for pipe in ("notes",):
        assert payloads(read(h, bob, pipe)) == UNSORTED, pipe
    for pipe in ("stdout", "stdin", "stdctrl"):
        assert payloads(read(h, agent, pipe)) == UNSORTED, pipe
    assert payloads(read(h, bob, "broadcast")) == SORTED
    uncollared = [e["msg"] for e in ipc.stream("Read", {"bare_target": room, "session": "reader"},
                                                path=str(h.home.socket)) if "msg" in e]
    assert payloads(uncollared) == SORTED


def test_a_follow_is_never_reordered(world: dict[str, Any]) -> None:
    h = world["home"]
    bob = world["bob"]
    send_priorities(h, handle=bob, channel="inbox")
    # The follow's own drain of the backlog keeps arrival order, and so do live messages.
    f = Follow(h, {"handle": bob, "channel": "inbox", "session": "tail"})
    assert payloads(f.wait(5)) == UNSORTED
    send_priorities(h, handle=bob, channel="inbox")
    assert payloads(f.wait(10)) == UNSORTED * 2
    # The same messages drained without follow come sorted (the control).
    assert payloads(read(h, bob, session="drain")) == ["p1", "p1b", "p1", "p1b", "p0", "p2", "p0", "p2", "p3", "p3"]


# --- behaviour 59: List previews and retention --------------------------------------------------------------


def test_list_preview_is_cut_at_60_characters_and_payload_is_whole(world: dict[str, Any]) -> None:
    h, client, creds = world["home"], world["client"], world["creds"]
    bob = world["bob"]
    client.create_pipe(creds, bob, PipeSpec(name="notes", ttl_seconds=86400, max_msgs=-1, max_bytes=-1))
    payload = "line one\nline\ttwo \x1b[1mbold\x1b[0m \x07" + "x" * 100
    send(h, bob, "notes", payload)
    listing = h.call("List", {"session": "lister", "patterns": [f"{bob}.notes"], "long": True})
    info = listing["sources"][0]["pipe_infos"][0]
    want = ("line one line two bold " + "x" * 100)[:60]
    assert (info["preview"], info["payload"]) == (want, payload)
    assert len(info["preview"]) == 60
    assert (info["ttl_seconds"], info["max_msgs"], info["max_bytes"]) == (86400, -1, -1)
    plain = h.call("List", {"session": "lister", "patterns": [f"{bob}.notes"]})["sources"][0]["pipe_infos"][0]
    assert "ttl_seconds" not in plain and "max_msgs" not in plain


# --- behaviour 43: the stored Nats-Msg-Id is the envelope id ------------------------------------------------


def stored_msg_id(world: dict[str, Any], stream: str, seq: int) -> str:
    reply = world["client"].exchange(world["server"].url, world["key"])
    got = nats_request([world["server"].nats_url], reply.nats_user_jwt, reply.nats_user_seed,
                       f"$JS.API.STREAM.MSG.GET.{stream}", {"seq": seq})
    headers = base64.b64decode(got["message"]["hdrs"]).decode()
    return next(line.split(":", 1)[1].strip() for line in headers.split("\r\n")
                if line.lower().startswith("nats-msg-id:"))


def test_every_publish_carries_the_envelope_id_as_nats_msg_id(world: dict[str, Any]) -> None:
    h, acct = world["home"], world["acct"]
    bob = world["bob"]
    one = send(h, bob, "inbox", "single")
    batch = h.call("SendBatch", {"handle": bob, "channel": "inbox", "payloads": ["a", "b", "c"]})
    stream = names.stream_name(acct, "", bob, "inbox")
    assert [stored_msg_id(world, stream, seq) for seq in (1, 2, 3, 4)] == [one["id"], *batch["ids"]]
    assert [m["id"] for m in read(h, bob)] == [one["id"], *batch["ids"]]
