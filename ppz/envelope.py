"""The message envelope (spec/nats.md §5) and the IPC ReadMessage built from it (ipc.md §3).

The envelope is the JSON object published as every NATS message body. Writers serialise it as
compact JSON with non-ASCII written as UTF-8; readers ignore unknown fields, default missing or
wrongly typed fields to empty, and treat a priority outside 0..3 as medium. Pure code: the only
impure helper is :func:`new_envelope`, which draws a UUID and reads the clock.

This module uses orjson and belongs to the daemon; the CLI must not import it.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from ppz.errors import E_PAYLOAD_TOO_LARGE, PpzError
from ppz.timestamps import format_rfc3339, now_rfc3339_micro, parse_rfc3339

MAX_ENVELOPE_BYTES = 65536

PRIORITY_UNSET = 0
PRIORITY_HIGH = 1
PRIORITY_MEDIUM = 2
PRIORITY_LOW = 3

_STRING_FIELDS = ("id", "sender", "subject", "payload", "created_at", "in_reply_to")
_LONE_SURROGATE_RE = re.compile("[\ud800-\udfff]")


class EnvelopeError(ValueError):
    """A message body that is not a decodable envelope (not JSON, or not a JSON object)."""


def effective_priority(priority: int) -> int:
    """The tier a priority sorts in: 1 high, 3 low, everything else (0, 2, out of range) 2."""
    return priority if priority in (PRIORITY_HIGH, PRIORITY_LOW) else PRIORITY_MEDIUM


def _str_field(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    return value if isinstance(value, str) else ""


def _without_lone_surrogates(value: Any) -> Any:
    """Replace lone surrogates (which UTF-8 cannot carry) with U+FFFD, as Go's encoder does."""
    if isinstance(value, str):
        return _LONE_SURROGATE_RE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {k: _without_lone_surrogates(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """One message body: the eight spec fields plus the pass-through ``schedule_id``."""

    id: str = ""
    sender: str = ""
    subject: str = ""
    payload: str = ""
    created_at: str = ""
    in_reply_to: str = ""
    ack_requested: bool = False
    priority: int = PRIORITY_UNSET
    schedule_id: str = ""

    def to_json(self) -> dict[str, Any]:
        """The wire object: every field in spec order, ``schedule_id`` only when non-empty."""
        obj: dict[str, Any] = {
            "id": self.id,
            "sender": self.sender,
            "subject": self.subject,
            "payload": self.payload,
            "created_at": self.created_at,
            "in_reply_to": self.in_reply_to,
            "ack_requested": self.ack_requested,
            "priority": self.priority,
        }
        if self.schedule_id:
            obj["schedule_id"] = self.schedule_id
        return obj

    def encode(self) -> bytes:
        """Compact JSON (``,``/``:`` without spaces), non-ASCII as UTF-8, no trailing newline.

        Lone surrogates, which cannot be written as UTF-8, become U+FFFD.
        """
        obj = self.to_json()
        try:
            return orjson.dumps(obj)
        except orjson.JSONEncodeError:
            return orjson.dumps(_without_lone_surrogates(obj))

    @classmethod
    def from_json(cls, obj: object) -> Envelope:
        """Decode a parsed body leniently; raises EnvelopeError when it is not a JSON object."""
        if not isinstance(obj, dict):
            raise EnvelopeError(f"envelope is not a JSON object (got {type(obj).__name__})")
        strings = {name: _str_field(obj, name) for name in _STRING_FIELDS}
        ack = obj.get("ack_requested")
        priority = obj.get("priority")
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 3:
            priority = PRIORITY_UNSET
        return cls(
            **strings,
            ack_requested=ack if isinstance(ack, bool) else False,
            priority=priority,
            schedule_id=_str_field(obj, "schedule_id"),
        )

    @classmethod
    def decode(cls, data: bytes | str) -> Envelope:
        """Decode a message body; raises EnvelopeError when it is not a JSON object."""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise EnvelopeError(f"envelope is not valid JSON: {exc}") from None
        return cls.from_json(obj)


def check_size(data: bytes) -> bytes:
    """Return ``data`` if it is at most 65 536 bytes, else raise ``E_PAYLOAD_TOO_LARGE``."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise PpzError(E_PAYLOAD_TOO_LARGE)
    return data


def encode_checked(env: Envelope) -> bytes:
    """Encode ``env`` and enforce the size cap on the encoded bytes (nats.md §5)."""
    return check_size(env.encode())


def envelope_time(test_clock: str | None = None) -> str:
    """``created_at`` for a new envelope: now, or the ``PPZ_TEST_CLOCK`` instant when it parses.

    Either way the result is written as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; an unparseable test
    clock is ignored.
    """
    if test_clock:
        try:
            return format_rfc3339(parse_rfc3339(test_clock), micro=True)
        except ValueError:
            pass
    return now_rfc3339_micro()


def new_envelope(
    *,
    sender: str = "",
    subject: str = "",
    payload: str = "",
    in_reply_to: str = "",
    ack_requested: bool = False,
    priority: int = PRIORITY_UNSET,
    test_clock: str | None = None,
) -> Envelope:
    """A fresh envelope with a random UUID v4 ``id`` and ``created_at`` from :func:`envelope_time`."""
    return Envelope(
        id=str(uuid.uuid4()),
        sender=sender,
        subject=subject,
        payload=payload,
        created_at=envelope_time(test_clock),
        in_reply_to=in_reply_to,
        ack_requested=ack_requested,
        priority=priority,
    )


def second_precision(created_at: str) -> str:
    """``created_at`` in UTC truncated to ``YYYY-MM-DDTHH:MM:SSZ``.

    A value that does not parse is returned unchanged (empty stays empty), so a reader still
    sees what the writer sent; ``reread --since`` drops such messages.
    """
    try:
        return format_rfc3339(parse_rfc3339(created_at))
    except ValueError:
        return created_at


def read_message(env: Envelope) -> dict[str, Any]:
    """The IPC ReadMessage of ``env`` (ipc.md §3): the envelope's wire object with
    ``created_at`` at second precision."""
    obj = env.to_json()
    obj["created_at"] = second_precision(env.created_at)
    return obj
