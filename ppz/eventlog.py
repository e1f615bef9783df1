"""The NATS event log (spec/daemon.md §8): records, ring, files, and what is derived from them.

:class:`Event` is the schema-v1 record of one thing that happened to the NATS connection.
:class:`EventLog` keeps the newest events in memory and appends every one to
``nats-events.jsonl`` (rotated at 10 MiB, two generations); ``daemon_start`` / ``daemon_stop``
also go to ``diagnostics-lifecycle.jsonl`` so that a restart can reseed the ring. It is not
thread-safe: one actor owns it.

:func:`drops_last_hour`, :func:`state_since` and :func:`detect_patterns` are pure functions over a
chronological list of events; the diagnostics reply is built from them.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson

from ppz.durations import format_duration
from ppz.home import FILE_MODE, atomic_write
from ppz.timestamps import format_rfc3339, parse_rfc3339

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RING_SIZE = 256
RESEED_TAIL = 1024
LIFECYCLE_CAP = 32
ROTATE_BYTES = 10 * 1024 * 1024
LINE_CAP = 1024 * 1024
"""Readers skip lines longer than this many bytes (newline excluded)."""

LIFECYCLE_TYPES = frozenset({"daemon_start", "daemon_stop"})

_NS = 1_000_000_000
_HOUR_NS = 3600 * _NS
_DROP_WINDOW_NS = 5 * _NS
_STORM_WINDOW_NS = 2 * _NS
_STORM_MIN_SWAPS = 3
_AUTH_WINDOW_NS = 60 * _NS
_READ_BLOCK = 64 * 1024


# --- timestamps -------------------------------------------------------------------------------

_FRACTION_RE = re.compile(r"\.([0-9]+)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _parse_at_ns(text: str) -> int:
    """Unix nanoseconds of an RFC 3339 timestamp; ValueError when ``text`` is not one.

    Nanoseconds because the reseed key is the instant at full precision, and the shared parser
    (a datetime) stops at microseconds: the digits below are read here.
    """
    micros = (parse_rfc3339(text) - _EPOCH) // _MICROSECOND
    fraction = _FRACTION_RE.search(text)
    below = int(fraction.group(1)[6:9].ljust(3, "0")) if fraction else 0
    return micros * 1000 + below


# --- the record ---------------------------------------------------------------------------------


def _str_field(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One schema-v1 event record (daemon.md §8.1); ``at`` is kept as written.

    Constructing an Event parses ``at`` once (ValueError if it is not RFC 3339) into
    ``at_ns``, which the detectors and the reseed key use.
    """

    type: str
    at: str
    caller: str = ""
    nc_id: str = ""
    jwt_exp: int = 0
    reason: str = ""
    at_ns: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "at_ns", _parse_at_ns(self.at))

    @property
    def at_epoch(self) -> float:
        """``at`` as Unix seconds."""
        return self.at_ns / _NS

    def to_json(self) -> dict[str, Any]:
        """The wire record: ``v`` first, empty optional fields omitted."""
        obj: dict[str, Any] = {"v": SCHEMA_VERSION, "type": self.type, "at": self.at}
        optional = (("caller", self.caller), ("nc_id", self.nc_id), ("jwt_exp", self.jwt_exp),
                    ("reason", self.reason))
        obj.update((name, value) for name, value in optional if value)
        return obj

    @classmethod
    def from_json(cls, obj: object) -> Event | None:
        """Decode a record; None when a reader must skip it (§8.1).

        Skipped: not an object, ``v`` not the integer 1, ``type`` or ``at`` missing or empty, or
        an ``at`` that does not parse. Unknown fields are ignored; an optional field of the
        wrong type counts as empty.
        """
        if not isinstance(obj, dict):
            return None
        version = obj.get("v")
        if type(version) is not int or version != SCHEMA_VERSION:
            return None
        type_, at = obj.get("type"), obj.get("at")
        if not isinstance(type_, str) or not type_ or not isinstance(at, str):
            return None
        jwt_exp = obj.get("jwt_exp")
        try:
            return cls(
                type=type_,
                at=at,
                caller=_str_field(obj, "caller"),
                nc_id=_str_field(obj, "nc_id"),
                jwt_exp=jwt_exp if type(jwt_exp) is int else 0,
                reason=_str_field(obj, "reason"),
            )
        except ValueError:
            return None

    def to_line(self) -> bytes:
        """The record as one compact JSON line, newline included."""
        return orjson.dumps(self.to_json(), option=orjson.OPT_APPEND_NEWLINE)


def _decode_line(line: bytes) -> Event | None:
    if not line.strip():
        return None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return Event.from_json(obj)


# --- reading the files --------------------------------------------------------------------------


def _skip_rest_of_line(f: IO[bytes]) -> None:
    while True:
        chunk = f.readline(_READ_BLOCK)
        if not chunk or chunk.endswith(b"\n"):
            return


def _lines_forward(f: IO[bytes]) -> Iterator[bytes]:
    """The lines of ``f`` (newline stripped), oldest first, skipping any over LINE_CAP.

    A long line is read in bounded pieces and dropped, never held whole.
    """
    while True:
        line = f.readline(LINE_CAP + 2)
        if not line:
            return
        if line.endswith(b"\n"):
            line = line[:-1]
        elif len(line) > LINE_CAP:
            _skip_rest_of_line(f)
            continue
        if len(line) <= LINE_CAP:
            yield line


def _lines_backward(f: IO[bytes]) -> Iterator[bytes]:
    """The lines of ``f`` newest first, skipping any over LINE_CAP, reading blocks from the end."""
    pos = f.seek(0, os.SEEK_END)
    pending: list[bytes] = []  # pieces of the current line, earliest piece last
    pending_len = 0
    oversize = False
    while pos > 0:
        step = min(_READ_BLOCK, pos)
        pos -= step
        f.seek(pos)
        block = f.read(step)
        end = len(block)
        cut = block.rfind(b"\n", 0, end)
        while cut != -1:
            piece = block[cut + 1 : end]
            if not oversize and pending_len + len(piece) <= LINE_CAP:
                yield piece + b"".join(reversed(pending))
            pending, pending_len, oversize = [], 0, False
            end = cut
            cut = block.rfind(b"\n", 0, end)
        if not oversize:
            pending.append(block[:end])
            pending_len += end
            if pending_len > LINE_CAP:
                pending, pending_len, oversize = [], 0, True
    if not oversize:
        yield b"".join(reversed(pending))


def _events(path: Path, *, backward: bool = False) -> Iterator[Event]:
    """The parseable events of ``path``; none when it is missing or cannot be read."""
    try:
        with open(path, "rb") as f:
            for line in _lines_backward(f) if backward else _lines_forward(f):
                event = _decode_line(line)
                if event is not None:
                    yield event
    except OSError:
        return


# --- the log ------------------------------------------------------------------------------------


def _rotated(path: Path, generation: int) -> Path:
    return path.with_name(f"{path.name}.{generation}")


def _append_line(path: Path, line: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _attempt(step: Callable[..., None], *args: Any) -> OSError | None:
    try:
        step(*args)
    except OSError as exc:
        return exc
    return None


class EventLog:
    """The ring of recent events and their files (daemon.md §8.3, §8.4). Not thread-safe: its
    one writer is ``NatsActor``; others read the files with the functions below.

    ``clock`` returns the current Unix time in seconds (``time.time`` by default).
    """

    def __init__(
        self,
        events_path: Path,
        lifecycle_path: Path,
        ring_size: int = RING_SIZE,
        rotate_bytes: int = ROTATE_BYTES,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.events_path = events_path
        self.lifecycle_path = lifecycle_path
        self._ring: deque[Event] = deque(maxlen=ring_size)
        self._rotate_bytes = rotate_bytes
        self._clock = clock or time.time
        self._persist_failing = False

    def record(
        self, type: str, *, caller: str = "", nc_id: str = "", jwt_exp: int = 0, reason: str = ""
    ) -> Event:
        """Stamp an event with the current time, keep it in the ring and append it to disk.

        Writing is best-effort: a failure is logged and the event stays in the ring.
        """
        event = Event(
            type=type,
            at=format_rfc3339(self._clock(), micro=True),
            caller=caller,
            nc_id=nc_id,
            jwt_exp=jwt_exp,
            reason=reason,
        )
        self._ring.append(event)
        line = event.to_line()
        # Each step on its own: a rotation that fails must not stop the append, nor a failed
        # append the lifecycle log.
        errors = [
            _attempt(self._rotate_if_full),
            _attempt(_append_line, self.events_path, line),
            _attempt(self._append_lifecycle, line) if type in LIFECYCLE_TYPES else None,
        ]
        error = next((e for e in errors if e is not None), None)
        # One warning per run of failures: a full disk must not flood the daemon's log.
        if error is not None and not self._persist_failing:
            logger.warning("cannot write the NATS event log: %s", error)
        self._persist_failing = error is not None
        return event

    def _rotate_if_full(self) -> None:
        try:
            size = os.stat(self.events_path).st_size
        except FileNotFoundError:
            return
        if size < self._rotate_bytes:
            return
        first, second = _rotated(self.events_path, 1), _rotated(self.events_path, 2)
        second.unlink(missing_ok=True)
        if first.exists():
            os.replace(first, second)
        os.replace(self.events_path, first)

    def _append_lifecycle(self, line: bytes) -> None:
        # Lines are kept as they are (not re-encoded) so nothing another writer added is lost;
        # a file that cannot be read is not replaced.
        try:
            with open(self.lifecycle_path, "rb") as f:
                kept = [raw for raw in _lines_forward(f) if raw.strip()]
        except FileNotFoundError:
            kept = []
        kept.append(line.rstrip(b"\n"))
        content = b"".join(raw + b"\n" for raw in kept[-LIFECYCLE_CAP:])
        atomic_write(self.lifecycle_path, content)

    def snapshot(self) -> list[Event]:
        """The ring, oldest first."""
        return list(self._ring)

    def reseed(self) -> None:
        """Refill the ring after a restart (§8.4); call before recording ``daemon_start``.

        All lifecycle events plus the newest RESEED_TAIL events of the active file, stable-sorted
        by time, with duplicates of (type, instant, reason) dropped — ``daemon_start`` and
        ``daemon_stop`` are in both files.
        """
        found = list(_events(self.lifecycle_path))
        found.extend(tail_events(self.events_path, RESEED_TAIL))
        found.sort(key=lambda e: e.at_ns)
        seen: set[tuple[str, int, str]] = set()
        for event in found:
            key = (event.type, event.at_ns, event.reason)
            if key not in seen:
                seen.add(key)
                self._ring.append(event)


# --- reading the files ---------------------------------------------------------------------------
# Pure functions over the files: any thread may read them while the owning actor appends.


def tail_events(events_path: Path, n: int) -> list[Event]:
    """The last ``n`` parseable events of the active file, oldest first."""
    newest_first: list[Event] = []
    if n > 0:
        for event in _events(events_path, backward=True):
            newest_first.append(event)
            if len(newest_first) >= n:
                break
    newest_first.reverse()
    return newest_first


def events_since(events_path: Path, t_epoch: float) -> list[Event]:
    """Events at or after ``t_epoch`` from ``.2``, ``.1`` and the active file, in file order."""
    paths = (_rotated(events_path, 2), _rotated(events_path, 1), events_path)
    return [e for path in paths for e in _events(path) if e.at_epoch >= t_epoch]


def count_on_disk(events_path: Path) -> int:
    """The number of parseable lines in the active file."""
    return sum(1 for _ in _events(events_path))


# --- derived values -----------------------------------------------------------------------------


def _swap_caused(events: Sequence[Event], index: int) -> bool:
    """Whether disconnect ``index`` closed a connection a swap had just replaced (§8.5)."""
    disconnect = events[index]
    if not disconnect.nc_id:
        return False
    marker = f"old={disconnect.nc_id} "
    for j in range(index - 1, -1, -1):
        earlier = events[j]
        if disconnect.at_ns - earlier.at_ns > _DROP_WINDOW_NS:
            return False
        if earlier.type == "swap" and marker in earlier.reason:
            return True
    return False


def drops_last_hour(events: Sequence[Event], now_epoch: float) -> int:
    """Disconnects in the hour up to ``now_epoch`` that were real drops (§8.5).

    Not counted: a disconnect of a connection that a swap replaced at most 5 s earlier, and one
    recorded by an in-place rotation (caller ``rotate``).
    """
    cutoff_ns = round(now_epoch * _NS) - _HOUR_NS
    return sum(
        1
        for i, e in enumerate(events)
        if e.type == "disconnect"
        and e.at_ns >= cutoff_ns
        and e.caller != "rotate"
        and not _swap_caused(events, i)
    )


_SINCE_TYPES = {
    "connected": frozenset({"connect", "reconnect"}),
    "disconnected": frozenset({"disconnect", "closed", "daemon_start"}),
}


def state_since(events: Sequence[Event], nats_state: str | None) -> Event | None:
    """The event that put the connection into ``nats_state`` (§8.6), or None.

    Its ``at`` is the state's "since" and its type the state's entry. An in-place rotation's
    reconnect does not restart the connected clock.
    """
    types = _SINCE_TYPES.get(nats_state or "")
    if types is None:
        return None
    for event in reversed(events):
        if event.type in types and not (nats_state == "connected" and event.caller == "rotate"):
            return event
    return None


def _round_ns(value: int, unit: int) -> int:
    """``value`` rounded to a multiple of ``unit``, halves away from zero (Go's Duration.Round)."""
    magnitude = (abs(value) + unit // 2) // unit * unit
    return magnitude if value >= 0 else -magnitude


def _burst_swap_storms(events: Sequence[Event]) -> Iterator[tuple[Event, str]]:
    i = 0
    while i < len(events):
        first = events[i]
        if first.type != "swap":
            i += 1
            continue
        swaps: list[Event] = []
        last = i
        j = i
        while j < len(events) and events[j].at_ns - first.at_ns <= _STORM_WINDOW_NS:
            if events[j].type == "swap":
                swaps.append(events[j])
                last = j
            j += 1
        if len(swaps) < _STORM_MIN_SWAPS:
            i += 1
            continue
        width = _round_ns(swaps[-1].at_ns - swaps[0].at_ns, _NS // 10) / _NS
        callers = ", ".join(dict.fromkeys(s.caller or "?" for s in swaps))
        yield first, (
            f"{len(swaps)} swaps in {format_duration(width)} — concurrent NATS connection "
            f"mutation (callers: {callers}); see docs/diagnostics.md#burst-swap-storm"
        )
        i = last + 1


# nats-py closes an expired connection with "nats: user authentication expired".
_AUTH_CLOSE_REASONS = ("authorization violation", "authentication expired")


def _post_rotation_auth_violations(events: Sequence[Event]) -> Iterator[tuple[Event, str]]:
    last_disconnect: Event | None = None
    for event in events:
        if event.type == "disconnect":
            last_disconnect = event
            continue
        if event.type != "closed" or not any(text in event.reason.lower() for text in _AUTH_CLOSE_REASONS):
            continue
        disconnect = last_disconnect
        if disconnect is None or disconnect.jwt_exp == 0:
            continue
        off_ns = abs(disconnect.at_ns - disconnect.jwt_exp * _NS)
        if off_ns > _AUTH_WINDOW_NS:
            continue
        yield disconnect, (
            f"server-kick at jwt_exp ±{_round_ns(off_ns, _NS) // _NS}s → stale-jwt reconnect "
            "rejected; proactive rotate did not fire in time. "
            "See docs/diagnostics.md#post-rotation-auth-violation"
        )


def detect_patterns(events: Sequence[Event]) -> list[dict[str, str]]:
    """Hits of the two detectors (§8.7) over chronological ``events``, in time order.

    Each hit is ``{"name", "at", "detail"}`` with ``at`` the triggering event's timestamp.
    """
    found = [("burst-swap-storm", e, d) for e, d in _burst_swap_storms(events)]
    found += [("post-rotation-auth-violation", e, d) for e, d in _post_rotation_auth_violations(events)]
    found.sort(key=lambda hit: hit[1].at_ns)
    return [{"name": name, "at": e.at, "detail": detail} for name, e, detail in found]
