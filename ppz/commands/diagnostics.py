"""``ppz diagnostics`` (spec/cli.md §2.5): the ``Diag`` reply rendered or as JSON; ``--bundle``
writes the bug-report archive (``ppz.commands.bundle``)."""

from __future__ import annotations

import time
from typing import Any

from ppz.commands.client import call, duration_flag, emit_lines, flag_on


def diag_params(since: Any) -> dict[str, Any]:
    if since is None:
        return {}
    return {"since_unix": int(time.time() - duration_flag("since", since))}


def diagnostics(as_json: Any, since: Any, bundle: Any) -> None:
    from ppz.render import indented_json, render_diagnostics

    params = diag_params(since)
    if flag_on("bundle", bundle):
        from ppz.commands.bundle import write_bundle

        write_bundle(params)
        return
    reply = call("Diag", params)
    if flag_on("json", as_json):
        emit_lines([indented_json(reply)])
    else:
        emit_lines(render_diagnostics(reply, "" if since is None else str(since)))
