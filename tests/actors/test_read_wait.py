"""Waiting reads and read filters in the ``Read`` handler (spec/agents.md §1, ipc.md §7.13),
in-process against a real nats-server, NatsActor, CursorsActor and FollowActors (``readrig``).

The rig's client is a socket pair, so the points where a wait ends are exact: a publish wakes
it, a swap ends it, the client closing its end ends it, the deadline ends it.
"""

from __future__ import annotations

import threading
from typing import Any

import pykka
import pytest

from ppz.actors.follows import FollowActor
from ppz.verbs import check_params

from .natsserver import nats_servers_fixture  # noqa: F401 - a fixture
from .polling import wait_until
from .readrig import Rig, rig_fixture  # noqa: F401 - rig_fixture is a fixture

pytestmark = pytest.mark.timeout(60)


def follows() -> int:
    return len(pykka.ActorRegistry.get_by_class(FollowActor))


def payloads(events: list[dict[str, Any]]) -> list[str]:
    return [e["msg"]["payload"] for e in events if "msg" in e]


def waiting(rig: Rig, n: int = 1) -> None:
    """Until ``n`` waits are registered and subscribed (their consumers exist)."""
    wait_until(lambda: follows() == n and rig.consumers() >= n, "the wait to register and subscribe")


def test_a_wait_is_woken_by_a_message_and_delivers_it_with_the_cursor_moved(rig: Rig) -> None:
    rig.publish("old")
    assert payloads(rig.read(head_limit=10).all()) == ["old"]
    reader = rig.read(head_limit=10, wait_ms=-1)
    try:
        waiting(rig)
        rig.publish("new")
        assert payloads(reader.all()) == ["new"]  # then EOF: the read is over
    finally:
        reader.close()
    assert rig.cursor() == 2
    wait_until(lambda: follows() == 0, "the wait's registration to end")
    assert rig.read(head_limit=10).all() == []  # nothing twice


def test_a_wait_with_unread_messages_does_not_wait(rig: Rig) -> None:
    rig.publish("a", "b")
    reader = rig.read(head_limit=1, wait_ms=-1)
    try:
        events = reader.all()  # no wait: EOF right after the drain
    finally:
        reader.close()
    assert payloads(events) == ["a"] and events[-1] == {"more_unread": 1}
    assert rig.cursor() == 1


def test_a_wait_that_expires_ends_with_timeout_and_nothing_else(rig: Rig) -> None:
    rig.publish("old")
    rig.read(head_limit=10).all()
    reader = rig.read(head_limit=10, wait_ms=300)
    try:
        assert reader.all() == [{"timeout": True}]
    finally:
        reader.close()
    wait_until(lambda: follows() == 0, "the wait's registration to end")
    assert rig.cursor() == 1


def test_a_swap_ends_a_wait_without_a_reply(rig: Rig) -> None:
    reader = rig.read(head_limit=10, wait_ms=-1)
    try:
        waiting(rig)
        rig.swap()
        assert reader.all() == []  # EOF without error or timeout: the client redials
    finally:
        reader.close()
    wait_until(lambda: follows() == 0, "the wait's registration to end")


def test_the_client_going_away_ends_the_wait_and_its_consumer(rig: Rig) -> None:
    reader = rig.read(head_limit=10, wait_ms=-1)
    waiting(rig)
    reader.close()
    wait_until(lambda: follows() == 0, "the wait's registration to end")
    # The consumer was unsubscribed: the server drops it once it sees no interest.
    wait_until(lambda: rig.consumers() == 0, "the wait's consumer to go", timeout=30)


def test_a_wait_wakes_only_for_a_message_that_passes_its_filters(rig: Rig) -> None:
    reader = rig.read(head_limit=10, wait_ms=-1, **{"from": ["bob"]})
    try:
        waiting(rig)
        rig.publish("from carol", sender="carol")
        rig.publish("from bob", sender="bob")
        assert payloads(reader.all()) == ["from bob"]
    finally:
        reader.close()
    # A view: nothing moved, the messages left out stay unread.
    assert rig.cursor() == 0
    assert payloads(rig.read(head_limit=10).all()) == ["from carol", "from bob"]


def test_no_acks_drops_receipts_and_a_wait_skips_them(rig: Rig) -> None:
    rig.publish("receipt 1", sender="bob", subject="ack:read")
    reader = rig.read(head_limit=10, wait_ms=-1, no_acks=True)
    try:
        waiting(rig)
        assert rig.cursor() == 1  # the dropped receipt counts as delivered
        rig.publish("receipt 2", sender="bob", subject="ack:read")
        rig.publish("hello", sender="bob")
        assert payloads(reader.all()) == ["hello"]
    finally:
        reader.close()
    assert rig.cursor() == 3


def test_no_acks_never_moves_the_cursor_past_what_the_head_cap_left(rig: Rig) -> None:
    rig.publish("one")
    rig.publish("receipt", sender="bob", subject="ack:read")
    rig.publish("two", "three")
    assert payloads(rig.read(head_limit=2, no_acks=True).all()) == ["one", "two"]
    assert rig.cursor() == 3
    assert payloads(rig.read(head_limit=2, no_acks=True).all()) == ["three"]
    assert rig.cursor() == 4


def test_subject_glob_is_a_view_over_the_whole_subject(rig: Rig) -> None:
    rig.publish("deploy", sender="bob", subject="deploy:prod")
    rig.publish("other", sender="bob", subject="chat")
    rig.publish("nested", sender="bob", subject="deploy")
    assert payloads(rig.read(head_limit=10, subject="deploy*").all()) == ["deploy", "nested"]
    assert payloads(rig.read(head_limit=10, subject="deploy").all()) == ["nested"]
    assert rig.cursor() == 0


def test_a_follow_applies_the_filters_to_live_messages(rig: Rig) -> None:
    reader = rig.read(follow=True, no_acks=True)
    try:
        waiting(rig)
        rig.publish("receipt", sender="bob", subject="ack:read")
        rig.publish("live", sender="bob")
        event = reader.next()
        assert event is not None and event["msg"]["payload"] == "live"
        wait_until(lambda: rig.cursor() == 2, "the follow to move the cursor past both")
    finally:
        reader.close()


def test_a_wait_ms_below_minus_one_is_a_protocol_error() -> None:
    from ppz import errors

    with pytest.raises(errors.PpzError) as err:
        check_params("Read", {"wait_ms": -2})
    assert (err.value.code, err.value.message) == (errors.E_PROTOCOL, "invalid wait_ms")
    assert check_params("Read", {"wait_ms": -1})["wait_ms"] == -1


def test_many_concurrent_waits_each_wake(rig: Rig) -> None:
    readers = [rig.read(head_limit=10, wait_ms=-1, session=f"s{i}") for i in range(3)]
    try:
        waiting(rig, 3)
        rig.publish("all of you")
        got: list[list[str]] = [[] for _ in readers]
        threads = [threading.Thread(target=lambda i=i: got[i].extend(payloads(readers[i].all())))
                   for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert got == [["all of you"]] * 3
    finally:
        for r in readers:
            r.close()


def test_a_wait_woken_after_its_spare_consumer_aged_creates_one_and_delivers(rig: Rig,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The drain consumer created while the wait was armed is only used while the server
    surely still has it; older, the fresh drain creates its consumer with the stream info."""
    from ppz import jetstream as js

    monkeypatch.setattr(js, "INACTIVE_THRESHOLD_NS", 0)
    rig.publish("old")
    rig.read(head_limit=10).all()
    reader = rig.read(head_limit=10, wait_ms=-1)
    try:
        waiting(rig)
        rig.publish("new", "newer")
        assert payloads(reader.all()) in (["new"], ["new", "newer"])
    finally:
        reader.close()
    assert rig.cursor() in (2, 3)
