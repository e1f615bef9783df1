"""Stream configuration of a pipe (spec/nats.md §3–4, server-api.md §4). Pure functions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ppz import names

DEFAULT_TTL_SECONDS = 24 * 3600
DEFAULT_MAX_MSGS = 5000
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DUPLICATE_WINDOW_SECONDS = 120
NANOS = 1_000_000_000
# max_age is sent in nanoseconds and must fit an int64.
MAX_TTL_SECONDS = (2**63 - 1) // NANOS
MAX_LIMIT = 2**63 - 1
RETENTION_FIELDS = ("ttl_seconds", "max_msgs", "max_bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class Retention:
    """Retention of one pipe; ``None`` = not set (the stored value, else the default)."""

    ttl_seconds: int | None = None
    max_msgs: int | None = None
    max_bytes: int | None = None

    def is_empty(self) -> bool:
        return self.ttl_seconds is None and self.max_msgs is None and self.max_bytes is None

    def over(self, base: Retention) -> Retention:
        """These values where set, else ``base``'s."""
        return Retention(
            ttl_seconds=self.ttl_seconds if self.ttl_seconds is not None else base.ttl_seconds,
            max_msgs=self.max_msgs if self.max_msgs is not None else base.max_msgs,
            max_bytes=self.max_bytes if self.max_bytes is not None else base.max_bytes,
        )

    def resolved(self) -> Retention:
        """Every field set: unset ones take the defaults of nats.md §4."""
        return self.over(DEFAULTS)

    def to_json(self) -> dict[str, int | None]:
        return {"ttl_seconds": self.ttl_seconds, "max_msgs": self.max_msgs, "max_bytes": self.max_bytes}


DEFAULTS = Retention(ttl_seconds=DEFAULT_TTL_SECONDS, max_msgs=DEFAULT_MAX_MSGS, max_bytes=DEFAULT_MAX_BYTES)


def invalid_retention_field(retention: Retention) -> str | None:
    """The first field outside its valid range: ``ttl_seconds ≥ 0``; ``max_msgs`` and
    ``max_bytes`` ≥ 1 or -1. ``None`` when all are valid (unset fields are valid)."""
    ttl = retention.ttl_seconds
    if ttl is not None and not 0 <= ttl <= MAX_TTL_SECONDS:
        return "ttl_seconds"
    for field in ("max_msgs", "max_bytes"):
        value = getattr(retention, field)
        if value is not None and not (value == -1 or 1 <= value <= MAX_LIMIT):
            return field
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class PipeRef:
    """Where one pipe lives: ``handle`` empty for an uncollared pipe."""

    manifold: str
    handle: str
    name: str

    def subject(self, acct: str) -> str:
        return names.subject(acct, self.manifold, self.handle, self.name)

    def stream_name(self, acct: str) -> str:
        return names.stream_name(acct, self.manifold, self.handle, self.name)


def stream_config(acct: str, pipe: PipeRef, retention: Retention, *, replicas: int = 1) -> dict[str, Any]:
    """The JetStream stream configuration (``$JS.API.STREAM.CREATE`` body) of a pipe."""
    r = retention.resolved()
    assert r.ttl_seconds is not None and r.max_msgs is not None and r.max_bytes is not None
    max_age = r.ttl_seconds * NANOS
    # JetStream refuses a duplicate window longer than the max age.
    window = DUPLICATE_WINDOW_SECONDS * NANOS
    if max_age:
        window = min(window, max_age)
    return {
        "name": pipe.stream_name(acct),
        "subjects": [pipe.subject(acct)],
        "retention": "limits",
        "max_consumers": -1,
        "max_msgs": r.max_msgs,
        "max_bytes": r.max_bytes,
        "max_age": max_age,
        "max_msgs_per_subject": -1,
        "max_msg_size": -1,
        "storage": "file",
        "discard": "old",
        "num_replicas": replicas,
        "duplicate_window": window,
    }
