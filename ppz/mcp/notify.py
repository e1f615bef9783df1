"""Telling MCP clients that mail arrived (spec/agents.md §3.3): ``notifications/resources/updated``
for ``ppz://inbox`` to subscribed clients and, with ``--channel``, ``notifications/claude/channel``
to every connected one.

Clients of the handshake-era protocol versions subscribe with ``resources/subscribe`` and are
reached on their connection; clients of 2026-07-28 and later listen with
``subscriptions/listen`` and are reached through the server's subscription bus.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from mcp.server.connection import Connection
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.subscriptions import ResourceUpdated, SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from ppz.mcp.sdkglue import connection_of

logger = logging.getLogger(__name__)

INBOX_URI = "ppz://inbox"
CHANNEL_METHOD = "notifications/claude/channel"
CHANNEL_CAPABILITY = "claude/channel"


@dataclass(frozen=True, slots=True, kw_only=True)
class Announcement:
    """New unread messages on one pipe: how many are unread, who sent them, the last one's preview."""

    pipe: str
    unread: int
    sender: str
    preview: str

    def line(self) -> str:
        """``<N> new on <pipe> from <sender>: <preview>``."""
        sender = f" from {self.sender}" if self.sender else ""
        return f"{self.unread} new on {self.pipe}{sender}: {self.preview}"

    def channel_params(self) -> dict[str, Any]:
        return {"content": self.line(), "meta": {"pipe": self.pipe, "unread": self.unread, "from": self.sender}}


class Notifier:
    """The connected clients and what each asked for; :meth:`announce` pushes to them."""

    def __init__(self, bus: SubscriptionBus, channel: bool) -> None:
        self.bus = bus
        self.channel = channel
        self.connections: dict[int, Connection] = {}  # handshake-era connections, by id
        self.subscribed: set[int] = set()  # … of them subscribed to ppz://inbox

    def _track(self, connection: Connection) -> int:
        key = id(connection)
        if key not in self.connections:
            self.connections[key] = connection
            connection.exit_stack.callback(self._forget, key)
        return key

    def _forget(self, key: int) -> None:
        self.connections.pop(key, None)
        self.subscribed.discard(key)

    async def middleware(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Remembers every handshake-era connection once it sends anything (from
        ``initialize`` on), so that pushes reach it between its requests."""
        result = await call_next(ctx)
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            self._track(connection_of(ctx.session))
        return result

    async def on_subscribe(self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
        _check_uri(str(params.uri))
        self.subscribed.add(self._track(connection_of(ctx.session)))
        return EmptyResult()

    async def on_unsubscribe(self, ctx: ServerRequestContext[Any, Any],
                             params: UnsubscribeRequestParams) -> EmptyResult:
        _check_uri(str(params.uri))
        self.subscribed.discard(id(connection_of(ctx.session)))
        return EmptyResult()

    async def announce(self, news: list[Announcement]) -> None:
        if not news:
            return
        await self.bus.publish(ResourceUpdated(uri=INBOX_URI))
        for key in list(self.subscribed):
            connection = self.connections.get(key)
            if connection is not None:
                await connection.send_resource_updated(INBOX_URI)
        if not self.channel:
            return
        for item in news:
            for connection in list(self.connections.values()):
                await connection.notify(CHANNEL_METHOD, item.channel_params())


def _check_uri(uri: str) -> None:
    if uri != INBOX_URI:
        raise MCPError(code=INVALID_PARAMS, message=f"unknown resource {uri!r}; subscribe to {INBOX_URI}")
