"""RFC 3339 timestamps as the spec writes and reads them (spec/README.md conventions).

Writers emit UTC with a ``Z`` suffix, either at second precision (``YYYY-MM-DDTHH:MM:SSZ``) or
with microseconds (``YYYY-MM-DDTHH:MM:SS.ffffffZ``, the envelope ``created_at``). Readers accept
0–9 fractional digits and any UTC offset. Pure functions; only ``re`` and ``datetime``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_RFC3339_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)

Instant = datetime | float | int


def _utc(value: Instant) -> datetime:
    """``value`` as an aware UTC datetime; a naive datetime is taken to be UTC already."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromtimestamp(value, UTC)


def format_rfc3339(value: Instant, micro: bool = False) -> str:
    """Format a datetime or unix epoch seconds as RFC 3339 in UTC with ``Z``.

    ``micro=False`` truncates to whole seconds (``2026-05-01T12:00:00Z``); ``micro=True`` writes
    six fractional digits (``2026-05-01T12:00:00.123456Z``). A naive datetime is taken as UTC.
    """
    t = _utc(value)
    text = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    return f"{text}.{t.microsecond:06d}Z" if micro else text + "Z"


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware datetime in UTC.

    Accepts ``T``/``t``, ``Z``/``z`` or a ``±HH:MM`` offset, and any number of fractional
    digits (the spec promises at most 9; more are truncated, as Go does). Fractions below a
    microsecond are truncated. Raises ValueError for anything else.
    """
    m = _RFC3339_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"invalid RFC 3339 timestamp {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    micro = int((m.group(7) or "0")[:6].ljust(6, "0"))
    tz = UTC
    if m.group(9):
        off_h, off_m = int(m.group(10)), int(m.group(11))
        if off_h > 23 or off_m > 59:
            raise ValueError(f"invalid RFC 3339 offset in {text!r}")
        offset = timedelta(hours=off_h, minutes=off_m)
        tz = timezone(-offset if m.group(9) == "-" else offset)
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"invalid RFC 3339 timestamp {text!r}: {exc}") from None


def epoch_seconds(value: Instant | str) -> float:
    """Unix epoch seconds of a datetime (naive = UTC), an RFC 3339 string or a number."""
    if isinstance(value, str):
        return parse_rfc3339(value).timestamp()
    if isinstance(value, datetime):
        return _utc(value).timestamp()
    return float(value)


def now_rfc3339_micro() -> str:
    """The current time as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (the envelope ``created_at``)."""
    return format_rfc3339(datetime.now(UTC), micro=True)
