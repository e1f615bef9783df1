"""Presence status of a heartbeat row (spec/daemon.md §7.4), shared by ``ppz who`` (filters and
colours) and anything else that classifies beats. Pure; standard library only.
"""

from __future__ import annotations

import json
from typing import Any

from ppz.timestamps import epoch_seconds

ONLINE = "online"
STALE = "stale"
OFFLINE = "offline"
STATUSES = (ONLINE, STALE, OFFLINE)

DEFAULT_INTERVAL = 60.0


def heartbeat_payload(payload: Any) -> dict[str, Any] | None:
    """The heartbeat payload (nats.md §10) as an object, or None when it is not a JSON object."""
    if isinstance(payload, dict):
        return payload
    if not isinstance(payload, str):
        return None
    try:
        obj = json.loads(payload)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def beat_interval(beat: dict[str, Any] | None) -> float:
    """``interval_sec`` of a payload when it is a number > 0, else 60 s."""
    value = beat.get("interval_sec") if beat else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return DEFAULT_INTERVAL
    return float(value)


def classify(arrived_at: Any, interval: float, now: float) -> str:
    """``online``, ``stale`` or ``offline`` (first match wins):

    never seen (no or unparseable arrival) → offline; age < 0 (clock skew) → online;
    ``2·age < 3·interval`` → online; ``age < 3·interval`` → stale; otherwise offline.
    """
    if not arrived_at:
        return OFFLINE
    try:
        age = now - epoch_seconds(arrived_at)
    except (TypeError, ValueError, OverflowError):
        return OFFLINE
    if age < 0 or 2 * age < 3 * interval:
        return ONLINE
    if age < 3 * interval:
        return STALE
    return OFFLINE
