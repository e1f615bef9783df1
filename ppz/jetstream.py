"""JetStream operations the daemon performs (spec/nats.md §6, §7, §11), as coroutines.

Every coroutine runs on the connection's loop (``ConnView.run``) and raises
:class:`JsError` with one of the classes of ipc.md §6: *not found*, *transport* (connection
closed, no servers, request timeout; ``timeout`` marks the subset that triggers the failure
report) or *other*. A JetStream that answers "unavailable" (a 503: no responders, a cluster
electing its meta leader, 10008 "JetStream system temporarily unavailable"; or 10009 "JetStream
cluster can not handle request") is *transport*: it passes, and it says nothing about the pipe.
Requests are made with the raw JetStream API (JSON over core NATS) so
that no reply is decoded twice and every error keeps its class.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from ppz import errors
from ppz.timestamps import parse_rfc3339

API_TIMEOUT = 5.0
PUBACK_WAIT = 5.0
FETCH_WAIT = 5.0
DRAIN_BATCH = 256
INACTIVE_THRESHOLD_NS = 30 * 1_000_000_000
FOLLOW_IDLE_HEARTBEAT = 1.0
STREAM_NOT_FOUND = 10059
UNAVAILABLE = 503
CLUSTER_NOT_LEADER = 10009  # a 500, "JetStream cluster can not handle request", while leaders move
NO_RESPONDERS_RETRY = 0.25
PUBACK_ATTEMPT = 2.0
READ_ATTEMPT = 1.5

NOT_FOUND = "not_found"
TRANSPORT = "transport"
OTHER = "other"


class JsError(Exception):
    """A classified JetStream failure."""

    def __init__(self, kind: str, text: str, *, timeout: bool = False) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text
        self.timeout = timeout


def classify(exc: BaseException) -> JsError:
    """Map a nats-py exception to its class."""
    if isinstance(exc, JsError):
        return exc
    text = str(exc) or type(exc).__name__
    if isinstance(exc, nats.errors.TimeoutError | asyncio.TimeoutError | TimeoutError):
        return JsError(TRANSPORT, text or "timeout", timeout=True)
    if isinstance(
        exc,
        nats.errors.ConnectionClosedError
        | nats.errors.NoServersError
        | nats.errors.ConnectionDrainingError
        | nats.errors.StaleConnectionError
        | nats.errors.OutboundBufferLimitError
        | nats.errors.NoRespondersError
        | nats.js.errors.ServiceUnavailableError,
    ):
        return JsError(TRANSPORT, text)
    if isinstance(exc, nats.js.errors.APIError) and exc.err_code == CLUSTER_NOT_LEADER:
        return JsError(TRANSPORT, text)
    return JsError(OTHER, text)


def _decode(data: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise JsError(OTHER, f"undecodable JetStream reply: {exc}") from None
    if not isinstance(obj, dict):
        raise JsError(OTHER, "JetStream reply is not an object")
    err = obj.get("error")
    if isinstance(err, dict):
        code = err.get("err_code")
        text = str(err.get("description") or err)
        if code == STREAM_NOT_FOUND or (err.get("code") == 404 and "stream not found" in text):
            raise JsError(NOT_FOUND, text)
        if err.get("code") == 404:
            raise JsError(NOT_FOUND, text)
        if err.get("code") == UNAVAILABLE or code == CLUSTER_NOT_LEADER:
            raise JsError(TRANSPORT, text)
        raise JsError(OTHER, text)
    return obj


async def api_request(nc: NatsClient, subject: str, body: dict[str, Any] | None = None,
                      timeout: float = API_TIMEOUT, idempotent: bool = False) -> dict[str, Any]:
    """One JetStream API request; the reply decoded, errors classified.

    An ``idempotent`` request (a read) is re-sent when an attempt gets no reply, within the
    same overall ``timeout``: a reply lost in a reconnect (an in-place credential rotation
    reconnects the client) then costs one short attempt, not the whole deadline.
    """
    payload = orjson.dumps(body) if body is not None else b""
    end = time.monotonic() + timeout
    while True:
        remaining = end - time.monotonic()
        attempt = min(remaining, READ_ATTEMPT) if idempotent else remaining
        try:
            msg = await nc.request(subject, payload, timeout=max(attempt, 0.001))
        except nats.errors.NoRespondersError:
            raise JsError(TRANSPORT, "no responders: JetStream not available") from None
        except (TimeoutError, nats.errors.TimeoutError) as exc:
            if idempotent and end - time.monotonic() > 0.05:
                continue
            raise classify(exc) from None
        except Exception as exc:  # noqa: BLE001 - classified
            raise classify(exc) from None
        return _decode(msg.data)


# --- streams ---------------------------------------------------------------------------------


def _ns(text: str) -> int:
    """An RFC 3339 time as unix nanoseconds (0 when absent or unparseable)."""
    if not text or text.startswith("0001-01-01"):
        return 0
    try:
        dt = parse_rfc3339(text)
    except ValueError:
        return 0
    whole = int(dt.timestamp())
    frac = text.split(".", 1)[1] if "." in text else ""
    digits = "".join(ch for ch in frac if ch.isdigit())[:9].ljust(9, "0")
    return whole * 1_000_000_000 + int(digits)


def _int_or(value: Any, default: int) -> int:
    return int(value) if isinstance(value, int | float) else default


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamInfo:
    """What the daemon reads from ``STREAM.INFO`` (nats.md §7)."""

    name: str
    subject: str = ""
    messages: int = 0
    first_seq: int = 0
    last_seq: int = 0
    last_ts: str = ""
    created_ns: int = 0
    max_age_ns: int = 0
    max_msgs: int = -1
    max_bytes: int = -1

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> StreamInfo:
        config = obj.get("config") or {}
        state = obj.get("state") or {}
        subjects = config.get("subjects") or [""]
        last_ts = str(state.get("last_ts") or "")
        return cls(
            name=str(config.get("name") or ""),
            subject=str(subjects[0]),
            messages=int(state.get("messages") or 0),
            first_seq=int(state.get("first_seq") or 0),
            last_seq=int(state.get("last_seq") or 0),
            last_ts="" if last_ts.startswith("0001-01-01") else last_ts,
            created_ns=_ns(str(obj.get("created") or "")),
            max_age_ns=int(config.get("max_age") or 0),
            max_msgs=_int_or(config.get("max_msgs"), -1),
            max_bytes=_int_or(config.get("max_bytes"), -1),
        )


async def stream_info(nc: NatsClient, name: str) -> StreamInfo:
    return StreamInfo.from_json(await api_request(nc, f"$JS.API.STREAM.INFO.{name}", idempotent=True))


async def list_streams(nc: NatsClient, subject_filter: str) -> list[StreamInfo]:
    """Every stream capturing ``subject_filter``, paged (one listing)."""
    out: list[StreamInfo] = []
    offset = 0
    while True:
        reply = await api_request(nc, "$JS.API.STREAM.LIST", {"offset": offset, "subject": subject_filter},
                                  idempotent=True)
        streams = reply.get("streams") or []
        out.extend(StreamInfo.from_json(s) for s in streams)
        offset += len(streams)
        total = int(reply.get("total") or 0)
        if not streams or offset >= total:
            return out


async def get_message(nc: NatsClient, stream: str, seq: int) -> bytes:
    """The body of message ``seq`` of ``stream`` (stream message get)."""
    reply = await api_request(nc, f"$JS.API.STREAM.MSG.GET.{stream}", {"seq": seq}, idempotent=True)
    message = reply.get("message") or {}
    import base64

    data = message.get("data") or ""
    return base64.b64decode(data) if data else b""


async def last_message(nc: NatsClient, stream: str) -> bytes | None:
    """The newest message of a stream, or None when it is empty."""
    info = await stream_info(nc, stream)
    if info.last_seq == 0 or info.messages == 0:
        return None
    return await get_message(nc, stream, info.last_seq)


# --- publishing (nats.md §6) --------------------------------------------------------------------


def publish_error(exc: BaseException) -> errors.PpzError:
    """Classify a publish failure: closed/no servers → unreachable; anything else unconfirmed."""
    if isinstance(exc, nats.errors.ConnectionClosedError | nats.errors.NoServersError):
        return errors.PpzError(errors.E_NATS_UNREACHABLE)
    return errors.PpzError(errors.E_DELIVERY_UNCONFIRMED)


class NoStream(Exception):
    """"No responders" on the first attempt of a publish that asked to know (stale cache)."""


async def publish(nc: NatsClient, subject: str, data: bytes, msg_id: str,
                  deadline: float = PUBACK_WAIT, no_stream_fast: bool = False) -> int:
    """Publish and wait for the PubAck; returns the stream sequence. Raises PpzError.

    Within the deadline, "no responders" (no stream captures the subject yet, or a cluster
    electing a leader) and a lost PubAck are retried: ``Nats-Msg-Id`` makes JetStream store a
    retried message once. When the deadline passes while the client has no server (it is
    reconnecting or closed), the answer is ``E_NATS_UNREACHABLE``, else
    ``E_DELIVERY_UNCONFIRMED``.
    """
    end = time.monotonic() + deadline
    headers = {"Nats-Msg-Id": msg_id}
    while True:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise unconfirmed(nc)
        try:
            msg = await nc.request(subject, data, timeout=min(remaining, PUBACK_ATTEMPT), headers=headers)
        except nats.errors.NoRespondersError:
            if no_stream_fast:
                raise NoStream(subject) from None
            if end - time.monotonic() <= NO_RESPONDERS_RETRY:
                raise unconfirmed(nc) from None
            await asyncio.sleep(NO_RESPONDERS_RETRY)
            continue
        except (TimeoutError, nats.errors.TimeoutError):
            continue  # the PubAck may have been lost in a reconnect: publish again, same id
        except Exception as exc:  # noqa: BLE001 - classified
            raise publish_error(exc) from None
        return puback_seq(msg.data)


def unconfirmed(nc: NatsClient) -> errors.PpzError:
    """The deadline passed: unreachable when the client has no server, else unconfirmed."""
    if nc.is_closed or nc.is_reconnecting or not nc.is_connected:
        return errors.PpzError(errors.E_NATS_UNREACHABLE)
    return errors.PpzError(errors.E_DELIVERY_UNCONFIRMED)


def puback_seq(data: bytes) -> int:
    """The sequence of a PubAck; any error or malformed ack is unconfirmed delivery."""
    try:
        ack = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise errors.PpzError(errors.E_DELIVERY_UNCONFIRMED) from None
    if not isinstance(ack, dict) or "error" in ack or not ack.get("stream"):
        raise errors.PpzError(errors.E_DELIVERY_UNCONFIRMED)
    return int(ack.get("seq") or 0)


_CONTEXTS: weakref.WeakKeyDictionary[NatsClient, Any] = weakref.WeakKeyDictionary()


def _context(nc: NatsClient) -> Any:
    """One JetStream context per client (its async-publish reply subscription is reused).
    Touched only on the loop."""
    ctx = _CONTEXTS.get(nc)
    if ctx is None:
        ctx = nc.jetstream(timeout=PUBACK_WAIT)
        _CONTEXTS[nc] = ctx
    return ctx


async def publish_batch(nc: NatsClient, subject: str, items: list[tuple[bytes, str]],
                        deadline: float = PUBACK_WAIT, no_stream_fast: bool = False) -> list[int]:
    """Publish every (data, msg_id) asynchronously, then wait once for all PubAcks.

    A message whose publish found no stream is published again within the deadline (the
    ids make JetStream store each message once), or, with ``no_stream_fast``, the batch raises
    :class:`NoStream` at once (the caller's stream cache was stale; it looks the stream up and
    publishes the same ids again); any other failure fails the batch.
    """
    end = time.monotonic() + deadline
    ctx = _context(nc)
    try:
        futures = [await ctx.publish_async(subject, data, headers={"Nats-Msg-Id": msg_id})
                   for data, msg_id in items]
    except Exception as exc:  # noqa: BLE001 - classified
        raise publish_error(exc) from None
    _, pending = await asyncio.wait(futures, timeout=max(0.0, end - time.monotonic()))
    if pending:
        for fut in pending:
            fut.cancel()
        raise unconfirmed(nc)
    failures = [fut.exception() for fut in futures]  # every one retrieved, whatever is raised below
    seqs: list[int] = []
    for (data, msg_id), fut, failure in zip(items, futures, failures, strict=True):
        if failure is None:
            seqs.append(int(getattr(fut.result(), "seq", 0) or 0))
            continue
        if isinstance(failure, nats.errors.NoRespondersError | nats.js.errors.NoStreamResponseError):
            if no_stream_fast:
                raise NoStream(subject)
            seqs.append(await publish(nc, subject, data, msg_id, max(0.0, end - time.monotonic())))
            continue
        if isinstance(failure, nats.js.errors.APIError):
            raise errors.PpzError(errors.E_DELIVERY_UNCONFIRMED)
        raise publish_error(failure)
    return seqs


# --- drain consumer (nats.md §7) ------------------------------------------------------------------


@dataclass(slots=True)
class Drained:
    """One message of a drain: its stream sequence, body, and whether the caller kept it."""

    seq: int
    data: bytes
    kept: bool = True


@dataclass(slots=True)
class DrainResult:
    messages: list[Drained] = field(default_factory=list)
    error: JsError | None = None
    capped: bool = False


async def drain(nc: NatsClient, stream: str, subject: str, start: int, last: int,
                keep: Any = None, want: int = 0) -> DrainResult:
    """Read messages ``start..last`` (inclusive) with an ephemeral pull consumer.

    ``keep(data) -> bool`` marks each message kept or not; with ``want`` > 0 fetching stops
    once that many were kept (``capped``) and never asks for more than still needed.
    Messages above ``last`` are not part of the drain. A transport error mid-drain is
    returned in ``error`` with what was read so far.
    """
    result = DrainResult()
    config = {
        "deliver_policy": "by_start_sequence",
        "opt_start_seq": start,
        "ack_policy": "none",
        "filter_subject": subject,
        "inactive_threshold": INACTIVE_THRESHOLD_NS,
        "mem_storage": True,
        "num_replicas": 1,
    }
    try:
        created = await api_request(nc, f"$JS.API.CONSUMER.CREATE.{stream}",
                                    {"stream_name": stream, "config": config})
    except JsError as exc:
        result.error = exc
        return result
    consumer = str(created.get("name") or "")
    seen = start - 1
    kept = 0
    try:
        while seen < last:
            batch = min(DRAIN_BATCH, last - seen)
            if want:
                batch = min(batch, want - kept)
            got, done = await _fetch(nc, stream, consumer, batch)
            for seq, data in got:
                if seq > last:
                    done = True
                    break
                is_kept = keep(data) if keep is not None else True
                result.messages.append(Drained(seq=seq, data=data, kept=is_kept))
                seen = seq
                if is_kept:
                    kept += 1
                    if want and kept >= want:
                        result.capped = True
                        break
            if result.capped or done or not got:
                break
    except JsError as exc:
        result.error = exc
    finally:
        try:
            await api_request(nc, f"$JS.API.CONSUMER.DELETE.{stream}.{consumer}", timeout=1.0)
        except JsError:
            pass  # the inactive threshold removes it
    return result


async def _fetch(nc: NatsClient, stream: str, consumer: str, batch: int) -> tuple[list[tuple[int, bytes]], bool]:
    """One pull request of up to ``batch`` messages; ``done`` when the server has no more."""
    inbox = nc.new_inbox()
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        queue.put_nowait(msg)

    try:
        sub = await nc.subscribe(inbox, cb=on_msg)
    except Exception as exc:  # noqa: BLE001
        raise classify(exc) from None
    got: list[tuple[int, bytes]] = []
    done = False
    try:
        body = orjson.dumps({"batch": batch, "no_wait": True})
        await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}", body, reply=inbox)
        end = time.monotonic() + FETCH_WAIT
        while len(got) < batch:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise JsError(TRANSPORT, "fetch timed out", timeout=True)
            try:
                msg = await asyncio.wait_for(queue.get(), remaining)
            except TimeoutError:
                raise JsError(TRANSPORT, "fetch timed out", timeout=True) from None
            status = msg.headers.get("Status") if msg.headers else None
            if status and not msg.data:
                if status in ("404", "408", "409"):
                    done = True
                    break
                if status == "100":
                    continue
                raise JsError(OTHER, f"fetch status {status}")
            got.append((msg.metadata.sequence.stream, msg.data))
    except JsError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise classify(exc) from None
    finally:
        try:
            await sub.unsubscribe()
        except Exception:  # noqa: BLE001 - the connection may be gone
            pass
    return got, done
