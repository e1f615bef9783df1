"""Send and SendBatch handlers, warm and cold (spec/ipc.md §7.10, §7.12; behaviours 42–45, 67).

The warm entries (``send_warm``, ``send_batch_warm``) are what the daemon runs on the event loop
for every request; the cold ones (``send``, ``send_batch``) run on a thread when the warm entry
answers None. Both must publish and answer the same way. The world is ``sendworld``'s: mocked
actors that agree with their snapshots, and a real ``nats-server``.
"""

from __future__ import annotations

from typing import Any

import pytest
from sendworld import World, batch_params, module_nats, send_params, world_fixture  # noqa: F401

from ppz import errors
from ppz.handlers import send
from ppz.handlers.target import resolve_target

CLOCK = "2026-05-01T12:00:00Z"
CREATED_AT = "2026-05-01T12:00:00.000000Z"  # CLOCK as the daemon writes it


def bob_inbox(w: World) -> str:
    """Source bob with an inbox stream, already looked up once (so the warm path applies)."""
    w.know("bob")
    stream = w.create("", "bob", "inbox")
    resolve_target(w.system, send_params(handle="bob"))
    w.forget_calls()
    return stream


@pytest.fixture
def agent_to_bob(world: World, monkeypatch: pytest.MonkeyPatch) -> str:
    """Session current handle agent-7 sending to bob's inbox at the test clock; the stream."""
    monkeypatch.setenv("PPZ_TEST_CLOCK", CLOCK)
    stream = bob_inbox(world)
    world.session(current="agent-7")
    return stream


def do_send(w: World, warm: bool, **fields: Any) -> dict[str, Any]:
    p = send_params(handle="bob", **fields)
    if not warm:
        return send.send(w.system, p)
    reply = w.run(send.send_warm(w.system, p))
    assert reply is not None, "the warm path did not apply"
    return reply


def do_batch(w: World, warm: bool, payloads: list[str]) -> dict[str, Any]:
    p = batch_params(handle="bob", payloads=payloads)
    if not warm:
        return send.send_batch(w.system, p)
    reply = w.run(send.send_batch_warm(w.system, p))
    assert reply is not None, "the warm path did not apply"
    return reply


def refused(w: World, warm: bool, call: Any, **fields: Any) -> str:
    with pytest.raises(errors.PpzError) as caught:
        call(w, warm, **fields)
    return caught.value.code


ENTRIES = pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])


@ENTRIES
def test_one_send_stores_exactly_one_envelope_with_every_field(world: World, warm: bool, agent_to_bob: str) -> None:
    reply = do_send(world, warm, payload="é", msg_subject="user:ack:read", in_reply_to="m-1", ack_requested=True,
                    priority=1)
    assert reply == {"id": reply["id"], "subject": f"{world.acct}.bob.inbox", "bytes": 2}
    assert world.stored(agent_to_bob) == [{
        "id": reply["id"], "sender": "agent-7", "subject": "user:ack:read", "payload": "é", "created_at": CREATED_AT,
        "in_reply_to": "m-1", "ack_requested": True, "priority": 1}]


def test_a_warm_send_asks_no_one_and_runs_no_lookup(world: World) -> None:
    bob_inbox(world)
    do_send(world, True, payload="hi")
    assert world.asked() == []


def test_a_warm_send_that_does_not_apply_answers_none_and_publishes_nothing(world: World) -> None:
    world.know("bob")
    stream = world.create("", "bob", "inbox")  # never looked up: not warm
    assert world.run(send.send_warm(world.system, send_params(handle="bob", payload="hi"))) is None
    assert world.stored(stream) == []


def test_a_warm_send_whose_stream_was_deleted_answers_none_and_the_cold_send_finds_no_pipe(world: World) -> None:
    stream = bob_inbox(world)
    world.delete(stream)
    assert world.run(send.send_warm(world.system, send_params(handle="bob", payload="hi"))) is None
    assert not world.state.stream_fresh(world.view.nc_id, stream)  # StreamGone was told
    assert refused(world, False, do_send, payload="hi") == errors.E_PIPE_NOT_FOUND


def test_a_warm_batch_whose_stream_was_deleted_answers_none_at_once_and_the_cold_batch_finds_no_pipe(
        world: World) -> None:
    """Like Send: a stale "stream seen" costs one failed publish, not the PubAck deadline
    (before, the warm batch retried "no responders" for 5 s and answered E_DELIVERY_UNCONFIRMED)."""
    stream = bob_inbox(world)
    world.delete(stream)
    assert world.run(send.send_batch_warm(world.system, batch_params(handle="bob", payloads=["a", "b"]))) is None
    assert not world.state.stream_fresh(world.view.nc_id, stream)  # StreamGone was told
    assert refused(world, False, do_batch, payloads=["a"]) == errors.E_PIPE_NOT_FOUND


@ENTRIES
def test_priority_and_subject_are_checked_before_anything_else_even_logged_out(world: World, warm: bool) -> None:
    bob_inbox(world)
    world.publish_state(creds=None)
    for priority in (-1, 4, 99):
        assert refused(world, warm, do_send, payload="x", priority=priority) == errors.E_INVALID_PRIORITY
    assert refused(world, warm, do_send, payload="x", msg_subject="ack:x") == errors.E_INVALID_SUBJECT
    assert world.asked() == []


@ENTRIES
def test_an_oversized_envelope_is_refused_and_nothing_is_published(world: World, warm: bool) -> None:
    stream = bob_inbox(world)
    assert refused(world, warm, do_send, payload="x" * 65_536) == errors.E_PAYLOAD_TOO_LARGE
    assert refused(world, warm, do_batch, payloads=["ok", "x" * 65_536]) == errors.E_PAYLOAD_TOO_LARGE
    assert world.stored(stream) == []


@ENTRIES
def test_a_batch_stores_one_envelope_per_payload_with_parallel_ids_and_bytes(
        world: World, warm: bool, agent_to_bob: str) -> None:
    reply = do_batch(world, warm, ["a", "é", "ccc"])
    assert reply["subject"] == f"{world.acct}.bob.inbox" and reply["bytes"] == [1, 2, 3]
    stored = world.stored(agent_to_bob)
    assert [e["id"] for e in stored] == reply["ids"] and len(set(reply["ids"])) == 3
    assert [(e["payload"], e["sender"], e["subject"], e["priority"], e["created_at"]) for e in stored] == [
        ("a", "agent-7", "", 0, CREATED_AT), ("é", "agent-7", "", 0, CREATED_AT), ("ccc", "agent-7", "", 0, CREATED_AT)]


@ENTRIES
def test_an_empty_batch_answers_at_once_even_logged_out(world: World, warm: bool) -> None:
    world.publish_state(creds=None)
    assert do_batch(world, warm, []) == {"ids": [], "subject": "", "bytes": []}
    assert world.asked() == []


def test_a_warm_batch_that_does_not_apply_answers_none_and_publishes_nothing(world: World) -> None:
    world.know("bob")
    stream = world.create("", "bob", "inbox")
    assert world.run(send.send_batch_warm(world.system, batch_params(handle="bob", payloads=["a"]))) is None
    assert world.stored(stream) == []
