"""``ppz mcp`` (spec/agents.md §3): run the MCP server on stdin/stdout, or print how to register
it with an agent host (``ppz mcp install --claude|--codex``).

Parsed with ``argparse`` before Fire sees anything (``--as`` is a Python keyword and ``--watch``
repeats). The server itself (``ppz.mcp``, with the ``mcp`` SDK, pydantic and anyio) is imported
only here, when ``ppz mcp`` runs, so every other command starts as fast as before.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence

from ppz.commands.client import UsageError

SERVE_HELP = """\
Run the ppz MCP server for an agent host on stdin/stdout (stdout carries only MCP messages;
logs go to stderr). The host starts it, one process per agent session.

Tools: whoami, send, read, reread, list, who, create_pipe. Resource ppz://inbox (subscribable).
Register it with: ppz mcp install --claude|--codex [--as=HANDLE]
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"ppz {self.prog.removeprefix('ppz ')}: {message} (see '{self.prog} --help')")


def serve_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ppz mcp", description=SERVE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--as", dest="handle", default="", metavar="HANDLE",
                        help="speak as HANDLE: make it this session's current handle (created if missing)")
    parser.add_argument("--session", default="", metavar="S",
                        help="session id (default: $PPZ_SESSION, else mcp-HANDLE with --as, else mcp)")
    parser.add_argument("--watch", action="append", default=[], metavar="PATTERN",
                        help="also watch these pipes (names or globs, as ppz ls); repeatable")
    parser.add_argument("--channel", action="store_true",
                        help="push notifications/claude/channel when new mail arrives (Claude Code channels)")
    return parser


def install_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ppz mcp install",
                     description="Print (without running anything) how to register ppz mcp with an agent host.")
    host = parser.add_mutually_exclusive_group(required=True)
    host.add_argument("--claude", action="store_true", help="the 'claude mcp add' command for Claude Code")
    host.add_argument("--codex", action="store_true", help="the [mcp_servers.ppz] block of ~/.codex/config.toml")
    parser.add_argument("--as", dest="handle", default="", metavar="HANDLE", help="the handle the agent speaks as")
    return parser


def ppz_path() -> str:
    """The absolute path of the ``ppz`` being run; under ``python -m ppz.cli``, the ``ppz`` script
    next to the interpreter, else the one on PATH."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "ppz":
        return os.path.abspath(argv0)
    sibling = os.path.join(os.path.dirname(sys.executable), "ppz")
    if os.path.exists(sibling):
        return sibling
    return os.path.abspath(shutil.which("ppz") or "ppz")


def toml_string(value: str) -> str:
    return json.dumps(value)  # a TOML basic string is a JSON string for these characters


def install_text(host: str, handle: str, path: str, environ: dict[str, str]) -> str:
    """The registration for ``host`` (``claude`` or ``codex``), spec/agents.md §3.4."""
    args = ["mcp", *([f"--as={handle}"] if handle else [])]
    if host == "claude":
        return " ".join(["claude", "mcp", "add", "--scope", "user", "--transport", "stdio", "ppz", "--", path, *args])
    env = {name: environ[name] for name in ("PPZ_HOME", "PPZ_IPC_SOCKET") if environ.get(name)}
    env_text = ", ".join(f"{name} = {toml_string(value)}" for name, value in env.items())
    return "\n".join([
        "[mcp_servers.ppz]",
        f"command = {toml_string(path)}",
        f"args = [{', '.join(toml_string(a) for a in args)}]",
        f"env = {{ {env_text} }}" if env_text else "env = {}",
    ])


def install(argv: Sequence[str]) -> None:
    opts = install_parser().parse_args(list(argv))
    print(install_text("claude" if opts.claude else "codex", opts.handle, ppz_path(), dict(os.environ)))


def mcp(argv: Sequence[str]) -> None:
    """``ppz mcp …``: ``install`` prints a registration; anything else runs the server."""
    argv = list(argv)
    if argv[:1] == ["install"]:
        install(argv[1:])
        return
    opts = serve_parser().parse_args(argv)
    from ppz.mcp import main

    try:
        main(handle=opts.handle, session=opts.session, watch=[p for w in opts.watch for p in w.split(",") if p],
             channel=opts.channel)
    except KeyboardInterrupt:
        raise SystemExit(0) from None

