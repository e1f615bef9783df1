"""Follows against swaps and lost messages (spec/ipc.md §7.13 step 12, daemon.md §5.2, §5.3).

The ``Read`` handler runs here in-process against a real nats-server, a real ``NatsActor`` and
real ``FollowActor``s; the state, refresh loop and server client are stand-ins (an uncollared
read needs none of them). That makes the races injectable at an exact point:

- a swap whose broadcast goes out after the ``Read`` took its connection but before its follow
  registered: nothing closes that follow, and it must notice and end for a redial;
- messages removed from the stream before the follow's consumer reached them: the follow must
  carry on past the gap (a redial could not bring them back).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import nats
import pykka
import pytest

from ppz import names
from ppz.actors import nats as nats_module
from ppz.actors.cursors import CursorsActor
from ppz.actors.follows import FollowActor
from ppz.actors.state import SessionView, StateView
from ppz.envelope import new_envelope
from ppz.handlers import read as read_module
from ppz.handlers.read import read
from ppz.home import Credentials, Home
from ppz.messages import RefreshView
from ppz.published import Published
from ppz.system import System
from ppz.verbs import check_params

from .natsserver import (  # noqa: F401 - nats_servers_fixture is a fixture
    ACCT,
    Harness,
    NatsServer,
    NatsServers,
    credential,
    nats_servers_fixture,
    start_nats_actor,
)
from .polling import wait_until

pytestmark = pytest.mark.timeout(60)

EXP = 1_900_000_000
PIPE = "room"
STREAM = names.stream_name(ACCT, "", "", PIPE)
SUBJECT = names.subject(ACCT, "", "", PIPE)


class Follows:
    """The real follow registration (``register_follow``), with hooks that run just before a
    follow registers, and just before its consumer is created (after the drain: the follow's
    actor is first used then)."""

    def __init__(self) -> None:
        self.real = read_module.register_follow
        self.before_register: Any = None
        self.before_consumer: Any = None

    def register(self, system: System, conn: socket.socket) -> Any:
        if self.before_register is not None:
            hook, self.before_register = self.before_register, None
            hook()
        ref = self.real(system, conn)
        if self.before_consumer is not None:
            hook, self.before_consumer = self.before_consumer, None
            ref = HookedRef(ref, hook)
        return ref

    @staticmethod
    def count() -> int:
        return len(pykka.ActorRegistry.get_by_class(FollowActor))


class HookedRef:
    """A follow's actor ref whose first ``proxy()`` runs ``hook`` first."""

    def __init__(self, ref: Any, hook: Any) -> None:
        self.ref = ref
        self.hook = hook

    def proxy(self) -> Any:
        hook, self.hook = self.hook, lambda: None
        hook()
        return self.ref.proxy()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ref, name)


class Rig:
    """A ``System`` for ``read`` around a real NatsActor connected to ``server``."""

    def __init__(self, tmp: Path, server: NatsServer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.server = server
        self.nats: Harness = start_nats_actor(tmp, server.url, credential(1, EXP))
        self.nats.proxy.rebuild("ensureNATS").get()
        self.refresh_box = Published(RefreshView(exchanged=True, exp=EXP, lead=30, generation=1))
        self.follows = Follows()
        monkeypatch.setattr(read_module, "register_follow", self.follows.register)
        self.published = 0
        state = mock.Mock(name="state")
        state.session.return_value.get.return_value = SessionView()
        root = tmp / "home"
        root.mkdir()
        self.sys = System(
            home=Home.at(root), state=state, refresh=mock.Mock(name="refresh"), nats=self.nats.proxy,
            heartbeats=mock.Mock(name="heartbeats"),
            cursors=CursorsActor.start(home_=Home.at(root)).proxy(), kick_connect=mock.Mock(),
            server=mock.Mock(name="server"),
            state_box=Published(StateView(creds=Credentials(url="http://ppz", api_key="ppz_k",
                                                            account_id=ACCT))),
            refresh_box=self.refresh_box, nats_box=self.nats.view_box,
        )

    def swap(self) -> None:
        """A rotation that falls back to a rebuild: a new generation, dialled and swapped in."""
        gen = self.refresh_box.value.generation + 1
        self.nats.give(credential(gen, EXP))
        self.nats.proxy.rebuild("OnRefreshed-callback").get()
        self.refresh_box.value = RefreshView(exchanged=True, exp=EXP, lead=30, generation=gen)

    def create_stream(self) -> None:
        async def go() -> None:
            nc = await nats.connect(self.server.url)
            await nc.jetstream().add_stream(name=STREAM, subjects=[SUBJECT])
            await nc.close()

        self.nats.view().run(go(), 10)

    def publish(self, *payloads: str) -> None:
        """Publish in one burst (core publishes, in order on one connection), then wait until
        the stream holds them all."""
        async def go() -> None:
            nc = await nats.connect(self.server.url)
            for payload in payloads:
                await nc.publish(SUBJECT, new_envelope(sender="x", subject="", payload=payload).encode())
            await nc.flush()
            js = nc.jetstream()
            while (await js.stream_info(STREAM)).state.last_seq < self.published + len(payloads):
                await asyncio.sleep(0.01)
            self.published += len(payloads)
            await nc.close()

        self.nats.view().run(go(), 30)

    def delete(self, seq: int) -> None:
        async def go() -> None:
            nc = await nats.connect(self.server.url)
            await nc.jetstream().delete_msg(STREAM, seq)
            await nc.close()

        self.nats.view().run(go(), 10)

    def follow(self) -> Reader:
        """``ppz read --tail`` on the pipe: the handler on a thread, the client's socket back."""
        local, peer = socket.socketpair()
        params = check_params("Read", {"bare_target": PIPE, "follow": True, "session": "s"})
        thread = threading.Thread(target=self._serve, args=(params, local), daemon=True)
        thread.start()
        return Reader(peer)

    def _serve(self, params: dict[str, Any], conn: socket.socket) -> None:
        try:
            read(self.sys, params, conn)
        finally:
            conn.close()


class Reader:
    """The client's end of one follow: its events, one JSON line each, until EOF."""

    def __init__(self, sock: socket.socket) -> None:
        sock.settimeout(20)  # a follow that neither delivers nor ends fails the test
        self.file = sock.makefile("rb")
        self.sock = sock

    def next(self) -> dict[str, Any] | None:
        """The next event, or None at EOF (the daemon ended the follow without an error)."""
        line = self.file.readline()
        return json.loads(line) if line else None

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def rig(tmp_path: Path, nats_servers: NatsServers, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    made = Rig(tmp_path, nats_servers(), monkeypatch)
    made.create_stream()
    yield made
    pykka.ActorRegistry.stop_all(block=True, timeout=10)


def test_a_follow_registered_after_a_swap_broadcast_ends_for_a_redial(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The swapped-out connection stays usable meanwhile, so the Read gets as far as subscribing
    # on it whatever the machine's load (by default it closes after 1 s, and the follow stalls).
    monkeypatch.setattr(nats_module, "SWAP_CLOSE_GRACE", 30.0)
    rig.publish("m0")
    old = rig.nats.view().nc_id
    rig.follows.before_register = rig.swap  # the Read holds the old connection; the swap lands now
    reader = rig.follow()
    try:
        assert reader.next() == {"msg": mock.ANY}
        assert reader.next() is None  # ended without an error: the client redials
    finally:
        reader.close()
    assert rig.nats.view().nc_id != old
    wait_until(lambda: rig.follows.count() == 0, "the follow to unregister")
    # The redial follows on the new connection: a message published now arrives.
    reader = rig.follow()
    try:
        rig.publish("m1")
        event = reader.next()
        assert event is not None and event["msg"]["payload"] == "m1"
    finally:
        reader.close()


def test_the_published_view_shows_the_swap_when_follows_are_told(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Read that takes its connection after the broadcast but before the new one is published
    must not find the old one still serving (it would subscribe on it unnoticed)."""
    old = rig.nats.view().nc_id
    seen: list[Any] = []
    broadcast = pykka.ActorRegistry.broadcast

    def watching(message: Any, target_class: Any = None) -> None:
        seen.append(rig.nats.view())
        broadcast(message, target_class=target_class)

    monkeypatch.setattr(pykka.ActorRegistry, "broadcast", watching)
    rig.swap()
    assert len(seen) == 1 and seen[0].nc_id == old
    assert not seen[0].serves(old)
    assert rig.nats.view().serves(rig.nats.view().nc_id) and not rig.nats.view().serves(old)


def test_a_follow_carries_on_past_messages_removed_from_the_stream(rig: Rig) -> None:
    """Messages removed from the stream (retention, deletion) before the follow's consumer got to
    them leave a gap in its sequences. A redial could not bring them back, so the follow carries
    on with the next message instead of ending."""
    rig.publish("m0")

    def remove_the_next_message() -> None:  # after the drain (L = 1), before the consumer
        rig.publish("m1", "m2")
        rig.delete(2)

    rig.follows.before_consumer = remove_the_next_message
    reader = rig.follow()
    try:
        payloads = []
        for _ in range(2):
            event = reader.next()
            assert event is not None, f"the follow ended after {payloads}"
            payloads.append(event["msg"]["payload"])
        assert payloads == ["m0", "m2"]
        rig.publish("m3")
        event = reader.next()
        assert event is not None and event["msg"]["payload"] == "m3"
    finally:
        reader.close()
