"""Durations and times as the spec writes them (spec/README.md conventions, cli.md §1.6)."""

from __future__ import annotations

import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GROUP_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Parse ``10s``, ``1h30m``, ``1.5s``, ``250ms`` into seconds.

    One or more ``<number><unit>`` groups; a leading ``-``/``+`` sign is accepted as Go's
    time.ParseDuration does, and ``0`` alone means zero. Raises ValueError on anything else.
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
    return sign * total
