"""Send and SendBatch (spec/ipc.md §7.10, §7.12): one send path, entered warm or cold.

Each verb checks its request, resolves the target (``resolve_target``), builds what it will
publish (:class:`Outgoing`), publishes and stamps the heartbeat cache. The warm entries
(``send_warm``, ``send_batch_warm``) run on the event loop with the warm resolution and answer
None when it does not apply; the request then goes to a thread and takes the cold entries
(``send``, ``send_batch``), which resolve in full and publish with failover.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ppz import errors
from ppz import jetstream as js
from ppz.actors.nats import ConnView
from ppz.envelope import Envelope, encode_checked, envelope_time, new_envelope
from ppz.handlers.target import Target, resolve_target, tell_streams
from ppz.messages import Beat, StreamGone
from ppz.system import System

# --- the verbs' entries ------------------------------------------------------------------------


def send(system: System, p: dict[str, Any]) -> dict[str, Any]:
    """Send, cold: full resolution and publish with failover, on the request's thread."""
    check_send(p)
    return deliver(system, message_out(p, resolve_target(system, p)))


async def send_warm(system: System, p: dict[str, Any]) -> dict[str, Any] | None:
    """Send on the event loop, or None when the warm resolution does not apply."""
    check_send(p)
    target = resolve_target(system, p, warm=True)
    return None if target is None else await deliver_warm(system, message_out(p, target))


def send_batch(system: System, p: dict[str, Any]) -> dict[str, Any]:
    """SendBatch, cold: full resolution and publish with failover, on the request's thread."""
    if not p["payloads"]:
        return empty_batch_reply()
    return deliver(system, batch_out(p, resolve_target(system, p)))


async def send_batch_warm(system: System, p: dict[str, Any]) -> dict[str, Any] | None:
    """SendBatch on the event loop, or None when the warm resolution does not apply."""
    if not p["payloads"]:
        return empty_batch_reply()
    target = resolve_target(system, p, warm=True)
    return None if target is None else await deliver_warm(system, batch_out(p, target))


def check_send(p: dict[str, Any]) -> None:
    """Send's first two checks, before anything else (ipc.md §7.10 steps 1–2)."""
    if not 0 <= p["priority"] <= 3:
        raise errors.PpzError(errors.E_INVALID_PRIORITY)
    if p["msg_subject"].startswith("ack:"):
        raise errors.PpzError(errors.E_INVALID_SUBJECT)


def empty_batch_reply() -> dict[str, Any]:
    """SendBatch with no payloads: answered at once, with no other check (ipc.md §7.12 step 1)."""
    return {"ids": [], "subject": "", "bytes": []}


# --- what a verb publishes ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    """Encoded envelopes for one target, the reply once they are stored, and the payload that
    stamps the heartbeat cache when the target is a ``heartbeat`` pipe."""

    target: Target
    items: list[tuple[bytes, str]]  # (encoded envelope, envelope id)
    batch: bool
    reply: dict[str, Any]
    beat: str

    def publish(self, nc: Any, *, no_stream_fast: bool = False) -> Coroutine[Any, Any, Any]:
        """The publish coroutine on ``nc``: ``js.publish`` for a Send, ``js.publish_batch``
        for a SendBatch; with ``no_stream_fast`` either raises ``js.NoStream`` when no stream
        captures the subject."""
        if self.batch:
            return js.publish_batch(nc, self.target.subject, self.items, no_stream_fast=no_stream_fast)
        data, msg_id = self.items[0]
        return js.publish(nc, self.target.subject, data, msg_id, no_stream_fast=no_stream_fast)


def message_out(p: dict[str, Any], target: Target) -> Outgoing:
    """Send's envelope (ipc.md §7.10 step 4); E_PAYLOAD_TOO_LARGE before anything is published."""
    env = new_envelope(sender=target.sender, subject=p["msg_subject"], payload=p["payload"],
                       in_reply_to=p["in_reply_to"], ack_requested=p["ack_requested"],
                       priority=p["priority"], test_clock=test_clock())
    return Outgoing(target=target, items=[(encode_checked(env), env.id)], batch=False,
                    reply={"id": env.id, "subject": target.subject, "bytes": payload_bytes(p["payload"])},
                    beat=p["payload"])


def batch_out(p: dict[str, Any], target: Target) -> Outgoing:
    """SendBatch's envelopes (ipc.md §7.12 step 3): empty subject, priority 0, one ``created_at``
    for the batch; one too large → E_PAYLOAD_TOO_LARGE and nothing is published."""
    payloads: list[str] = p["payloads"]
    created_at = envelope_time(test_clock())
    envs = [Envelope(id=str(uuid.uuid4()), sender=target.sender, payload=payload, created_at=created_at)
            for payload in payloads]
    return Outgoing(target=target, items=[(encode_checked(env), env.id) for env in envs], batch=True,
                    reply={"ids": [env.id for env in envs], "subject": target.subject,
                           "bytes": [payload_bytes(payload) for payload in payloads]},
                    beat=payloads[-1])


def test_clock() -> str | None:
    return os.environ.get("PPZ_TEST_CLOCK") or None


def payload_bytes(payload: str) -> int:
    return len(payload.encode("utf-8", "surrogatepass"))


# --- publishing --------------------------------------------------------------------------------


def deliver(system: System, out: Outgoing) -> dict[str, Any]:
    """Publish from the request's thread (with failover), stamp, and return the reply."""
    publish_with_failover(system, out.target.view, out.publish)
    stamp_heartbeat(system, out)
    return out.reply


async def deliver_warm(system: System, out: Outgoing) -> dict[str, Any] | None:
    """Publish on the event loop, stamp, and return the reply; None when a Send or SendBatch
    finds no stream behind the subject (the stream seen was deleted since): nothing was stored, and the
    cold path looks the stream up again."""
    view = out.target.view
    try:
        await out.publish(view.client, no_stream_fast=True)
    except js.NoStream:
        tell_streams(system, StreamGone(nc_id=view.nc_id, stream=out.target.stream))
        return None
    stamp_heartbeat(system, out)
    return out.reply


def publish_with_failover(system: System, view: ConnView, publish: Callable[[Any], Coroutine[Any, Any, Any]]) -> None:
    """Publish on ``view``'s connection; if that connection was swapped out meanwhile, publish
    once more on the new one. The envelope ids are unchanged, so JetStream's duplicate window
    stores a message that made it both times only once."""
    try:
        view.run(publish(view.client), js.PUBACK_WAIT + 2.0)
        return
    except errors.PpzError as exc:
        if exc.code not in (errors.E_NATS_UNREACHABLE, errors.E_DELIVERY_UNCONFIRMED):
            raise
        current = system.nats_box.value
        if current.nc is None or current.nc is view.nc or not current.nc.is_connected:
            raise
    current.run(publish(current.client), js.PUBACK_WAIT + 2.0)


def stamp_heartbeat(system: System, out: Outgoing) -> None:
    """A publish on a source's ``heartbeat`` pipe stamps the heartbeat cache (ipc.md §7.10 step 6)."""
    target = out.target
    if target.pipe == "heartbeat" and target.handle:
        system.heartbeats.actor_ref.tell(Beat(handle=target.handle, account_id=target.acct, payload=out.beat,
                                           arrived_at=time.time()))
