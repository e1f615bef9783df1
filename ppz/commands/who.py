"""``ppz who`` (spec/cli.md §2.6): presence from the daemon's heartbeat cache, filtered."""

from __future__ import annotations

from typing import Any

from ppz.commands.client import call, colour_enabled, emit_lines, flag_on


def who(as_json: Any, online: Any, stale: Any, offline: Any, harness: Any, owner: Any) -> None:
    from ppz.render import filter_who, indented_json, render_who, who_entries

    wanted = [name for name, value in (("online", online), ("stale", stale), ("offline", offline))
              if flag_on(name, value)]
    json_output = flag_on("json", as_json)
    entries = filter_who(who_entries(call("Who", {})), wanted,
                         None if harness is None else str(harness), None if owner is None else str(owner))
    if json_output:
        emit_lines([indented_json(entries)])
    else:
        emit_lines(render_who(entries, colour_enabled()))
