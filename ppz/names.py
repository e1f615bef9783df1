"""Names, subjects, stream names and cursor keys (spec/nats.md §1–3, §8). Pure functions."""

from __future__ import annotations

import re
import uuid

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")

RESERVED_HANDLES = frozenset({"broadcast", "inbox", "stdin", "stdout", "stdctrl", "system", "db"})
RESERVED_PIPES_FOR_CREATE = frozenset({"system", "db", "inbox", "heartbeat"})
AUTO_PROVISIONED = frozenset({"broadcast", "inbox", "stdin", "stdout", "stdctrl", "system", "heartbeat"})

KIND_MESSAGE = "message"
KIND_PTY = "pty"
KINDS = (KIND_MESSAGE, KIND_PTY)
AUTO_PIPES: dict[str, tuple[str, ...]] = {
    KIND_MESSAGE: ("inbox",),
    KIND_PTY: ("heartbeat", "inbox", "stdctrl", "stdin", "stdout", "system"),
}

STREAM_PREFIXES = ("pipe_", "presence_", "source_")


def valid_name(name: str) -> bool:
    """The name regex (handles, manifold segments, pipe names)."""
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def valid_handle(handle: str) -> bool:
    """Handle validation: regex and not a reserved handle."""
    return valid_name(handle) and handle not in RESERVED_HANDLES


def valid_pipe(pipe: str) -> bool:
    """Pipe validation: regex only (reads, sends, PipeSet)."""
    return valid_name(pipe)


def invalid_manifold_segment(manifold: str) -> str | None:
    """The first segment of ``manifold`` that fails handle validation, or None if all pass.

    The empty manifold (root) is valid. An empty segment (``a..b``) is returned as ``""``.
    """
    if manifold == "":
        return None
    for segment in manifold.split("."):
        if not valid_handle(segment):
            return segment
    return None


def auto_pipes(kind: str) -> tuple[str, ...]:
    """Auto-pipes of a source kind, sorted; unknown kinds have none."""
    return AUTO_PIPES.get(kind, ())


def orgshort(acct: str) -> str:
    """The first 8 hex characters of the account UUID with hyphens removed."""
    return acct.replace("-", "")[:8]


def is_uuid(value: str) -> bool:
    """True when ``value`` parses as a UUID."""
    try:
        uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return False
    return True


def subject(acct: str, manifold: str, handle: str, pipe: str) -> str:
    """The NATS subject of a pipe; a source's heartbeat goes to the presence subject."""
    if pipe == "heartbeat" and handle:
        return acct + "._presence" + ("." + manifold if manifold else "") + "." + handle
    return acct + ("." + manifold if manifold else "") + ("." + handle if handle else "") + "." + pipe


def presence_wildcard(acct: str) -> str:
    """The presence subscription subject ``<acct>._presence.>``."""
    return acct + "._presence.>"


def account_wildcard(acct: str) -> str:
    """``<acct>.>``: the watch subscription and the stream-listing filter."""
    return acct + ".>"


def stream_name(acct: str, manifold: str, handle: str, pipe: str) -> str:
    """The JetStream stream name of a pipe."""
    m = "_" + manifold.replace(".", "_") if manifold else ""
    if pipe == "heartbeat" and handle:
        return "presence_" + orgshort(acct) + m + "_" + handle
    return "pipe_" + orgshort(acct) + m + ("_" + handle if handle else "") + "_" + pipe


def cursor_key(acct: str, manifold: str, handle: str, pipe: str) -> str:
    """Cursor key: collared ``<acct>.<handle>.<pipe>`` (no manifold); uncollared
    ``uncollared:<full subject>``."""
    if handle:
        return f"{acct}.{handle}.{pipe}"
    return "uncollared:" + subject(acct, manifold, "", pipe)


def join_path(manifold: str, name: str) -> str:
    """``path(m, x)`` of the collision rules: ``m.x``, or ``x`` at root."""
    return f"{manifold}.{name}" if manifold else name
