"""An in-process ``Read`` rig: the handler on a thread against a real nats-server, a real
``NatsActor``, a real ``CursorsActor`` and real ``FollowActor``s; the state, refresh loop and
server client are stand-ins (an uncollared read needs none of them). Hooks run at exact points
of a follow's registration (see :class:`Follows`)."""

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

from .natsserver import (
    ACCT,
    Harness,
    NatsServer,
    NatsServers,
    credential,
    start_nats_actor,
)

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

    def publish(self, *payloads: str, sender: str = "x", subject: str = "") -> None:
        """Publish in one burst (core publishes, in order on one connection), then wait until
        the stream holds them all."""
        async def go() -> None:
            nc = await nats.connect(self.server.url)
            for payload in payloads:
                await nc.publish(SUBJECT, new_envelope(sender=sender, subject=subject, payload=payload).encode())
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

    def consumers(self) -> int:
        """The stream's consumers now (a follow's or a wait's, while it lives)."""
        async def go() -> int:
            nc = await nats.connect(self.server.url)
            info = await nc.jetstream().stream_info(STREAM)
            await nc.close()
            return int(info.state.consumer_count)

        return self.nats.view().run(go(), 10)

    def cursor(self, session: str = "s") -> int:
        entry = self.sys.cursors.get(session, names.cursor_key(ACCT, "", "", PIPE)).get()
        return 0 if entry is None else int(entry.seq)

    def follow(self) -> Reader:
        """``ppz read --tail`` on the pipe: the handler on a thread, the client's socket back."""
        return self.read(follow=True)

    def read(self, **params: Any) -> Reader:
        """A ``Read`` of the pipe with ``params``: the handler on a thread, the client's socket back."""
        local, peer = socket.socketpair()
        checked = check_params("Read", {"bare_target": PIPE, "session": "s", **params})
        thread = threading.Thread(target=self._serve, args=(checked, local), daemon=True)
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

    def all(self) -> list[dict[str, Any]]:
        """Every event until EOF."""
        events = []
        while (event := self.next()) is not None:
            events.append(event)
        return events

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture(name="rig")
def rig_fixture(tmp_path: Path, nats_servers: NatsServers, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    made = Rig(tmp_path, nats_servers(), monkeypatch)
    made.create_stream()
    yield made
    pykka.ActorRegistry.stop_all(block=True, timeout=10)


