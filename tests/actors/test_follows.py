"""FollowActor: one follow, its live messages, and its eviction on a swap, a shutdown or a stale
connection (spec/daemon.md §5.2 step 2, §5.3; DESIGN.md §2 "An NC swap is a message broadcast")."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from ppz.actors.follows import FollowActor, Handover
from ppz.messages import ConnectionSwapped, FollowDelivery, Shutdown

from .natsserver import (  # noqa: F401 - nats_servers_fixture is a fixture
    NatsServers,
    credential,
    nats_servers_fixture,
    start_nats_actor,
)
from .polling import wait_until

pytestmark = pytest.mark.timeout(30)


class Pairs:
    """Socket pairs standing in for follow clients: ``local`` is the daemon's end."""

    def __init__(self) -> None:
        self.pairs: list[tuple[socket.socket, socket.socket]] = []

    def __call__(self) -> tuple[socket.socket, socket.socket]:
        local, peer = socket.socketpair()
        peer.settimeout(5)
        self.pairs.append((local, peer))
        return local, peer

    def close(self) -> None:
        for local, peer in self.pairs:
            local.close()
            peer.close()


@pytest.fixture
def pairs() -> Iterator[Pairs]:
    made = Pairs()
    yield made
    made.close()


def sees_eof(peer: socket.socket) -> bool:
    """The client's end reads EOF (the daemon shut the follow's socket down)."""
    return peer.recv(1) == b""


def still_open(peer: socket.socket) -> bool:
    peer.setblocking(False)
    try:
        peer.recv(1)
    except BlockingIOError:
        return True
    finally:
        peer.settimeout(5)
    return False


def wait_stopped(ref: pykka.ActorRef[Any]) -> None:
    wait_until(lambda: not ref.is_alive(), "the follow actor to stop")


class Sink:
    """A follow's live work that records what it is given."""

    def __init__(self, deliver: Any = None) -> None:
        self.got: list[tuple[int, bytes]] = []
        self.flushes = 0
        self._deliver = deliver

    def deliver(self, seq: int, data: bytes) -> None:
        if self._deliver is not None:
            self._deliver(seq, data)
        self.got.append((seq, data))

    def flush(self) -> None:
        self.flushes += 1


class Sub:
    """A consumer stand-in: records its unsubscribe."""

    def __init__(self) -> None:
        self.unsubscribed = threading.Event()

    async def unsubscribe(self) -> None:
        self.unsubscribed.set()


class Loop:
    """A loop stand-in that runs a coroutine at once."""

    def submit(self, coro: Any) -> None:
        try:
            coro.send(None)
        except StopIteration:
            pass


# --- FollowActor ---------------------------------------------------------------------------------


def test_deliveries_reach_the_sink_in_order(pairs: Pairs) -> None:
    local, _peer = pairs()
    sink = Sink()
    follow = FollowActor.start(conn=local)
    follow.proxy().attach(sink).get()
    for seq in range(1, 51):
        follow.tell(FollowDelivery(seq=seq, data=b"m%d" % seq))
    wait_until(lambda: len(sink.got) == 50, "50 deliveries")
    assert sink.got == [(seq, b"m%d" % seq) for seq in range(1, 51)]
    assert sink.flushes >= 1


def test_a_failing_sink_does_not_end_the_follow(pairs: Pairs) -> None:
    local, peer = pairs()

    def fail_first(seq: int, data: bytes) -> None:
        if seq == 1:
            raise ValueError("bad message")

    sink = Sink(fail_first)
    follow = FollowActor.start(conn=local)
    follow.proxy().attach(sink).get()
    follow.tell(FollowDelivery(seq=1, data=b"x"))
    follow.tell(FollowDelivery(seq=2, data=b"y"))
    wait_until(lambda: sink.got == [(2, b"y")], "the delivery after the failing one")
    assert follow.is_alive()
    assert still_open(peer)


def test_a_delivery_before_the_sink_is_set_is_dropped(pairs: Pairs) -> None:
    local, _peer = pairs()
    sink = Sink()
    follow = FollowActor.start(conn=local)
    follow.tell(FollowDelivery(seq=1, data=b"early"))
    follow.proxy().attach(sink).get()
    follow.tell(FollowDelivery(seq=2, data=b"late"))
    wait_until(lambda: sink.got == [(2, b"late")], "the delivery after attach")


@pytest.mark.parametrize("message", [ConnectionSwapped(old_nc_id="nc-1-1", new_nc_id="nc-1-2"), Shutdown()])
def test_a_swap_or_shutdown_closes_the_socket_and_stops_the_follow(pairs: Pairs, message: Any) -> None:
    local, peer = pairs()
    sink, sub = Sink(), Sub()
    follow = FollowActor.start(conn=local)
    follow.proxy().attach(sink).get()
    assert follow.proxy().subscribed("nc-1-1", sub, Loop()).get()
    follow.tell(message)
    assert sees_eof(peer)
    wait_stopped(follow)
    assert sink.flushes >= 1  # the noted cursor is written before the client redials
    assert sub.unsubscribed.is_set()  # the follow's consumer ends with it


def test_a_follow_subscribed_on_a_stale_connection_ends_itself(pairs: Pairs) -> None:
    local, peer = pairs()
    sub = Sub()
    follow = FollowActor.start(conn=local, serves=lambda nc_id: nc_id == "nc-1-2")
    assert follow.proxy().subscribed("nc-1-1", sub, Loop()).get() is False
    assert sees_eof(peer)
    wait_stopped(follow)
    assert sub.unsubscribed.is_set()


def test_a_follow_on_the_serving_connection_stays_until_stopped(pairs: Pairs) -> None:
    local, peer = pairs()
    sub = Sub()
    follow = FollowActor.start(conn=local, serves=lambda nc_id: nc_id == "nc-1-2")
    assert follow.proxy().subscribed("nc-1-2", sub, Loop()).get() is True
    assert follow.is_alive() and still_open(peer)
    assert follow.proxy().nc_id.get() == "nc-1-2"
    follow.stop()
    assert sub.unsubscribed.is_set()
    assert still_open(peer)  # stopped by its Read handler, which still owns the socket


def test_a_swap_broadcast_reaches_every_follow(pairs: Pairs) -> None:
    follows = [(FollowActor.start(conn=local), peer) for local, peer in (pairs() for _ in range(3))]
    pykka.ActorRegistry.broadcast(ConnectionSwapped(old_nc_id="nc-1-1", new_nc_id="-"), target_class=FollowActor)
    for ref, peer in follows:
        assert sees_eof(peer)
        wait_stopped(ref)


def test_an_unexpected_message_does_not_end_the_follow(pairs: Pairs) -> None:
    local, peer = pairs()
    follow = FollowActor.start(conn=local)
    follow.tell("not a follow message")
    follow.proxy().attach(Sink()).get()
    assert follow.is_alive()
    assert still_open(peer)


# --- a real swap ---------------------------------------------------------------------------------


def test_every_swap_of_the_nats_actor_closes_every_follow(
    tmp_path: Path, nats_servers: NatsServers, pairs: Pairs
) -> None:
    nats = start_nats_actor(tmp_path, nats_servers().url)
    nats.proxy.rebuild("ensureNATS").get()

    registered = [(FollowActor.start(conn=local), peer) for local, peer in (pairs() for _ in range(2))]
    nats.give(credential(2))
    nats.proxy.rebuild("ensureNATS").get()  # a new credential generation: swap to a new connection
    for ref, peer in registered:
        assert sees_eof(peer)
        wait_stopped(ref)
    assert pykka.ActorRegistry.get_by_class(FollowActor) == []

    local, peer = pairs()
    ref = FollowActor.start(conn=local)
    nats.proxy.swap_to_nothing("handleLogout").get()
    assert sees_eof(peer)
    wait_stopped(ref)


def test_a_handover_attaches_the_live_work_and_resumes_it_before_later_deliveries(pairs: Pairs) -> None:
    """The loop hands a follow's work over when its socket would block (read.open_follow): the
    message it could not finish comes first, then the deliveries told after it, then a flush."""
    local, _peer = pairs()
    sink = Sink()
    follow = FollowActor.start(conn=local)
    follow.tell(FollowDelivery(seq=1, data=b"on the loop"))  # nothing attached yet: dropped
    follow.tell(Handover(live=sink, resume=lambda: sink.got.append((2, b"rest"))))
    follow.tell(FollowDelivery(seq=3, data=b"m3"))
    wait_until(lambda: len(sink.got) == 2 and sink.flushes >= 1, "the resumed message, one more and a flush")
    assert sink.got == [(2, b"rest"), (3, b"m3")]
