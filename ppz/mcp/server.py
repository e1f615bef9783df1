"""``ppz mcp``: the MCP server (spec/agents.md §3), built on the ``mcp`` SDK's ``MCPServer``.

:func:`build` wires the pieces: a :class:`~ppz.mcp.daemonclient.DaemonClient` for the session,
the ``--as`` :class:`~ppz.mcp.identity.Identity`, the seven :class:`~ppz.mcp.tools.Tools`, the
``ppz://inbox`` resource, the :class:`~ppz.mcp.notify.Notifier` and the background
:class:`~ppz.mcp.watch.Watch`. :func:`serve_stdio` runs them until the host closes stdin.

Tool results are structured content with the same JSON as text; a tool that fails returns an
MCP tool error ``error: <CODE>: <message>`` with ``{"error": {"code", "message"}}`` as its
structured content. Unknown tools and arguments of the wrong type are tool errors too
(``E_PROTOCOL``, or ``E_INVALID_PRIORITY`` for a bad ``priority``), like a malformed IPC request.
"""

from __future__ import annotations

import functools
import json
import keyword
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp_types import CallToolResult, InputRequiredResult, SubscribeRequestParams, TextContent, UnsubscribeRequestParams
from pydantic import ValidationError

from ppz import __version__, errors
from ppz.commands.client import error_text
from ppz.mcp import sdkglue
from ppz.mcp.daemonclient import DaemonClient
from ppz.mcp.identity import Identity
from ppz.mcp.notify import CHANNEL_CAPABILITY, INBOX_URI, Notifier
from ppz.mcp.tools import DESCRIPTIONS, Tools, pipe_rows
from ppz.mcp.watch import Watch

# Argument errors whose field has a code of its own (ipc.md §5); any other is E_PROTOCOL.
FIELD_CODES = {"priority": errors.E_INVALID_PRIORITY}


def instructions(handle: str) -> str:
    """The ``initialize`` instructions: ppz in three sentences (≤ 1 500 characters)."""
    who = f"'{handle}'" if handle else "this session's current handle (whoami tells which)"
    return (
        f"You speak as {who} on ppz, durable message pipes between agents and people. "
        "Send with send(to='bob', message='…') to a handle's inbox, HANDLE.PIPE or a shared pipe, and read "
        "your mail with read(), which consumes what it returns (reread shows messages again). "
        "To wait for a reply call read(wait_seconds=300) instead of polling, and when told that new mail "
        "arrived, call read."
    )


def ok_result(value: Any) -> CallToolResult:
    """Structured content (a list is wrapped as ``{"result": […]}``) and the same JSON as text."""
    structured = value if isinstance(value, dict) else {"result": value}
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(value, ensure_ascii=False))],
                          structured_content=structured)


def error_result(err: errors.PpzError) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=f"error: {error_text(err)}")],
                          structured_content={"error": {"code": err.code, "message": err.message}},
                          is_error=True)


def argument_error(tool: str, exc: ValidationError) -> errors.PpzError:
    """Arguments that do not fit the tool's schema, as a coded error naming each bad field."""
    problems, code = [], errors.E_PROTOCOL
    for item in exc.errors():
        field = ".".join(str(part) for part in item["loc"])
        code = FIELD_CODES.get(str(item["loc"][0]) if item["loc"] else "", code)
        problems.append(f"{field}: {item['msg']}")
    if code != errors.E_PROTOCOL:
        return errors.PpzError(code)
    return errors.PpzError(errors.E_PROTOCOL, f"invalid arguments for tool '{tool}': " + "; ".join(problems))


def as_tool(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[CallToolResult]]:
    """``fn`` (its signature is the tool's schema) returning :func:`ok_result` or, when it raises
    ``PpzError``, :func:`error_result`. An argument named by a Python keyword (``from``) is
    ``fn``'s parameter of that name plus ``_``, aliased."""

    @functools.wraps(fn)
    async def tool(**kwargs: Any) -> CallToolResult:
        kwargs = {f"{k}_" if keyword.iskeyword(k) else k: v for k, v in kwargs.items()}
        try:
            return ok_result(await fn(**kwargs))
        except errors.PpzError as err:
            return error_result(err)

    return tool


class PpzMcpServer(MCPServer):
    """``MCPServer`` whose unknown tools and ill-typed arguments are coded tool errors."""

    ppz_tools: frozenset[str] = frozenset()

    async def call_tool(self, name: str, arguments: dict[str, Any],
                        context: Context[Any, Any] | None = None) -> CallToolResult | InputRequiredResult:
        if name not in self.ppz_tools:
            return error_result(errors.PpzError(errors.E_PROTOCOL, f"unknown tool '{name}'"))
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                return error_result(argument_error(name, exc.__cause__))
            raise


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """``ppz mcp`` flags (spec/agents.md §3)."""

    handle: str = ""
    session: str = "mcp"
    watch: tuple[str, ...] = ()
    channel: bool = False
    socket: str | None = None
    start_daemon: bool = True


@dataclass(frozen=True, slots=True)
class App:
    server: PpzMcpServer
    daemon: DaemonClient
    identity: Identity
    tools: Tools
    notifier: Notifier
    watch: Watch


def build(options: Options) -> App:
    daemon = DaemonClient(options.session, socket=options.socket)
    identity = Identity(daemon, options.handle, start_daemon=options.start_daemon)
    bus = InMemorySubscriptionBus()
    notifier = Notifier(bus, options.channel)
    watch = Watch(daemon, identity, list(options.watch), notifier.announce)
    tools = Tools(daemon, identity, on_consumed=watch.poke)
    server = PpzMcpServer("ppz", version=__version__, instructions=instructions(options.handle),
                          subscriptions=bus, log_level="WARNING")
    server.ppz_tools = frozenset(tools.by_name())
    for name, fn in tools.by_name().items():
        server.add_tool(as_tool(fn), name=name, description=DESCRIPTIONS[name], structured_output=True)

    @server.resource(INBOX_URI, name="inbox", mime_type="application/json",
                     description="Unread counts of your inbox and the watched pipes (the list tool's result); "
                                 "subscribe to be told when new mail arrives.")
    async def inbox() -> str:
        try:
            await identity.ensure()
            patterns = await watch.patterns()
            reply = await daemon.call("List", {"session": daemon.session, "patterns": patterns}) if patterns else {}
        except errors.PpzError as err:
            raise ResourceError(f"error: {error_text(err)}") from None
        return json.dumps({"pipes": pipe_rows(reply)}, ensure_ascii=False)

    sdkglue.add_request_handler(server, "resources/subscribe", SubscribeRequestParams, notifier.on_subscribe)
    sdkglue.add_request_handler(server, "resources/unsubscribe", UnsubscribeRequestParams, notifier.on_unsubscribe)
    server.middleware.append(notifier.middleware)
    if options.channel:
        sdkglue.declare_experimental(server, {CHANNEL_CAPABILITY: {}})
    return App(server, daemon, identity, tools, notifier, watch)


async def run_background(app: App, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """The ``--as`` step, then the watch, until cancelled."""
    task_status.started()
    await app.identity.setup()
    await app.watch.run()


async def serve_stdio(app: App) -> None:
    """Serve the host on stdin/stdout until it closes stdin, then stop everything."""
    async with anyio.create_task_group() as tg:
        await tg.start(run_background, app)
        await sdkglue.serve_stdio(app.server)
        tg.cancel_scope.cancel()
