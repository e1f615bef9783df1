"""Complete's single-flight (spec/ipc.md §7.21, behaviour 62) with a real StateActor and a counting
fake server: concurrent cold callers share one listing, decided in the actor's mailbox."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pykka
import pytest

from ppz import errors
from ppz.actors.nats import ConnView
from ppz.actors.state import StateActor, StateView
from ppz.handlers.sources import complete
from ppz.home import Credentials, Home, load_state
from ppz.messages import RefreshView
from ppz.published import Published
from ppz.serverclient import SourceInfo
from ppz.system import System

CREDS = Credentials(url="http://127.0.0.1:1", api_key="ppz_0123456789abcdef0123456789",
                    account_id="0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d")
OTHER = Credentials(url="http://127.0.0.1:1", api_key="ppz_ffffffffffffffffffffffffff",
                    account_id="9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a")
SOURCES = [SourceInfo(handle="zed", kind="pty"), SourceInfo(handle="alice", pipes=("inbox", "notes"))]
WARM = {"sources": [{"handle": "alice", "pipes": ["inbox", "notes"]},
                    {"handle": "zed", "pipes": ["heartbeat", "inbox", "stdctrl", "stdin", "stdout", "system"]}],
        "stale": False}
STALE = {"sources": [], "stale": True}


class CountingState:
    """The StateActor proxy, counting the completion claims it has answered."""

    def __init__(self, proxy: Any) -> None:
        self._proxy = proxy
        self.claims = 0
        self.claimed = threading.Condition()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._proxy, name)

    def claim_completion(self) -> Any:
        future = self._proxy.claim_completion()
        state = self

        class Counted:
            def get(self, timeout: float | None = None) -> Any:
                claim = future.get(timeout=timeout)
                with state.claimed:
                    state.claims += 1
                    state.claimed.notify_all()
                return claim

        return Counted()

    def wait_claims(self, n: int) -> None:
        with self.claimed:
            assert self.claimed.wait_for(lambda: self.claims >= n, timeout=10), self.claims


class FakeServer:
    """``list_sources`` only; each call waits until ``hold`` claims were answered, then answers
    ``SOURCES`` or raises ``fail``. ``during`` runs inside the call (e.g. a re-login)."""

    def __init__(self, state: CountingState) -> None:
        self.state = state
        self.calls: list[Credentials] = []
        self.hold = 0
        self.fail: errors.PpzError | None = None
        self.during: Any = None

    def list_sources(self, creds: Credentials) -> list[SourceInfo]:
        self.calls.append(creds)
        self.state.wait_claims(self.hold)
        if self.during is not None:
            self.during()
        if self.fail is not None:
            raise self.fail
        return list(SOURCES)


class Rig:
    def __init__(self, root: Path, creds: Credentials | None) -> None:
        home = Home.at(root)
        root.mkdir(mode=0o700, exist_ok=True)
        box: Published[StateView] = Published(StateView())
        proxy = StateActor.start(home_=home, loaded=load_state(home), view_box=box).proxy()
        self.peers = Mock()
        proxy.connect_peers(refresh=self.peers.refresh, nats=self.peers.nats,
                            heartbeats=self.peers.heartbeats, kick_connect=self.peers.kick_connect,
                            on_logged_out=self.peers.on_logged_out).get()
        if creds is not None:
            proxy.install_login(creds).get()
        self.state = CountingState(proxy)
        self.server = FakeServer(self.state)
        self.sys = System(home=home, state=self.state, refresh=self.peers.refresh, nats=self.peers.nats,
                          heartbeats=self.peers.heartbeats,
                          cursors=Mock(name="cursors"),
                          kick_connect=self.peers.kick_connect, server=self.server,  # type: ignore[arg-type]
                          state_box=box, refresh_box=Published(RefreshView()),
                          nats_box=Published(ConnView()))

    def complete(self) -> dict[str, Any]:
        return complete(self.sys, {})

    def concurrently(self, n: int) -> list[dict[str, Any]]:
        self.server.hold = n
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(lambda _: self.complete(), range(n)))


@pytest.fixture(autouse=True)
def _stop_all_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=10)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path / "home", CREDS)


def test_eight_concurrent_cold_callers_share_one_listing(rig: Rig) -> None:
    assert rig.concurrently(8) == [WARM] * 8
    assert rig.server.calls == [CREDS]
    assert rig.state.claims == 8
    # Warm now: answered from memory.
    assert rig.complete() == WARM
    assert len(rig.server.calls) == 1
    # Never JetStream, never the refresh loop: no peer was asked anything.
    assert rig.peers.mock_calls == []


def test_a_failed_listing_is_stale_for_everyone_and_stays_cold(rig: Rig) -> None:
    rig.server.fail = errors.PpzError(errors.E_SERVER_UNREACHABLE)
    assert rig.concurrently(8) == [STALE] * 8
    assert len(rig.server.calls) == 1
    assert rig.state.completion().get() is None
    rig.server.fail = None
    rig.server.hold = 0
    assert rig.complete() == WARM  # the next caller loads again
    assert len(rig.server.calls) == 2


def test_logged_out_is_stale_without_a_listing(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "home", None)
    assert rig.complete() == STALE
    assert rig.server.calls == [] and rig.state.claims == 0


def test_a_listing_for_a_replaced_identity_is_not_kept(rig: Rig) -> None:
    rig.server.during = lambda: rig.state.install_login(OTHER).get()
    assert rig.complete() == STALE
    assert rig.state.completion().get() is None  # the other account's snapshot is still cold
    rig.server.during = None
    assert rig.complete() == WARM
    assert rig.server.calls == [CREDS, OTHER]


def test_a_newer_identity_does_not_join_an_older_flight(rig: Rig) -> None:
    """A caller that claims after a re-login starts its own listing with the new credential."""
    started = threading.Event()
    release = threading.Event()
    first: list[dict[str, Any]] = []

    def hold_first() -> None:
        if len(rig.server.calls) == 1:
            started.set()
            assert release.wait(10)

    rig.server.during = hold_first
    thread = threading.Thread(target=lambda: first.append(rig.complete()))
    thread.start()
    assert started.wait(10)
    rig.state.install_login(OTHER).get()
    assert rig.complete() == WARM
    release.set()
    thread.join(10)
    assert first == [STALE]
    assert rig.server.calls == [CREDS, OTHER]
    assert rig.complete() == WARM and len(rig.server.calls) == 2
