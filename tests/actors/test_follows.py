"""FollowsActor and FollowActor: the follow registry and its eviction on a swap
(spec/daemon.md §5.2 step 2, §5.3; DESIGN.md §2 "An NC swap is a message broadcast")."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from ppz.actors.follows import FollowActor, FollowsActor
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


# --- FollowActor ---------------------------------------------------------------------------------


def test_deliveries_reach_the_sink_in_order(pairs: Pairs) -> None:
    local, _peer = pairs()
    got: list[tuple[int, bytes]] = []
    follow = FollowActor.start(conn=local)
    follow.proxy().set_sink(lambda seq, data: got.append((seq, data))).get()
    for seq in range(1, 51):
        follow.tell(FollowDelivery(seq=seq, data=b"m%d" % seq))
    wait_until(lambda: len(got) == 50, "50 deliveries")
    assert got == [(seq, b"m%d" % seq) for seq in range(1, 51)]


def test_a_failing_sink_does_not_end_the_follow(pairs: Pairs) -> None:
    local, peer = pairs()
    got: list[int] = []

    def sink(seq: int, data: bytes) -> None:
        if seq == 1:
            raise ValueError("bad message")
        got.append(seq)

    follow = FollowActor.start(conn=local)
    follow.proxy().set_sink(sink).get()
    follow.tell(FollowDelivery(seq=1, data=b"x"))
    follow.tell(FollowDelivery(seq=2, data=b"y"))
    wait_until(lambda: got == [2], "the delivery after the failing one")
    assert follow.is_alive()
    assert still_open(peer)


def test_a_delivery_before_the_sink_is_set_is_dropped(pairs: Pairs) -> None:
    local, _peer = pairs()
    got: list[int] = []
    follow = FollowActor.start(conn=local)
    follow.tell(FollowDelivery(seq=1, data=b"early"))
    follow.proxy().set_sink(lambda seq, data: got.append(seq)).get()
    follow.tell(FollowDelivery(seq=2, data=b"late"))
    wait_until(lambda: got == [2], "the delivery after set_sink")


@pytest.mark.parametrize("message", [ConnectionSwapped(old_nc_id="nc-1-1", new_nc_id="nc-1-2"), Shutdown()])
def test_a_swap_or_shutdown_closes_the_socket_and_stops_the_follow(pairs: Pairs, message: Any) -> None:
    local, peer = pairs()
    follow = FollowActor.start(conn=local)
    follow.tell(message)
    assert sees_eof(peer)
    wait_stopped(follow)


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
    follow.proxy().set_sink(lambda seq, data: None).get()
    assert follow.is_alive()
    assert still_open(peer)


# --- FollowsActor --------------------------------------------------------------------------------


def test_the_registry_counts_registered_follows_and_unregister_stops_one(pairs: Pairs) -> None:
    registry = FollowsActor.start().proxy()
    (first, first_peer), (second, second_peer) = pairs(), pairs()
    first_ref = registry.register(first).get()
    registry.register(second).get()
    assert registry.count().get() == 2
    registry.unregister(first).get()
    wait_stopped(first_ref)
    assert sees_eof(first_peer)
    assert registry.count().get() == 1
    assert still_open(second_peer)
    registry.unregister(first).get()  # unknown now: nothing happens
    assert registry.count().get() == 1


def test_close_all_closes_every_follow(pairs: Pairs) -> None:
    registry = FollowsActor.start().proxy()
    registered = [(registry.register(local).get(), peer) for local, peer in (pairs() for _ in range(3))]
    registry.close_all().get()
    for ref, peer in registered:
        assert sees_eof(peer)
        wait_stopped(ref)
    assert registry.count().get() == 0


def test_a_follow_that_ended_by_itself_is_no_longer_counted(pairs: Pairs) -> None:
    registry = FollowsActor.start().proxy()
    local, _peer = pairs()
    ref = registry.register(local).get()
    ref.tell(Shutdown())
    wait_stopped(ref)
    assert registry.count().get() == 0


# --- a real swap ---------------------------------------------------------------------------------


def test_every_swap_of_the_nats_actor_closes_every_follow(
    tmp_path: Path, nats_servers: NatsServers, pairs: Pairs
) -> None:
    nats = start_nats_actor(tmp_path, nats_servers().url)
    nats.proxy.rebuild("ensureNATS").get()
    registry = FollowsActor.start().proxy()

    registered = [(registry.register(local).get(), peer) for local, peer in (pairs() for _ in range(2))]
    nats.give(credential(2))
    nats.proxy.rebuild("ensureNATS").get()  # a new credential generation: swap to a new connection
    for ref, peer in registered:
        assert sees_eof(peer)
        wait_stopped(ref)
    assert registry.count().get() == 0

    local, peer = pairs()
    ref = registry.register(local).get()
    nats.proxy.swap_to_nothing("handleLogout").get()
    assert sees_eof(peer)
    wait_stopped(ref)
