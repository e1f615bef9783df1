"""Messaging handlers in process, against a real ``nats-server`` (spec/ipc.md §7.10–7.15;
behaviours 50, 59, 60, 70).

The handlers run as the daemon runs them — on the test's thread, their JetStream coroutines on
a loop thread holding a real client — with a :class:`System` whose actors are mocks: the state
actor answers the session, the server lists the sources, and ``heartbeats`` records what was
stamped. That is how a publish can be slipped in while a drain runs, a fetch made to fail mid
drain, and the local heartbeat stamp told apart from the presence subscription (which a daemon
would also stamp from). Pure helpers (previews, retention fields, ListWatch wake matching) are
tested directly.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from unittest.mock import Mock

import nats
import pytest
from actors.natsserver import NatsServer
from jsfaults import fail_fetch
from sharedserver import module_nats  # noqa: F401 - a fixture
from sourcesflight import serve_sources_flights

from ppz import errors, names, verbs
from ppz import jetstream as js
from ppz.actors.cursors import CursorsActor
from ppz.actors.nats import ConnView
from ppz.actors.state import SessionView, StateView, note_stream_news
from ppz.aioloop import LoopThread
from ppz.envelope import new_envelope
from ppz.handlers import listing, read, send
from ppz.home import Credentials, CursorStore, Home
from ppz.messages import Beat, RefreshView
from ppz.published import Published
from ppz.serverclient import SourceInfo
from ppz.system import System

EXP = 4_000_000_000  # far away: ensure-NATS finds the connection fresh


@pytest.fixture(name="server")
def server_fixture(module_nats: NatsServer) -> NatsServer:  # noqa: F811
    return module_nats


@dataclass
class Rig:
    sys: System
    acct: str
    view: ConnView
    loop: LoopThread

    def run(self, coro: Any) -> Any:
        return self.loop.run(coro, 30)

    def stream(self, handle: str, pipe: str) -> tuple[str, str]:
        return names.stream_name(self.acct, "", handle, pipe), names.subject(self.acct, "", handle, pipe)

    def create(self, handle: str, pipe: str) -> None:
        stream, subject = self.stream(handle, pipe)
        self.run(js.api_request(self.view.client, f"$JS.API.STREAM.CREATE.{stream}",
                                {"name": stream, "subjects": [subject], "storage": "memory"}))

    def publish(self, handle: str, pipe: str, payload: str, priority: int = 0) -> int:
        _, subject = self.stream(handle, pipe)
        env = new_envelope(sender="alice", payload=payload, priority=priority)
        return int(self.run(js.publish(self.view.client, subject, env.encode(), env.id)))

    def read(self, **params: Any) -> list[dict[str, Any]]:
        """One Read (not following); every line it wrote before returning."""
        p = verbs.check_params("Read", {"session": "s", **params})
        conn, peer = socket.socketpair()
        with conn, peer:
            read.read(self.sys, p, conn)
            conn.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := peer.recv(65536):
                data += chunk
        return [json.loads(line) for line in data.splitlines()]

    def cursor(self, handle: str, pipe: str, session: str = "s") -> int | None:
        entry = CursorStore(self.sys.home).get(session, names.cursor_key(self.acct, "", handle, pipe))
        return None if entry is None else entry.seq

    def beats(self) -> list[Beat]:
        told = [c.args[0] for c in self.sys.heartbeats.actor_ref.tell.call_args_list]
        return [b for b in told if isinstance(b, Beat)]


@pytest.fixture
def rig(server: NatsServer, tmp_path: Path) -> Iterator[Rig]:
    acct = str(uuid.uuid4())  # streams of one test never meet another's
    loop = LoopThread("test-handlers")
    loop.start()
    nc = loop.run(nats.connect(server.url, connect_timeout=2), 10)
    view = ConnView(nc=nc, loop_thread=loop, nc_id=f"nc-test-{acct[:8]}", url=server.url, dialled_exp=EXP,
                    dialled_gen=1)
    state = Mock(name="state")
    state.session.return_value.get.return_value = SessionView()
    state.is_known.return_value.get.return_value = True
    state.manifold.return_value.get.return_value = ""
    serve_sources_flights(state)
    srv = Mock(name="server")
    srv.list_sources.return_value = [SourceInfo(handle="bob"), SourceInfo(handle="agent", kind="pty")]
    creds = Credentials(url="http://127.0.0.1:1", api_key="ppz_0123456789abcdef0123456789", account_id=acct)
    home_ = Home(root=tmp_path, socket=tmp_path / "daemon.sock")
    cursors = CursorsActor.start(home_=home_).proxy()
    state_box = Published(StateView(creds=creds, known=frozenset({"bob", "agent"})))
    seen: dict[tuple[str, str], float] = {}

    def note(news: Any) -> None:
        """What the state actor does with the streams a handler tells it about."""
        if note_stream_news(seen, news, time.monotonic()):
            state_box.value = replace(state_box.value, streams_seen=MappingProxyType(dict(seen)))

    state.actor_ref.tell.side_effect = note
    system = System(
        home=home_, state=state, refresh=Mock(name="refresh"),
        nats=Mock(name="nats"), heartbeats=Mock(name="heartbeats"), cursors=cursors,
        kick_connect=Mock(name="kick_connect"), server=srv,
        state_box=state_box,
        refresh_box=Published(RefreshView(exchanged=True, exp=EXP, generation=1)),
        nats_box=Published(view),
    )
    try:
        yield Rig(sys=system, acct=acct, view=view, loop=loop)
    finally:
        cursors.actor_ref.stop()
        loop.run(nc.close(), 5)
        loop.stop()


def payloads(lines: list[dict[str, Any]]) -> list[str]:
    return [line["msg"]["payload"] for line in lines if "msg" in line]


# --- behaviour 50: what a drain holds, and where the cursor goes ---------------------------------------------


def test_a_message_published_while_a_drain_runs_is_not_part_of_it_and_stays_unread(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig.create("bob", "inbox")
    for i in range(3):
        rig.publish("bob", "inbox", f"m{i}")
    real_drain = js.drain

    async def drain_after_a_publish(nc: Any, stream: str, subject: str, start: int, last: int,
                                    keep: Any = None, want: int = 0) -> js.DrainResult:
        env = new_envelope(sender="alice", payload="late")
        await js.publish(nc, subject, env.encode(), env.id)  # seq 4, above the frozen last (3)
        return await real_drain(nc, stream, subject, start, last, keep=keep, want=want)

    monkeypatch.setattr(js, "drain", drain_after_a_publish)
    assert payloads(rig.read(handle="bob")) == ["m0", "m1", "m2"]
    assert rig.cursor("bob", "inbox") == 3
    monkeypatch.setattr(js, "drain", real_drain)
    assert payloads(rig.read(handle="bob")) == ["late"]
    assert rig.cursor("bob", "inbox") == 4


def test_the_cursor_moves_to_the_highest_kept_sequence_when_sorting_emits_it_first(rig: Rig) -> None:
    rig.create("bob", "inbox")
    rig.publish("bob", "inbox", "low", priority=3)
    rig.publish("bob", "inbox", "unset")
    rig.publish("bob", "inbox", "high", priority=1)
    assert payloads(rig.read(handle="bob")) == ["high", "unset", "low"]
    assert rig.cursor("bob", "inbox") == 3
    assert rig.read(handle="bob") == []


def test_a_transport_error_mid_drain_is_one_error_line_and_the_cursor_stays(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig.create("bob", "inbox")
    _, subject = rig.stream("bob", "inbox")
    envs = [new_envelope(sender="alice", payload=f"m{i}") for i in range(js.DRAIN_BATCH + 20)]
    rig.run(js.publish_batch(rig.view.client, subject, [(e.encode(), e.id) for e in envs]))
    assert payloads(rig.read(handle="bob", head_limit=5)) == [f"m{i}" for i in range(5)]
    assert rig.cursor("bob", "inbox") == 5
    fetches = fail_fetch(monkeypatch, at=2)
    lines = rig.read(handle="bob")
    assert fetches[0] == 2  # the first batch was read, the second failed
    assert lines == [errors.PpzError(errors.E_NATS_UNREACHABLE).to_json()]
    assert rig.cursor("bob", "inbox") == 5


# --- behaviour 70: the local heartbeat stamp ----------------------------------------------------------------------


def send_params(handle: str, pipe: str, payload: str) -> dict[str, Any]:
    return verbs.check_params("Send", {"handle": handle, "channel": pipe, "payload": payload, "session": "s"})


def batch_params(handle: str, pipe: str, payloads_: list[str]) -> dict[str, Any]:
    return verbs.check_params("SendBatch", {"handle": handle, "channel": pipe, "payloads": payloads_,
                                            "session": "s"})


def test_send_stamps_the_heartbeat_cache_only_on_the_heartbeat_pipe(rig: Rig) -> None:
    rig.create("agent", "heartbeat")
    rig.create("agent", "stdout")
    send.send(rig.sys, send_params("agent", "stdout", "not a beat"))
    assert rig.beats() == []
    send.send(rig.sys, send_params("agent", "heartbeat", '{"status":"busy"}'))
    # Now warm: the same on the event loop's fast path.
    assert rig.run(send.send_warm(rig.sys, send_params("agent", "stdout", "still not a beat"))) is not None
    assert rig.run(send.send_warm(rig.sys, send_params("agent", "heartbeat", '{"status":"idle"}'))) is not None
    beats = rig.beats()
    assert [(b.handle, b.account_id, b.payload) for b in beats] == [
        ("agent", rig.acct, '{"status":"busy"}'), ("agent", rig.acct, '{"status":"idle"}')]


def test_send_batch_stamps_once_with_its_last_payload(rig: Rig) -> None:
    rig.create("agent", "heartbeat")
    rig.create("agent", "stdout")
    send.send_batch(rig.sys, batch_params("agent", "stdout", ["x", "y"]))
    assert rig.beats() == []
    send.send_batch(rig.sys, batch_params("agent", "heartbeat", ["b1", "b2", "b3"]))
    assert [b.payload for b in rig.beats()] == ["b3"]
    assert rig.run(send.send_batch_warm(rig.sys, batch_params("agent", "heartbeat", ["c1", "c2"]))) is not None
    assert rig.run(send.send_batch_warm(rig.sys, batch_params("agent", "stdout", ["z"]))) is not None
    assert [b.payload for b in rig.beats()] == ["b3", "c2"]


# --- behaviour 59: previews and retention fields (pure) -------------------------------------------------------------


def test_preview_strips_csi_turns_newlines_and_tabs_into_spaces_and_keeps_60_characters() -> None:
    assert listing.preview_of("a\nb\tc\x1b[31mred\x1b[0m\x07!") == "a b cred!"
    assert listing.preview_of("é" * 100) == "é" * 60
    assert listing.preview_of("x" * 59 + "\n" + "y" * 10) == "x" * 59 + " "
    assert listing.preview_of("\x1b[1m" + "z" * 60 + "tail") == "z" * 60


def info(max_age_ns: int, max_msgs: int = -1, max_bytes: int = -1) -> js.StreamInfo:
    return js.StreamInfo(name="s", messages=1, last_seq=1, max_age_ns=max_age_ns, max_msgs=max_msgs,
                         max_bytes=max_bytes)


@pytest.mark.parametrize(("max_age_ns", "ttl"), [
    (24 * 3600 * 1_000_000_000, 86400), (1_500_000_000, 1), (999_999_999, 0), (0, 0)])
def test_ttl_seconds_is_the_max_age_truncated_to_whole_seconds(max_age_ns: int, ttl: int) -> None:
    row = listing.pipe_info(info(max_age_ns), "inbox", None, True, "", None)
    assert row["ttl_seconds"] == ttl


def test_unlimited_retention_stays_minus_one_and_only_long_rows_carry_retention() -> None:
    row = listing.pipe_info(info(0, -1, -1), "inbox", None, True, "", None)
    assert (row["ttl_seconds"], row["max_msgs"], row["max_bytes"]) == (0, -1, -1)
    row = listing.pipe_info(info(0, 5000, 1 << 24), "inbox", None, True, "", None)
    assert (row["max_msgs"], row["max_bytes"]) == (5000, 1 << 24)
    missing = listing.pipe_info(None, "notes", None, True, "", None)
    assert (missing["total"], missing["unread"], missing["ttl_seconds"], missing["max_msgs"],
            missing["max_bytes"]) == (0, 0, 0, -1, -1)
    short = listing.pipe_info(info(5), "inbox", None, False, "", None)
    assert not {"ttl_seconds", "max_msgs", "max_bytes"} & set(short)


# --- behaviour 60: what may wake a ListWatch (pure) ------------------------------------------------------------------


ACCT = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"


@pytest.mark.parametrize("patterns", [[], ["*"], ["%.*"], ["_presence.*"], ["agent"], ["*.agent"]])
def test_presence_subjects_never_wake_a_watch(patterns: list[str]) -> None:
    for subject in (f"{ACCT}._presence.agent", f"{ACCT}._presence.team-a.agent", f"{ACCT}._system.acl"):
        assert not listing.subject_could_match(ACCT, subject, patterns), (subject, patterns)


def test_matching_subjects_wake_a_watch() -> None:
    assert listing.subject_could_match(ACCT, f"{ACCT}.bob.inbox", [])
    assert listing.subject_could_match(ACCT, f"{ACCT}.bob.inbox", ["bob.inbox"])
    assert listing.subject_could_match(ACCT, f"{ACCT}.team-a.room", ["team-a.room"])
    assert listing.subject_could_match(ACCT, f"{ACCT}.team-a.bob.inbox", ["bob.*"])
    assert not listing.subject_could_match(ACCT, f"{ACCT}.bob.inbox", ["alice.*"])
    assert not listing.subject_could_match(ACCT, f"{'1' * 8}-0000-4000-8000-{'0' * 12}.bob.inbox", [])


# --- List: the server calls run beside the NATS listing (ipc.md §7.14) ---------------------------------


def list_params() -> dict[str, Any]:
    return {"session": "s", "patterns": [], "long": False}


def test_list_asks_the_server_while_it_lists_the_streams(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig.create("bob", "inbox")
    rig.publish("bob", "inbox", "hello")
    listed = threading.Event()
    real_list = js.list_streams

    async def list_streams(nc: Any, subject_filter: str) -> list[js.StreamInfo]:
        out = await real_list(nc, subject_filter)
        listed.set()
        return out

    def after_the_listing(value: Any) -> Any:
        def call(creds: Credentials) -> Any:
            assert listed.wait(10), "the server call waited for nothing: it runs after the listing"
            return value
        return call

    monkeypatch.setattr(js, "list_streams", list_streams)
    rig.sys.server.list_sources.side_effect = after_the_listing([SourceInfo(handle="bob")])
    rig.sys.server.list_pipes.side_effect = after_the_listing([])
    reply = listing.list_(rig.sys, list_params())
    [bob] = reply["sources"]
    [inbox] = [row for row in bob["pipe_infos"] if row["pipe"] == "inbox"]
    assert (inbox["total"], inbox["unread"], inbox["preview"]) == (1, 1, "hello")
    assert reply["uncollared_pipes"] == []


def test_list_reports_the_sources_call_failure_before_a_nats_failure(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_listing(nc: Any, subject_filter: str) -> list[js.StreamInfo]:
        raise js.JsError(js.TRANSPORT, "down")

    monkeypatch.setattr(js, "list_streams", no_listing)
    rig.sys.server.list_pipes.return_value = []
    with pytest.raises(errors.PpzError) as nats_down:
        listing.list_(rig.sys, list_params())
    assert nats_down.value.code == errors.E_NATS_UNREACHABLE
    rig.sys.server.list_sources.side_effect = errors.PpzError(errors.E_SERVER_UNREACHABLE)
    with pytest.raises(errors.PpzError) as both_down:
        listing.list_(rig.sys, list_params())
    assert both_down.value.code == errors.E_SERVER_UNREACHABLE
