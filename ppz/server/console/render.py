"""What the console shows of a message, a pipe and a presence beat. Pure functions: no I/O.

Messages are untrusted. The values built here are plain text; templates escape them
(autoescape) and the page script only ever sets ``textContent``. Control characters (ANSI
escapes, bells, carriage returns) are shown as their Unicode control pictures, so a payload
cannot drive a terminal-like display or hide text.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from ppz import presence
from ppz.envelope import PRIORITY_HIGH, PRIORITY_LOW, PRIORITY_MEDIUM, PRIORITY_UNSET, Envelope
from ppz.render import qualified
from ppz.timestamps import epoch_seconds

PREVIEW_CHARS = 80
_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
PRIORITY_WORDS = {"": PRIORITY_UNSET, "high": PRIORITY_HIGH, "medium": PRIORITY_MEDIUM, "low": PRIORITY_LOW}
BADGES = {PRIORITY_HIGH: "P1", PRIORITY_LOW: "P3"}


def visible_text(text: str) -> str:
    """``text`` with every control character but newline and tab as its control picture
    (ESC → ␛, DEL → ␡)."""
    return _CONTROL_RE.sub(lambda m: chr(0x2421) if m.group() == "\x7f" else chr(0x2400 + ord(m.group())), text)


def clock(created_at: str) -> str:
    """``HH:MM:SS`` (UTC) of a timestamp; ``--:--:--`` when it does not parse."""
    try:
        seconds = epoch_seconds(created_at)
    except (TypeError, ValueError, OverflowError):
        return "--:--:--"
    return time.strftime("%H:%M:%S", time.gmtime(int(seconds)))


def parse_priority(text: str) -> int | None:
    """A send box priority (``high``/``medium``/``low``, ``0``..``3`` or empty) → 0..3, else None."""
    text = text.strip().lower()
    if text in PRIORITY_WORDS:
        return PRIORITY_WORDS[text]
    if text in ("0", "1", "2", "3"):
        return int(text)
    return None


def message_view(seq: int, env: Envelope) -> dict[str, Any]:
    """One message as the console shows it, like ``ppz read``'s tabular form: time, sender,
    priority badge, ``[subject]`` and payload; an ``ack:`` subject is a receipt
    (``ack:read → <last 8 of in_reply_to>``) and shows no payload."""
    receipt = env.subject.startswith("ack:")
    return {
        "seq": seq,
        "id": env.id,
        "time": clock(env.created_at),
        "created_at": visible_text(env.created_at),
        "sender": visible_text(env.sender) or "-",
        "badge": BADGES.get(env.priority, ""),
        "subject": visible_text(env.subject),
        "payload": "" if receipt else visible_text(env.payload),
        "receipt": f"{visible_text(env.subject)} → {visible_text(env.in_reply_to[-8:])}" if receipt else "",
    }


def preview(text: str) -> str:
    """The first line of a payload, at most 80 characters."""
    first = visible_text(text).split("\n", 1)[0]
    return first if len(first) <= PREVIEW_CHARS else first[: PREVIEW_CHARS - 1] + "…"


@dataclass(frozen=True, slots=True, kw_only=True)
class PipeEntry:
    """One pipe of the account, addressed by the name ``ppz ls`` shows."""

    manifold: str
    handle: str
    pipe: str

    @property
    def name(self) -> str:
        return qualified(self.manifold, self.handle, self.pipe)


def presence_row(handle: str, manifold: str, beat_payload: Any, arrived_at: str, now: float) -> dict[str, Any]:
    """A ``who`` row: handle, status (online/stale/offline), harness, model, host, last beat."""
    beat = presence.heartbeat_payload(beat_payload) or {}
    status = presence.classify(arrived_at, presence.beat_interval(beat), now)
    return {
        "handle": qualified(manifold, handle),
        "status": status,
        "harness": visible_text(str(beat.get("harness") or "")),
        "model": visible_text(str(beat.get("model") or "")),
        "host": visible_text(str(beat.get("hostname") or "")),
        "state": visible_text(str(beat.get("agent_state") or "")),
        "last": clock(arrived_at) if arrived_at else "",
    }
