"""Send and SendBatch (spec/ipc.md §7.10, §7.12): the warm path on the event loop, the cold
path on the request's thread.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from ppz import errors
from ppz import jetstream as js
from ppz.actors.nats import ConnView
from ppz.envelope import (
    Envelope,
    encode_checked,
    envelope_time,
    new_envelope,
)
from ppz.handlers.target import Target, resolve_target, tell_streams, warm_target
from ppz.messages import Beat, StreamGone
from ppz.system import System

# --- Send / SendBatch (ipc.md §7.10, §7.12) ----------------------------------------------------


def test_clock() -> str | None:
    return os.environ.get("PPZ_TEST_CLOCK") or None


def stamp_heartbeat(system: System, target: Target, payload: str) -> None:
    if target.pipe == "heartbeat" and target.handle:
        system.heartbeats.actor_ref.tell(Beat(handle=target.handle, account_id=target.acct, payload=payload,
                                           arrived_at=time.time()))


def publish_with_failover(system: System, view: ConnView, publish: Callable[[Any], Any]) -> None:
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


def send(system: System, p: dict[str, Any]) -> dict[str, Any]:
    check_send(p)
    target = resolve_target(system, p)
    env = new_envelope(sender=target.sender, subject=p["msg_subject"], payload=p["payload"],
                       in_reply_to=p["in_reply_to"], ack_requested=p["ack_requested"],
                       priority=p["priority"], test_clock=test_clock())
    data = encode_checked(env)
    publish_with_failover(system, target.view, lambda nc: js.publish(nc, target.subject, data, env.id))
    stamp_heartbeat(system, target, p["payload"])
    return {"id": env.id, "subject": target.subject, "bytes": payload_bytes(p["payload"])}


def check_send(p: dict[str, Any]) -> None:
    """Send's first two checks, before anything else (ipc.md §7.10 steps 1–2)."""
    if not 0 <= p["priority"] <= 3:
        raise errors.PpzError(errors.E_INVALID_PRIORITY)
    if p["msg_subject"].startswith("ack:"):
        raise errors.PpzError(errors.E_INVALID_SUBJECT)


async def send_fast(system: System, p: dict[str, Any]) -> dict[str, Any] | None:
    """Send on the event loop, when the warm path applies (see ``warm_target``)."""
    check_send(p)
    target = warm_target(system, p)
    if target is None:
        return None
    env = new_envelope(sender=target.sender, subject=p["msg_subject"], payload=p["payload"],
                       in_reply_to=p["in_reply_to"], ack_requested=p["ack_requested"],
                       priority=p["priority"], test_clock=test_clock())
    data = encode_checked(env)
    try:
        await js.publish(target.view.client, target.subject, data, env.id, no_stream_fast=True)
    except js.NoStream:
        tell_streams(system, StreamGone(nc_id=target.view.nc_id, stream=target.stream))
        return None  # the full path looks the stream up again (and publishes, same id)
    stamp_heartbeat(system, target, p["payload"])
    return {"id": env.id, "subject": target.subject, "bytes": payload_bytes(p["payload"])}


def payload_bytes(payload: str) -> int:
    return len(payload.encode("utf-8", "surrogatepass"))


def batch_envelopes(sender: str, payloads: list[str]) -> list[Envelope]:
    """SendBatch's envelopes: empty subject, priority 0, one ``created_at`` for the batch."""
    created_at = envelope_time(test_clock())
    return [Envelope(id=str(uuid.uuid4()), sender=sender, payload=payload, created_at=created_at)
            for payload in payloads]


def batch_reply(target: Target, envs: list[Envelope], payloads: list[str]) -> dict[str, Any]:
    return {
        "ids": [env.id for env in envs],
        "subject": target.subject,
        "bytes": [payload_bytes(payload) for payload in payloads],
    }


async def send_batch_fast(system: System, p: dict[str, Any]) -> dict[str, Any] | None:
    """SendBatch on the event loop, when the warm path applies (see ``warm_target``)."""
    payloads: list[str] = p["payloads"]
    if not payloads:
        return {"ids": [], "subject": "", "bytes": []}
    target = warm_target(system, {**p, "sender": ""})
    if target is None:
        return None
    envs = batch_envelopes(target.sender, payloads)
    items = [(encode_checked(env), env.id) for env in envs]
    await js.publish_batch(target.view.client, target.subject, items)
    stamp_heartbeat(system, target, payloads[-1])
    return batch_reply(target, envs, payloads)


def send_batch(system: System, p: dict[str, Any]) -> dict[str, Any]:
    payloads: list[str] = p["payloads"]
    if not payloads:
        return {"ids": [], "subject": "", "bytes": []}
    target = resolve_target(system, p)
    envs = batch_envelopes(target.sender, payloads)
    items = [(encode_checked(env), env.id) for env in envs]
    publish_with_failover(system, target.view, lambda nc: js.publish_batch(nc, target.subject, items))
    stamp_heartbeat(system, target, payloads[-1])
    return batch_reply(target, envs, payloads)
