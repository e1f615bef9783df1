"""``ppz ls`` (spec/cli.md §2.10): ``List``, or ``ListWatch`` with ``--watch``; a table or JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ppz import errors, ipc
from ppz.commands.client import call, emit_lines, fail, flag_on, session_id, warn


def ls(patterns: Sequence[str], as_json: Any, long: Any, watch: Any) -> None:
    from ppz.render import indented_json, ls_warnings, render_ls

    pats = [str(p) for p in patterns]
    with_long = flag_on("long", long)
    params = {"session": session_id(), "patterns": pats, "long": with_long}
    if flag_on("watch", watch):
        try:
            reply = ipc.call_wait("ListWatch", params)
        except errors.PpzError as err:
            fail(err)
        except KeyboardInterrupt:
            raise SystemExit(0) from None
    else:
        reply = call("List", params)
    if flag_on("json", as_json):
        emit_lines([indented_json(reply)])
    else:
        emit_lines(render_ls(reply, with_long))
    for warning in ls_warnings(pats, reply):
        warn(warning)
