"""Durations and times as the spec writes them (spec/README.md conventions, cli.md §1.6).

Parsing follows the README's duration grammar (Go's ``time.ParseDuration``); rendering follows
cli.md §1.6. Kept light (``re``, ``math``, ``time`` and :mod:`ppz.timestamps`) because the CLI
imports it.
"""

from __future__ import annotations

import math
import re
import time

from ppz.timestamps import Instant, epoch_seconds

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GROUP_RE = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
# Go's time.Duration is an int64 of nanoseconds; longer durations do not parse there either.
MAX_DURATION_SECONDS = (2**63 - 1) / 1e9

_NS_PER_S = 1_000_000_000
_NS_PER_MS = 1_000_000


def parse_duration(text: str) -> float:
    """Parse ``10s``, ``1h30m``, ``1.5s``, ``250ms`` into seconds.

    One or more ``<number><unit>`` groups; a leading ``-``/``+`` sign is accepted as Go's
    time.ParseDuration does, and ``0`` alone means zero. Raises ValueError on anything else,
    including a magnitude beyond Go's duration range (about 292 years).
    """
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r}")
    s = text.strip()
    sign = 1.0
    if s[:1] in ("-", "+"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _GROUP_RE.match(s, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if total > MAX_DURATION_SECONDS:
        raise ValueError(f"invalid duration {text!r}: out of range")
    return sign * total


def format_duration(seconds: float) -> str:
    """Render a duration per cli.md §1.6.

    ``0`` → ``0s``; below one second → whole milliseconds, truncated (``500ms``); otherwise
    ``[<h>h][<m>m]<s>s`` with hours when ≥ 1 h, minutes when hours appear or minutes ≥ 1, and a
    fractional part on the seconds only when they are not whole (``45s``, ``2m5s``, ``1h0m0s``,
    ``1.2s``). The value is first rounded to whole nanoseconds, Go's duration resolution. A
    negative duration renders as ``-`` followed by its magnitude. Raises ValueError for NaN and
    infinities.
    """
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {seconds!r}")
    ns = round(seconds * _NS_PER_S)
    if ns < 0:
        return "-" + format_duration(-seconds)
    if ns == 0:
        return "0s"
    if ns < _NS_PER_S:
        return f"{ns // _NS_PER_MS}ms"
    whole, frac = divmod(ns, _NS_PER_S)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs}.{frac:09d}".rstrip("0") + "s" if frac else f"{secs}s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


def _ago(count: int, unit: str) -> str:
    return f"{count} {unit}{'' if count == 1 else 's'} ago"


def relative_time(t: Instant | str, now: Instant | str | None = None) -> str:
    """Render ``now − t`` as a relative time per cli.md §1.6.

    ``t`` and ``now`` are datetimes (naive = UTC), unix epoch seconds or RFC 3339 strings;
    ``now`` defaults to the current time. Under 1 s or negative → ``just now``; then
    ``N second(s) ago``, ``N minute(s) ago``, ``N hour(s) ago``, ``N day(s) ago`` with N floored
    and the singular for 1. Raises ValueError when a string does not parse.
    """
    age = epoch_seconds(time.time() if now is None else now) - epoch_seconds(t)
    if age < 1:
        return "just now"
    if age < 60:
        return _ago(math.floor(age), "second")
    if age < 3600:
        return _ago(math.floor(age / 60), "minute")
    if age < 86400:
        return _ago(math.floor(age / 3600), "hour")
    return _ago(math.floor(age / 86400), "day")
