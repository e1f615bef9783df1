"""``ppz.mcp.sdkglue`` against the installed ``mcp`` SDK: each workaround for a need the SDK has
no public API for, checked on the raw JSON-RPC messages of an in-memory connection. A failure
here means an SDK upgrade moved something ``ppz mcp`` relies on: fix ``sdkglue`` (and only it)."""

from __future__ import annotations

import json
import os
from typing import Any

import anyio
import anyio.to_thread
import pytest
from mcp.client._memory import InMemoryTransport
from mcp.server.connection import Connection
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import EmptyResult, JSONRPCNotification, JSONRPCRequest, SubscribeRequestParams

from ppz.mcp import sdkglue

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def request(rid: int, method: str, params: dict[str, Any]) -> SessionMessage:
    return SessionMessage(JSONRPCRequest(jsonrpc="2.0", id=rid, method=method, params=params))


def wire(message: SessionMessage) -> dict[str, Any]:
    return message.message.model_dump(by_alias=True, mode="json", exclude_none=True)


async def test_experimental_capability_subscribe_handler_and_pushes_outside_a_request() -> None:
    server = MCPServer("glue-test")
    sdkglue.declare_experimental(server, {"claude/channel": {}})
    connections: list[Connection] = []

    async def on_subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        connections.append(sdkglue.connection_of(ctx.session))
        return EmptyResult()

    sdkglue.add_request_handler(server, "resources/subscribe", SubscribeRequestParams, on_subscribe)

    @server.resource("ppz://inbox")
    def inbox() -> str:
        return "{}"

    async with InMemoryTransport(server) as (read, write):
        await write.send(request(1, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                                   "clientInfo": {"name": "t", "version": "0"}}))
        init = wire(await read.receive())["result"]
        assert init["capabilities"]["experimental"] == {"claude/channel": {}}
        assert init["capabilities"]["resources"]["subscribe"] is True
        await write.send(SessionMessage(JSONRPCNotification(jsonrpc="2.0", method="notifications/initialized")))
        await write.send(request(2, "resources/subscribe", {"uri": "ppz://inbox"}))
        assert wire(await read.receive()) == {"jsonrpc": "2.0", "id": 2, "result": {}}
        [connection] = connections
        # A push long after the request that revealed the connection, in a method the SDK does not
        # know (from a task of its own: the in-memory stream hands each message over to its reader).
        async def push() -> None:
            await connection.notify("notifications/claude/channel", {"content": "1 new", "meta": {"pipe": "a.inbox"}})
            await connection.send_resource_updated("ppz://inbox")

        async with anyio.create_task_group() as tg:
            tg.start_soon(push)
            assert wire(await read.receive()) == {"jsonrpc": "2.0", "method": "notifications/claude/channel",
                                                  "params": {"content": "1 new", "meta": {"pipe": "a.inbox"}}}
            assert wire(await read.receive())["method"] == "notifications/resources/updated"
        closed: list[bool] = []
        connection.exit_stack.callback(closed.append, True)
    assert closed == [True]  # the connection's exit stack runs when the client goes away


async def test_stdio_server_serves_pipes_read_and_written_on_the_event_loop() -> None:
    server = MCPServer("pipes-test")
    to_server, from_client = os.pipe()
    to_client, from_server = os.pipe()
    try:
        async with sdkglue.stdio_pipes(to_server, from_server) as pipes, anyio.create_task_group() as tg:
            assert pipes is not None
            inner = sdkglue.lowlevel(server)

            async def serve() -> None:
                async with stdio_server(*pipes) as (read_stream, write_stream):
                    await inner.run(read_stream, write_stream, inner.create_initialization_options())

            tg.start_soon(serve)
            os.write(from_client, b'{"jsonrpc":"2.0","id":7,"method":"initialize","params":{"protocolVersion":'
                                  b'"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}\n')
            reply = await anyio.to_thread.run_sync(lambda: os.read(to_client, 65536))
            assert json.loads(reply)["result"]["serverInfo"]["name"] == "pipes-test"
            os.close(from_client)  # EOF: the server ends
            from_client = -1
    finally:
        for fd in (to_server, from_client, to_client, from_server):
            if fd >= 0:
                os.close(fd)
