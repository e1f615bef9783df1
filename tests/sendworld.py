"""A world for the Send handlers and target resolution, in process, on a real ``nats-server``.

The handlers get a :class:`System` whose actors are mocks, but consistent ones: the state
actor's asks (``session``, ``is_known``, ``manifold``, ``set_current``) answer from the
``StateView`` it publishes, what it is told (``StreamSeen``/``StreamGone``) and its sources flight
changes that view as the real actor would, and the server lists ``World.listed``. So the cold
resolution (asks, server, ``STREAM.INFO``) and the warm one (snapshots only) see one world,
and a test can check that they agree and count what each asked. JetStream is real: streams
are created in memory under a fresh account id per test.

    from sendworld import module_nats, world_fixture  # noqa: F401 - fixtures: `world` needs module_nats
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from unittest.mock import Mock

import nats
import pytest
from actors.natsserver import NatsServer
from sharedserver import module_nats  # noqa: F401 - a fixture
from sourcesflight import serve_sources_flights

from ppz import jetstream as js
from ppz import names, verbs
from ppz.actors.nats import ConnView
from ppz.actors.state import StateView, note_stream_news
from ppz.aioloop import LoopThread
from ppz.home import Credentials, Home
from ppz.messages import RefreshView
from ppz.published import Published
from ppz.serverclient import SourceInfo
from ppz.system import System

EXP = 4_000_000_000  # far away: ensure-NATS finds the connection fresh
SESSION = "s"
ASKS = ("session", "is_known", "manifold", "set_current")


@dataclass
class World:
    system: System
    acct: str
    view: ConnView
    loop: LoopThread
    listed: list[SourceInfo] = field(default_factory=list)
    seen: dict[tuple[str, str], float] = field(default_factory=dict)

    @property
    def state(self) -> StateView:
        return self.system.state_box.value

    def publish_state(self, **changes: Any) -> None:
        """What the state actor would publish after a change."""
        self.system.state_box.value = replace(self.state, **changes)

    def know(self, handle: str, manifold: str = "") -> None:
        """The server lists ``handle`` (in ``manifold``) and the caches know it already."""
        self.listed.append(SourceInfo(handle=handle, manifold=manifold))
        self.publish_state(known=self.state.known | {handle},
                           manifolds=MappingProxyType({**self.state.manifolds, handle: manifold}))

    def session(self, current: str = "", namespace: str = "") -> None:
        self.publish_state(current=MappingProxyType({SESSION: current} if current else {}),
                           namespace=MappingProxyType({SESSION: namespace} if namespace else {}))

    def create(self, manifold: str, handle: str, pipe: str) -> str:
        """Create the pipe's stream (memory storage); returns its name."""
        stream = names.stream_name(self.acct, manifold, handle, pipe)
        subject = names.subject(self.acct, manifold, handle, pipe)
        self.run(js.api_request(self.view.client, f"$JS.API.STREAM.CREATE.{stream}",
                                {"name": stream, "subjects": [subject], "storage": "memory"}))
        return stream

    def delete(self, stream: str) -> None:
        self.run(js.api_request(self.view.client, f"$JS.API.STREAM.DELETE.{stream}", {}))

    def stored(self, stream: str) -> list[dict[str, Any]]:
        """The envelopes stored in ``stream``, in order."""
        last = self.run(js.stream_info(self.view.client, stream)).last_seq
        return [self.envelope(stream, seq) for seq in range(1, last + 1)]

    def envelope(self, stream: str, seq: int) -> dict[str, Any]:
        reply = self.run(js.api_request(self.view.client, f"$JS.API.STREAM.MSG.GET.{stream}", {"seq": seq}))
        return dict(json.loads(base64.b64decode(reply["message"]["data"])))

    def run(self, coro: Any) -> Any:
        return self.loop.run(coro, 30)

    def asked(self) -> list[str]:
        """The asks, server calls and failure reports made so far, in order."""
        calls = [c[0] for c in self.system.state.method_calls if c[0] in ASKS]
        return calls + ["list_sources"] * self.system.server.list_sources.call_count + [
            "report_failure"] * self.system.nats.report_failure.call_count

    def forget_calls(self) -> None:
        for mock in (self.system.state, self.system.server, self.system.nats):
            mock.reset_mock()

    def told(self, news: object) -> None:
        """What StateActor does with a StreamNews."""
        if note_stream_news(self.seen, news, time.monotonic()):  # type: ignore[arg-type]
            self.publish_state(streams_seen=MappingProxyType(dict(self.seen)))


def send_params(**fields: Any) -> dict[str, Any]:
    return verbs.check_params("Send", {"session": SESSION, **fields})


def batch_params(**fields: Any) -> dict[str, Any]:
    return verbs.check_params("SendBatch", {"session": SESSION, **fields})


def answering(fn: Any) -> Any:
    """A mocked ask: the proxy call returns a future whose ``get`` answers ``fn(*args)``."""
    return lambda *args: Mock(get=Mock(return_value=fn(*args)))


@pytest.fixture(name="world")
def world_fixture(module_nats: NatsServer, tmp_path: Path) -> Iterator[World]:  # noqa: F811
    acct = str(uuid.uuid4())  # streams of one test never meet another's
    loop = LoopThread("test-send-world")
    loop.start()
    nc = loop.run(nats.connect(module_nats.url, connect_timeout=2), 10)
    view = ConnView(nc=nc, loop_thread=loop, nc_id=f"nc-{acct[:8]}", url=module_nats.url, dialled_exp=EXP,
                    dialled_gen=1)
    creds = Credentials(url="http://127.0.0.1:1", api_key="ppz_0123456789abcdef0123456789", account_id=acct)
    state = Mock(name="state")
    server = Mock(name="server")
    system = System(
        home=Home(root=tmp_path, socket=tmp_path / "daemon.sock"), state=state, refresh=Mock(name="refresh"),
        nats=Mock(name="nats"), heartbeats=Mock(name="heartbeats"),
        cursors=Mock(name="cursors"), kick_connect=Mock(name="kick_connect"), server=server,
        state_box=Published(StateView(creds=creds)),
        refresh_box=Published(RefreshView(exchanged=True, exp=EXP, generation=1)),
        nats_box=Published(view),
    )
    w = World(system=system, acct=acct, view=view, loop=loop)

    def set_current(session: str, handle: str) -> None:
        current = {k: v for k, v in w.state.current.items() if k != session}
        w.publish_state(current=MappingProxyType({**current, **({session: handle} if handle else {})}))

    state.session.side_effect = answering(lambda s: w.state.session(s))
    state.is_known.side_effect = answering(lambda h: h in w.state.known)
    state.manifold.side_effect = answering(lambda h: w.state.manifolds.get(h, ""))
    state.set_current.side_effect = answering(set_current)
    state.actor_ref.tell.side_effect = w.told
    serve_sources_flights(state, on_listed=lambda sources: w.publish_state(
        known=frozenset(s.handle for s in sources),
        manifolds=MappingProxyType({s.handle: s.manifold for s in sources})))
    server.list_sources.side_effect = lambda creds: list(w.listed)
    try:
        yield w
    finally:
        loop.run(nc.close(), 5)
        loop.stop()
