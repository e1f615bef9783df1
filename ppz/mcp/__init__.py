"""``ppz mcp``: the Model Context Protocol server for agent hosts (spec/agents.md §3).

A client of the daemon over the IPC socket, like the CLI: it holds no credential and never
talks to the server or NATS. ``ppz.commands.mcp`` imports this package only when ``ppz mcp``
runs (the ``mcp`` SDK, pydantic and anyio cost far more than a CLI command may).
"""

from __future__ import annotations

import logging
import os
import sys


def main(*, handle: str = "", session: str = "", watch: list[str] | None = None, channel: bool = False) -> None:
    """Serve on stdin/stdout until the host closes stdin."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="ppz mcp: %(levelname)s %(message)s")
    import anyio

    from ppz.mcp.identity import session_for
    from ppz.mcp.server import Options, build, serve_stdio

    options = Options(handle=handle, session=session_for(session, os.environ.get("PPZ_SESSION", ""), handle),
                      watch=tuple(watch or ()), channel=channel)
    anyio.run(serve_stdio, build(options))
