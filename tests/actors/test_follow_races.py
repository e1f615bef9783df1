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

from typing import Any
from unittest import mock

import pykka
import pytest

from ppz.actors import nats as nats_module
from ppz.handlers import read as read_module

from .natsserver import nats_servers_fixture  # noqa: F401 - a fixture
from .polling import wait_until
from .readrig import Rig, rig_fixture  # noqa: F401 - rig_fixture is a fixture

pytestmark = pytest.mark.timeout(60)


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


def test_a_follow_whose_client_lags_gets_every_message_once_in_order(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop writes a follow's messages while the client's socket takes them; when it would
    block, the follow's actor takes over (read.open_follow). Across that hand-over no message is
    lost, repeated or reordered, and the cursor ends at the last one."""
    handovers: list[int] = []
    real = read_module.Follow.deliver_nowait

    def spying(self: Any, seq: int, data: bytes) -> Any:
        resume = real(self, seq, data)
        if resume is not None:
            handovers.append(seq)
        return resume

    monkeypatch.setattr(read_module.Follow, "deliver_nowait", spying)
    reader = rig.follow()
    try:
        rig.publish("m0")
        first = reader.next()
        assert first is not None and first["msg"]["payload"] == "m0"
        big = [f"m{i}:" + "x" * 4000 for i in range(1, 301)]  # far more than a socket buffer holds
        rig.publish(*big)
        wait_until(lambda: handovers, "the loop to hand the follow over")
        got = []
        for _ in big:
            event = reader.next()
            assert event is not None, f"the follow ended after {len(got)} messages"
            got.append(event["msg"]["payload"])
        assert got == big
        assert handovers[0] > 1  # m0 went out from the loop
        wait_until(lambda: rig.cursor() == 301, "the cursor at the last message")
    finally:
        reader.close()
