"""``ppz.jetstream`` against a real ``nats-server`` with JetStream (spec/nats.md §6, §7;
behaviours 42, 43, 50).

A publish that no stream captures must never report success, single or batch; every publish
carries ``Nats-Msg-Id`` = the id it was given, so a publish retried after a lost PubAck is
stored once; a drain never reads past its frozen last sequence and returns a transport error
mid-drain with what it read so far. One server serves the whole module; each test uses its own
stream names and its own client.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import itertools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import nats.errors
import nats.js.errors
import orjson
import pytest
from actors.natsserver import NatsServer
from jsfaults import fail_fetch
from nats.aio.client import Client as NatsClient
from sharedserver import module_nats  # noqa: F401 - a fixture

from ppz import errors
from ppz import jetstream as js

_names = itertools.count(1)


@pytest.fixture(name="server")
def server_fixture(module_nats: NatsServer) -> NatsServer:  # noqa: F811
    return module_nats


def run(server: NatsServer, body: Callable[[NatsClient], Awaitable[Any]]) -> Any:
    """Run ``body(nc)`` on a fresh event loop with a fresh client (closed afterwards)."""

    async def main() -> Any:
        nc = await nats.connect(server.url, connect_timeout=2, allow_reconnect=False)
        try:
            return await body(nc)
        finally:
            if not nc.is_closed:
                await nc.close()

    return asyncio.run(main())


def fresh_names() -> tuple[str, str]:
    n = next(_names)
    return f"JS_TEST_{n}", f"jstest.{n}.inbox"


async def create_stream(nc: NatsClient, stream: str, subject: str) -> None:
    await js.api_request(nc, f"$JS.API.STREAM.CREATE.{stream}",
                         {"name": stream, "subjects": [subject], "storage": "memory"})


async def delete_stream(nc: NatsClient, stream: str) -> None:
    await js.api_request(nc, f"$JS.API.STREAM.DELETE.{stream}")


async def stored_msg_id(nc: NatsClient, stream: str, seq: int) -> str:
    """The ``Nats-Msg-Id`` header JetStream stored with message ``seq``."""
    reply = await js.api_request(nc, f"$JS.API.STREAM.MSG.GET.{stream}", {"seq": seq})
    headers = base64.b64decode(reply["message"].get("hdrs") or "").decode()
    for line in headers.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "nats-msg-id":
            return value.strip()
    return ""


def body(n: int) -> bytes:
    return orjson.dumps({"id": str(uuid.uuid4()), "payload": str(n)})


# --- behaviour 42: no stream → never success ---------------------------------------------------------------


def test_publish_with_no_stream_is_unconfirmed_never_success(server: NatsServer) -> None:
    _, subject = fresh_names()

    async def go(nc: NatsClient) -> None:
        with pytest.raises(errors.PpzError) as info:
            await js.publish(nc, subject, body(1), str(uuid.uuid4()), deadline=0.8)
        assert info.value.code == errors.E_DELIVERY_UNCONFIRMED
        # The warm path asks to know at once, so it can look the stream up again.
        with pytest.raises(js.NoStream):
            await js.publish(nc, subject, body(2), str(uuid.uuid4()), no_stream_fast=True)

    run(server, go)


def test_publish_after_the_stream_was_deleted_is_unconfirmed(server: NatsServer) -> None:
    stream, subject = fresh_names()

    async def go(nc: NatsClient) -> None:
        await create_stream(nc, stream, subject)
        assert await js.publish(nc, subject, body(1), str(uuid.uuid4())) == 1
        await delete_stream(nc, stream)  # e.g. destroyed elsewhere after the sender's lookup
        with pytest.raises(errors.PpzError) as info:
            await js.publish(nc, subject, body(2), str(uuid.uuid4()), deadline=0.8)
        assert info.value.code == errors.E_DELIVERY_UNCONFIRMED

    run(server, go)


def test_batch_with_no_stream_is_unconfirmed_never_success(server: NatsServer) -> None:
    stream, subject = fresh_names()

    async def go(nc: NatsClient) -> None:
        items = [(body(i), str(uuid.uuid4())) for i in range(3)]
        with pytest.raises(errors.PpzError) as info:
            await js.publish_batch(nc, subject, items, deadline=0.8)
        assert info.value.code == errors.E_DELIVERY_UNCONFIRMED
        await create_stream(nc, stream, subject)
        await delete_stream(nc, stream)
        with pytest.raises(errors.PpzError) as info:
            await js.publish_batch(nc, subject, items, deadline=0.8)
        assert info.value.code == errors.E_DELIVERY_UNCONFIRMED

    run(server, go)


def test_publish_on_a_closed_connection_is_unreachable(server: NatsServer) -> None:
    stream, subject = fresh_names()

    async def go(nc: NatsClient) -> None:
        await create_stream(nc, stream, subject)
        await nc.close()
        for attempt in (js.publish(nc, subject, body(1), str(uuid.uuid4())),
                        js.publish_batch(nc, subject, [(body(2), str(uuid.uuid4()))])):
            with pytest.raises(errors.PpzError) as info:
                await attempt
            assert info.value.code == errors.E_NATS_UNREACHABLE

    run(server, go)


# --- behaviour 43: Nats-Msg-Id, one stored message per id ---------------------------------------------------


class LosesFirstPubAck:
    """A client whose first request is sent (and stored) but whose reply is lost, as in a
    reconnect; every request's headers are recorded."""

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self.headers: list[dict[str, str]] = []

    async def request(self, subject: str, data: bytes, timeout: float, headers: dict[str, str]) -> Any:
        self.headers.append(dict(headers))
        reply = await self._nc.request(subject, data, timeout=timeout, headers=headers)
        if len(self.headers) == 1:
            raise nats.errors.TimeoutError
        return reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nc, name)


def test_a_publish_retried_after_a_lost_puback_is_stored_once(server: NatsServer) -> None:
    stream, subject = fresh_names()
    msg_id = str(uuid.uuid4())

    async def go(nc: NatsClient) -> None:
        await create_stream(nc, stream, subject)
        lossy = LosesFirstPubAck(nc)
        seq = await js.publish(lossy, subject, body(1), msg_id)  # type: ignore[arg-type]
        assert lossy.headers == [{"Nats-Msg-Id": msg_id}] * 2  # retried, with the same id
        assert seq == 1
        info = await js.stream_info(nc, stream)
        assert (info.messages, info.last_seq) == (1, 1)  # JetStream dropped the duplicate
        assert await stored_msg_id(nc, stream, 1) == msg_id

    run(server, go)


def test_one_publish_is_one_stored_message_with_its_id(server: NatsServer) -> None:
    stream, subject = fresh_names()
    ids = [str(uuid.uuid4()) for _ in range(2)]

    async def go(nc: NatsClient) -> None:
        await create_stream(nc, stream, subject)
        assert await js.publish(nc, subject, body(1), ids[0]) == 1
        assert await js.publish(nc, subject, body(2), ids[1]) == 2
        assert (await js.stream_info(nc, stream)).messages == 2
        assert [await stored_msg_id(nc, stream, seq) for seq in (1, 2)] == ids

    run(server, go)


def test_a_batch_carries_each_id_and_a_retried_batch_is_stored_once(server: NatsServer) -> None:
    stream, subject = fresh_names()
    items = [(body(i), str(uuid.uuid4())) for i in range(3)]

    async def go(nc: NatsClient) -> None:
        await create_stream(nc, stream, subject)
        assert await js.publish_batch(nc, subject, items) == [1, 2, 3]
        # publish_with_failover publishes the same envelopes again after a lost PubAck.
        assert await js.publish_batch(nc, subject, items) == [1, 2, 3]
        assert (await js.stream_info(nc, stream)).messages == 3
        assert [await stored_msg_id(nc, stream, seq) for seq in (1, 2, 3)] == [i for _, i in items]

    run(server, go)


# --- behaviour 50: the drain's bounds and a transport error mid-drain ----------------------------------------


def test_a_drain_never_reads_past_its_last_sequence(server: NatsServer) -> None:
    stream, subject = fresh_names()

    async def go(nc: NatsClient) -> None:
        await create_stream(nc, stream, subject)
        for i in range(1, 6):
            await js.publish(nc, subject, body(i), str(uuid.uuid4()))
        # A gap below the bound: the fetch of 3 then reaches message 4, which is above it.
        await js.api_request(nc, f"$JS.API.STREAM.MSG.DELETE.{stream}", {"seq": 2})
        result = await js.drain(nc, stream, subject, 1, 3)
        assert result.error is None
        assert [m.seq for m in result.messages] == [1, 3]

    run(server, go)


def test_a_transport_error_mid_drain_returns_what_was_read(server: NatsServer,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    stream, subject = fresh_names()

    async def go(nc: NatsClient) -> None:
        await create_stream(nc, stream, subject)
        await js.publish_batch(nc, subject, [(body(i), str(uuid.uuid4())) for i in range(js.DRAIN_BATCH + 10)])
        fail_fetch(monkeypatch, at=2)
        result = await js.drain(nc, stream, subject, 1, js.DRAIN_BATCH + 10)
        assert result.error is not None and result.error.kind == js.TRANSPORT
        assert [m.seq for m in result.messages] == list(range(1, js.DRAIN_BATCH + 1))

    run(server, go)


async def consumer_count(nc: NatsClient, stream: str) -> int:
    info = await js.api_request(nc, f"$JS.API.STREAM.INFO.{stream}")
    return int(info["state"]["consumer_count"])


async def until_no_consumer(nc: NatsClient, stream: str) -> None:
    """Until the stream has no consumer; well within the 30 s inactive threshold, so only a
    delete the drain asked for passes."""
    for _ in range(200):
        if await consumer_count(nc, stream) == 0:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{stream} still has {await consumer_count(nc, stream)} consumer(s)")


def test_a_drain_deletes_its_consumer(server: NatsServer) -> None:
    stream, subject = fresh_names()

    async def go(nc: NatsClient) -> None:
        await create_stream(nc, stream, subject)
        for i in range(1, 4):
            await js.publish(nc, subject, body(i), str(uuid.uuid4()))
        result = await js.drain(nc, stream, subject, 1, 3)
        assert [m.seq for m in result.messages] == [1, 2, 3]
        await until_no_consumer(nc, stream)

    run(server, go)


# --- a woken wait's fresh drain (agents.md §1 step 3): info, cursor and first fetch at once ------------


def fresh_drain_cases() -> list[tuple[str, Any, bool, list[int]]]:
    """(case, start_of, with a spare consumer, the sequences drained) on a stream holding 1..5,
    a guessed start of 3 and a wake by message 4."""
    return [
        ("the guess holds, spare", lambda info: 3, True, [3, 4, 5]),
        ("the guess holds, no spare", lambda info: 3, False, [3, 4, 5]),
        ("the cursor moved, spare", lambda info: 5, True, [5]),
        ("the cursor moved back, spare", lambda info: 2, True, [2, 3, 4, 5]),
        ("nothing to drain, spare", lambda info: None, True, []),
    ]


@pytest.mark.parametrize(("case", "start_of", "spare", "drained"), fresh_drain_cases(),
                         ids=[c[0] for c in fresh_drain_cases()])
def test_a_fresh_drain_reads_from_the_start_the_info_and_cursor_give(
        server: NatsServer, case: str, start_of: Any, spare: bool, drained: list[int]) -> None:
    stream, subject = fresh_names()

    async def go(nc: NatsClient) -> None:
        await create_stream(nc, stream, subject)
        for i in range(1, 6):
            await js.publish(nc, subject, body(i), str(uuid.uuid4()))
        creating: concurrent.futures.Future[str] | None = None
        if spare:
            creating = concurrent.futures.Future()
            creating.set_result(await js.create_drain_consumer(nc, stream, subject, 3))
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        ready.set_result(None)
        got = await js.info_and_drain(nc, stream, subject, 3, start_of, ready=ready, spare=creating, upto=4)
        assert got is not None
        info, result = got
        assert info.last_seq == 5 and result.error is None
        assert [m.seq for m in result.messages] == drained
        assert [orjson.loads(m.data)["payload"] for m in result.messages] == [str(seq) for seq in drained]
        await until_no_consumer(nc, stream)

    run(server, go)


def test_a_fresh_drain_whose_spare_consumer_is_gone_falls_back(server: NatsServer) -> None:
    """The server deleted the spare (its inactive threshold passed): None, the caller then
    drains the ordinary way."""
    stream, subject = fresh_names()

    async def go(nc: NatsClient) -> None:
        await create_stream(nc, stream, subject)
        await js.publish(nc, subject, body(1), str(uuid.uuid4()))
        consumer = await js.create_drain_consumer(nc, stream, subject, 1)
        await js.api_request(nc, f"$JS.API.CONSUMER.DELETE.{stream}.{consumer}")
        creating: concurrent.futures.Future[str] = concurrent.futures.Future()
        creating.set_result(consumer)
        assert await js.info_and_drain(nc, stream, subject, 1, lambda info: 1, spare=creating, upto=1) is None
        await until_no_consumer(nc, stream)

    run(server, go)


def test_a_fresh_drain_abandoned_before_the_cursor_came_deletes_its_consumer(server: NatsServer) -> None:
    stream, subject = fresh_names()

    async def go(nc: NatsClient) -> None:
        await create_stream(nc, stream, subject)
        await js.publish(nc, subject, body(1), str(uuid.uuid4()))
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        task = asyncio.ensure_future(js.info_and_drain(nc, stream, subject, 1, lambda info: 1, ready=ready))
        for _ in range(200):  # until its consumer exists
            if await consumer_count(nc, stream):
                break
            await asyncio.sleep(0.01)
        ready.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await until_no_consumer(nc, stream)

    run(server, go)


# --- a JetStream that is passing through an election is transport, never "invalid pipe" ----------------

# What nats-server answers an API request while its cluster has no meta leader.
TEMPORARILY_UNAVAILABLE = {"type": "io.nats.jetstream.api.v1.stream_info_response",
                           "error": {"code": 503, "err_code": 10008,
                                     "description": "JetStream system temporarily unavailable"}}


# ... and while a request reaches a server that is no longer the leader it needs.
CANNOT_HANDLE = {"type": "io.nats.jetstream.api.v1.stream_info_response",
                 "error": {"code": 500, "err_code": 10009, "description": "JetStream cluster can not handle request"}}


@pytest.mark.parametrize("reply", [TEMPORARILY_UNAVAILABLE, CANNOT_HANDLE], ids=["10008", "10009"])
def test_an_unavailable_jetstream_reply_is_transport(server: NatsServer, reply: dict[str, Any]) -> None:
    async def body(nc: NatsClient) -> js.JsError:
        subject = f"fakejs.{uuid.uuid4().hex}.STREAM.INFO.S"

        async def answer(msg: Any) -> None:
            await msg.respond(orjson.dumps(reply))

        await nc.subscribe(subject, cb=answer)
        with pytest.raises(js.JsError) as caught:
            await js.api_request(nc, subject, timeout=2.0, idempotent=True)
        return caught.value

    err = run(server, body)
    assert (err.kind, err.timeout) == (js.TRANSPORT, False)
    assert err.text == reply["error"]["description"]


def test_an_api_request_nobody_answers_is_transport(server: NatsServer) -> None:
    async def body(nc: NatsClient) -> js.JsError:
        with pytest.raises(js.JsError) as caught:
            await js.api_request(nc, f"fakejs.{uuid.uuid4().hex}.STREAM.INFO.S", timeout=2.0)
        return caught.value

    err = run(server, body)
    assert (err.kind, err.timeout) == (js.TRANSPORT, False)


def test_the_client_library_unavailable_errors_classify_as_transport() -> None:
    unavailable = nats.js.errors.ServiceUnavailableError(**TEMPORARILY_UNAVAILABLE["error"])  # type: ignore[arg-type]
    cannot_handle = nats.js.errors.ServerError(**CANNOT_HANDLE["error"])  # type: ignore[arg-type]
    for exc in (unavailable, cannot_handle, nats.errors.NoRespondersError()):
        assert js.classify(exc).kind == js.TRANSPORT
    assert js.classify(nats.js.errors.BadRequestError(code=400, err_code=10058, description="x")).kind == js.OTHER


def test_a_stream_not_found_reply_stays_not_found() -> None:
    reply = orjson.dumps({"error": {"code": 404, "err_code": 10059, "description": "stream not found"}})
    with pytest.raises(js.JsError) as caught:
        js._decode(reply)
    assert caught.value.kind == js.NOT_FOUND
