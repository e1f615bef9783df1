"""Diag and Who (spec/ipc.md §7.19, §7.20): they work logged out and without NATS."""

from __future__ import annotations

import time
from typing import Any

from ppz import errors
from ppz.eventlog import count_on_disk, detect_patterns, drops_last_hour, events_since, state_since
from ppz.system import System, list_sources
from ppz.timestamps import format_rfc3339

# --- Diag and Who (ipc.md §7.19, §7.20) ------------------------------------------------------------


def diag(system: System, p: dict[str, Any]) -> dict[str, Any]:
    """Works logged out and without NATS: everything comes from memory and the log files."""
    ring = system.nats.events().get()
    since_unix = p["since_unix"]
    events = events_since(system.home.events, float(since_unix)) if since_unix > 0 else ring
    view = system.nats_box.value
    nats_state = view.state()
    summary: dict[str, Any] = {}
    if nats_state:
        summary["state"] = nats_state
        since = state_since(ring, nats_state)
        if since is not None:
            summary["state_since"] = since.at
    if view.url:
        summary["url"] = view.url
    refresh = system.refresh_box.value
    if refresh.last_refresh_at:
        summary["refresh_last_at"] = format_rfc3339(refresh.last_refresh_at)
    if refresh.exchanged and refresh.exp:
        summary["refresh_next_due_at"] = format_rfc3339(refresh.exp - refresh.lead)
    reply: dict[str, Any] = {
        "summary": summary,
        "patterns": detect_patterns(events),
        "nats_drops_last_hour": drops_last_hour(ring, time.time()),
        "nats_events": [e.to_json() for e in events],
        "on_disk_count": count_on_disk(system.home.events),
    }
    if nats_state:
        reply["nats_state"] = nats_state
    return reply


def who(system: System, p: dict[str, Any]) -> dict[str, Any]:
    creds = system.creds()
    if creds is None or not creds.account_id:
        return {"entries": []}
    rows = system.heartbeats.snapshot(creds.account_id).get()
    owners: dict[str, str] = {}
    if rows:
        try:
            owners = {s.handle: s.created_by for s in list_sources(system, creds)}
        except errors.PpzError:
            owners = {}
    entries = []
    for row in rows:
        entry: dict[str, Any] = {"handle": row.handle}
        if owners.get(row.handle):
            entry["owner"] = owners[row.handle]
        entry["payload"] = row.payload
        entry["arrived_at"] = format_rfc3339(row.arrived_at, micro=True)
        entries.append(entry)
    return {"entries": entries}
