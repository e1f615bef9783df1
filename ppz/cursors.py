"""Cursor arithmetic of spec/nats.md §8: entries, monotonic advance, effective cursor, unread.

Pure code, no I/O: the files that hold cursors are read and written by
:class:`ppz.home.CursorStore`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeGuard


def _is_count(value: object) -> TypeGuard[int]:
    """A JSON integer ≥ 0 (``bool`` is an ``int`` in Python, but not in JSON)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True, slots=True)
class CursorEntry:
    """The highest stream sequence delivered by ``read`` and the stream's creation time
    (unix nanoseconds, 0 = unknown) when it was delivered."""

    seq: int
    created: int = 0

    def to_json(self) -> dict[str, int]:
        return {"seq": self.seq, "created": self.created}

    @classmethod
    def from_json(cls, value: object) -> CursorEntry:
        """Decode ``{"seq": N, "created": T}`` or the legacy bare integer ``N`` (created 0).

        A missing ``created`` reads as 0; unknown fields are ignored. Anything else (negative or
        non-integer numbers, other types) raises :class:`ValueError`.
        """
        if _is_count(value):
            return cls(value, 0)
        if isinstance(value, dict):
            seq = value.get("seq")
            created = value.get("created", 0)
            if _is_count(seq) and _is_count(created):
                return cls(seq, created)
        raise ValueError(f"not a cursor entry: {value!r}")


def advance(entry: CursorEntry | None, seq: int, created: int) -> CursorEntry | None:
    """The entry after a read delivered up to ``seq`` of the stream created at ``created``,
    or ``None`` when the stored entry must not change.

    ``seq`` 0 (or below) is ignored. Within one stream incarnation (same ``created``) the cursor
    never moves backwards; a different ``created`` (new incarnation, or a legacy entry with
    created 0) is overwritten.
    """
    if seq <= 0:
        return None
    if entry is not None and entry.created == created and seq <= entry.seq:
        return None
    return CursorEntry(seq, created)


def effective(entry: CursorEntry | None, stream_created: int, last_seq: int) -> int:
    """The cursor to use against a stream whose creation time and last sequence are known.

    0 when there is no entry, when the stream was destroyed and recreated (both creation times
    known and different), or when the stream was reset (cursor beyond its last sequence).
    """
    if entry is None or entry.seq == 0:
        return 0
    if entry.created and stream_created and entry.created != stream_created:
        return 0
    if entry.seq > last_seq:
        return 0
    return entry.seq


def unread(last_seq: int, effective: int, total: int) -> int:
    """Messages after the effective cursor, capped by the messages the stream still holds
    (messages removed by retention never count as unread)."""
    if last_seq <= effective:
        return 0
    return min(last_seq - effective, total)
