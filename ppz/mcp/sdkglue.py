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
  only reachable through the request's ``ServerSession``.

``tests/mcp/test_sdkglue.py`` checks each of these against the installed SDK and fails loudly
when an upgrade moves them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.models import InitializationOptions
from mcp.server.session import ServerSession
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
