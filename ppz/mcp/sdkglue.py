"""Everything ``ppz mcp`` needs from the ``mcp`` SDK beyond its public surface, in one place.

``MCPServer`` (mcp 2.x) has no public way to:

* declare an **experimental capability** (``claude/channel``) in the ``initialize`` result: it
  builds its initialization options from the low-level server without one — so the low-level
  server's ``create_initialization_options`` is wrapped (every transport, stdio and in-memory,
  calls it);
* serve **``resources/subscribe``** / ``resources/unsubscribe`` (the handshake-era way to be
  told that a resource changed): the handlers are added to the low-level server, whose
  capabilities then say ``resources.subscribe: true``;
* reach a client **outside a request** (a push when mail arrives): the per-connection
  ``Connection`` (public class, public ``notify``/``send_resource_updated``/``exit_stack``) is
  only reachable through the request's ``ServerSession``;
* serve stdio **without a thread hop per line**: ``stdio_server(stdin, stdout)`` takes streams,
  which here are asyncio pipes with the two methods it calls (``async for`` lines, ``write`` and
  ``flush``).

``tests/mcp/test_sdkglue.py`` checks each of these against the installed SDK and fails loudly
when an upgrade moves them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.models import InitializationOptions
from mcp.server.session import ServerSession
from mcp.server.stdio import stdio_server
from pydantic import BaseModel


def lowlevel(server: MCPServer) -> Server[Any]:
    """The low-level ``Server`` an ``MCPServer`` drives (the SDK's own in-memory transport
    reaches it the same way)."""
    inner = getattr(server, "_lowlevel_server", None)
    if not isinstance(inner, Server):
        raise RuntimeError("mcp SDK changed: MCPServer._lowlevel_server is not a low-level Server")
    return inner


def declare_experimental(server: MCPServer, capabilities: dict[str, dict[str, Any]]) -> None:
    """Add ``capabilities`` to ``capabilities.experimental`` of every ``initialize`` result."""
    inner = lowlevel(server)
    create = inner.create_initialization_options

    def create_with_experimental(*args: Any, **kwargs: Any) -> InitializationOptions:
        options = create(*args, **kwargs)
        experimental = dict(options.capabilities.experimental or {})
        experimental.update(capabilities)
        options.capabilities.experimental = experimental
        return options

    inner.create_initialization_options = create_with_experimental  # type: ignore[method-assign]


Handler = Callable[[ServerRequestContext[Any, Any], Any], Awaitable[Any]]


def add_request_handler(server: MCPServer, method: str, params_type: type[BaseModel], handler: Handler) -> None:
    """Serve ``method`` (e.g. ``resources/subscribe``) with ``handler(ctx, params)``."""
    lowlevel(server).add_request_handler(method, params_type, handler)


def connection_of(session: ServerSession) -> Connection:
    """The ``Connection`` a request arrived on: its ``notify`` reaches the client at any time
    (while the connection lasts), and its ``exit_stack`` runs when the connection closes."""
    connection = getattr(session, "_connection", None)
    if not isinstance(connection, Connection):
        raise RuntimeError("mcp SDK changed: ServerSession._connection is not a Connection")
    return connection


class _PipeLines:
    """stdin as ``stdio_server`` reads it (``async for line in stdin``), on the event loop."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> _PipeLines:
        return self

    async def __anext__(self) -> str:
        line = await self._reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", "replace")


class _PipeWriter:
    """stdout as ``stdio_server`` writes it (``await write(text)``, ``await flush()``)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, text: str) -> None:
        self._writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self._writer.drain()


@asynccontextmanager
async def stdio_pipes(stdin_fd: int = 0, stdout_fd: int = 1) -> AsyncIterator[tuple[Any, Any] | None]:
    """stdin and stdout for ``stdio_server(stdin, stdout)`` read and written on the event loop,
    when both are pipes (as an agent host connects them); ``None`` otherwise. The SDK's own
    stdio streams hop to a worker thread for every line read and every write and flush."""
    loop = asyncio.get_running_loop()
    stdin = os.fdopen(os.dup(stdin_fd), "rb", buffering=0)
    stdout = os.fdopen(os.dup(stdout_fd), "wb", buffering=0)
    transports: list[asyncio.BaseTransport] = []
    try:
        try:
            reader = asyncio.StreamReader(limit=MAX_LINE, loop=loop)
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
            transports.append(transport)
            wtransport, wprotocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, stdout)
            transports.append(wtransport)
        except (OSError, ValueError):
            yield None  # not pipes (a file, a terminal…): the SDK's own streams serve
            return
        yield _PipeLines(reader), _PipeWriter(asyncio.StreamWriter(wtransport, wprotocol, None, loop))
    finally:
        for each in transports:
            each.close()
        for file in (stdin, stdout):
            with contextlib.suppress(OSError):
                file.close()


MAX_LINE = 256 * 1024 * 1024


async def serve_stdio(server: MCPServer) -> None:
    """``server.run_stdio_async()``, with stdin and stdout served on the event loop when they are
    pipes (:func:`stdio_pipes`)."""
    async with stdio_pipes() as pipes:
        if pipes is None:
            await server.run_stdio_async()
            return
        async with stdio_server(*pipes) as (read_stream, write_stream):
            inner = lowlevel(server)
            await inner.run(read_stream, write_stream, inner.create_initialization_options())
