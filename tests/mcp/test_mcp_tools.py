"""Every tool of ``ppz mcp`` through the SDK's in-memory client, against a real daemon, server
and NATS (spec/agents.md §3.1, §3.2, §3.4); bad input gives coded tool errors and the server
keeps serving."""

from __future__ import annotations

import json
from typing import Any

import anyio
import anyio.to_thread
import pytest
from daemonfixture import wait_for
from e2e.test_read_wait import consumers
from mcp import Client
from mcp_types import CallToolResult
from mcpfixture import *  # noqa: F403 - the fixtures
from mcpfixture import send_as

from ppz import errors

pytestmark = pytest.mark.anyio

TOOLS = ["whoami", "send", "read", "reread", "list", "who", "create_pipe"]


def ok(result: CallToolResult) -> Any:
    """The structured result of a successful call; its text is the same JSON."""
    assert not result.is_error, result.content
    structured = result.structured_content
    assert structured is not None
    text = json.loads(result.content[0].text)  # type: ignore[union-attr]
    assert text == (structured["result"] if list(structured) == ["result"] else structured)
    return structured


def failed(result: CallToolResult) -> dict[str, str]:
    """The ``{"code", "message"}`` of a tool error, checked against its text."""
    assert result.is_error
    error = (result.structured_content or {})["error"]
    assert result.content[0].text == f"error: {error['code']}: {error['message']}"  # type: ignore[union-attr]
    return error


async def test_initialize_lists_the_seven_tools_and_teaches_the_agent(world: dict[str, Any], mcp_app: Any) -> None:
    async with mcp_app(handle=world["alice"]) as app, Client(app.server, mode="legacy") as client:
        assert [t.name for t in (await client.list_tools()).tools] == TOOLS
        assert world["alice"] in client.instructions and "read" in client.instructions
        assert len(client.instructions) <= 1500
        caps = client.server_capabilities
        assert caps.resources is not None and caps.resources.subscribe
        assert not (caps.experimental or {}).get("claude/channel")  # only with --channel
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert tools["send"].input_schema["required"] == ["to", "message"]
        assert "from" in tools["read"].input_schema["properties"]
        assert all(t.description and t.output_schema for t in tools.values())


async def test_whoami_speaks_as_the_handle(world: dict[str, Any], mcp_app: Any) -> None:
    async with mcp_app(handle=world["alice"], session="agent-a") as app, Client(app.server) as client:
        me = ok(await client.call_tool("whoami", {}))
    assert me == {"handle": world["alice"], "namespace": "", "session": "agent-a",
                  "account_name": me["account_name"], "logged_in": True, "nats_state": "connected"}
    assert me["account_name"]
    # --as made it the session's current handle, shared with a CLI that uses the same PPZ_SESSION
    assert world["home"].call("Status", {"session": "agent-a"})["current"] == world["alice"]


async def test_send_read_consumes_and_reread_does_not(world: dict[str, Any], mcp_app: Any) -> None:
    alice, bob = world["alice"], world["bob"]
    async with mcp_app(handle=alice) as a, mcp_app(handle=bob) as b, \
            Client(a.server) as ca, Client(b.server) as cb:
        sent = ok(await ca.call_tool("send", {"to": bob, "message": "hi bob", "subject": "greeting",
                                              "priority": "high"}))
        assert sent["to"] == f"{bob}.inbox" and sent["bytes"] == 6 and len(sent["id"]) == 36
        got = ok(await cb.call_tool("read", {}))
        assert got["more_unread"] == 0 and got["timed_out"] is False
        [msg] = got["messages"]
        assert (msg["sender"], msg["payload"], msg["subject"], msg["priority"], msg["id"]) == \
            (alice, "hi bob", "greeting", 1, sent["id"])
        assert ok(await cb.call_tool("read", {}))["messages"] == []  # consumed
        again = ok(await cb.call_tool("reread", {"pipe": f"{bob}.inbox"}))
        assert [m["payload"] for m in again["messages"]] == ["hi bob"]
        reply = ok(await cb.call_tool("send", {"to": f"{alice}.inbox", "message": "hi alice",
                                               "in_reply_to": msg["id"]}))
        [answer] = ok(await ca.call_tool("read", {"pipe": "inbox"}))["messages"]
        assert (answer["in_reply_to"], answer["id"], answer["sender"]) == (msg["id"], reply["id"], bob)


async def test_read_limit_leaves_the_rest_unread(world: dict[str, Any], mcp_app: Any) -> None:
    h, alice = world["home"], world["alice"]
    async with mcp_app(handle=alice) as app, Client(app.server) as client:
        for i in range(3):
            send_as(h, "carol", alice, f"m{i}")
        first = ok(await client.call_tool("read", {"limit": 2}))
        assert [m["payload"] for m in first["messages"]] == ["m0", "m1"] and first["more_unread"] == 1
        rest = ok(await client.call_tool("read", {"limit": 0}))
        assert [m["payload"] for m in rest["messages"]] == ["m2"] and rest["more_unread"] == 0


async def test_list_shows_unread_counts_and_preview(world: dict[str, Any], mcp_app: Any) -> None:
    h, alice = world["home"], world["alice"]
    async with mcp_app(handle=alice) as app, Client(app.server) as client:
        send_as(h, "carol", alice, "first")
        send_as(h, "carol", alice, "second\nline")
        rows = ok(await client.call_tool("list", {"patterns": [f"{alice}.*"]}))["pipes"]
        assert rows == [{"pipe": f"{alice}.inbox", "unread": 2, "total": 2, "last_at": rows[0]["last_at"],
                         "preview": "second line"}]
        assert ok(await client.call_tool("list", {"patterns": ["nothing-matches-*"]})) == {"pipes": []}


async def test_create_pipe_then_send_and_read_it(world: dict[str, Any], mcp_app: Any) -> None:
    room = f"room-{world['n']}"
    async with mcp_app(handle=world["alice"]) as app, Client(app.server) as client:
        assert ok(await client.call_tool("create_pipe", {"name": room})) == {"pipe": room}
        assert ok(await client.call_tool("send", {"to": room, "message": "hello room"}))["to"] == room
        [msg] = ok(await client.call_tool("read", {"pipe": room}))["messages"]
        assert (msg["payload"], msg["sender"]) == ("hello room", world["alice"])
        assert failed(await client.call_tool("create_pipe", {"name": room}))["code"] == errors.E_NAME_TAKEN \
            or failed(await client.call_tool("create_pipe", {"name": room}))["code"] == errors.E_PIPE_TAKEN


async def test_who_is_the_array_of_ppz_who_json(world: dict[str, Any], mcp_app: Any) -> None:
    h, beater = world["home"], f"beat-{world['n']}"
    out = h.ppz("heartbeat", beater, "--once", "--state=working", "--harness=claude")
    assert out.returncode == 0, out.stderr
    cli = json.loads(h.ppz("who", "--json").stdout)
    async with mcp_app(handle=world["alice"]) as app, Client(app.server) as client:
        result = await client.call_tool("who", {})
    entries = ok(result)["result"]
    mine = [e for e in entries if e["handle"] == beater]
    assert mine and mine[0]["status"] == "online" and mine[0]["heartbeat"]["harness"] == "claude"
    assert [e["handle"] for e in entries] == [e["handle"] for e in cli]


async def test_bad_input_gives_coded_tool_errors_and_the_server_keeps_serving(
        world: dict[str, Any], mcp_app: Any) -> None:
    async with mcp_app(handle=world["alice"]) as app, Client(app.server) as client:
        assert failed(await client.call_tool("nope", {}))["code"] == errors.E_PROTOCOL
        wrong = failed(await client.call_tool("read", {"limit": "ten"}))
        assert wrong["code"] == errors.E_PROTOCOL and "limit" in wrong["message"]
        assert failed(await client.call_tool("send", {"to": 5, "message": "x"}))["code"] == errors.E_PROTOCOL
        assert failed(await client.call_tool("send", {"to": "a", "message": "x", "priority": "urgent"}))["code"] \
            == errors.E_INVALID_PRIORITY
        two_dots = failed(await client.call_tool("send", {"to": "a.b.c", "message": "x"}))
        assert two_dots == {"code": errors.E_INVALID_PIPE, "message": two_dots["message"]}
        assert "a.b.c" in two_dots["message"]
        assert failed(await client.call_tool("read", {"pipe": "a.b.c"}))["code"] == errors.E_INVALID_PIPE
        big = failed(await client.call_tool("send", {"to": world["alice"], "message": "x" * 70 * 1024}))
        assert big["code"] == errors.E_PAYLOAD_TOO_LARGE
        assert failed(await client.call_tool("send", {"to": "nobody-here", "message": "x"}))["code"] \
            == errors.E_SOURCE_NOT_FOUND
        assert failed(await client.call_tool("reread", {"pipe": "inbox", "since": "soon"}))["code"] \
            == errors.E_PROTOCOL
        assert ok(await client.call_tool("whoami", {}))["handle"] == world["alice"]


async def test_a_failed_as_is_reported_by_every_tool_call(world: dict[str, Any], mcp_app: Any) -> None:
    async with mcp_app(handle="Not_A_Handle") as app, Client(app.server) as client:
        for tool in ("whoami", "list", "read"):
            assert failed(await client.call_tool(tool, {}))["code"] == errors.E_INVALID_HANDLE


async def test_read_with_wait_returns_the_next_message(world: dict[str, Any], mcp_app: Any) -> None:
    h, alice = world["home"], world["alice"]
    async with mcp_app(handle=alice) as app, Client(app.server) as client:
        expired = ok(await client.call_tool("read", {"wait_seconds": 0.2}))
        assert expired == {"messages": [], "more_unread": 0, "timed_out": True}
        result: dict[str, Any] = {}

        async def reader() -> None:
            result.update(ok(await client.call_tool("read", {"wait_seconds": 60})))

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await anyio.to_thread.run_sync(lambda: wait_for(lambda: consumers(world, alice) > 0, timeout=30,
                                                            what="the waiting read's consumer"))
            assert result == {}
            await anyio.to_thread.run_sync(send_as, h, "carol", alice, "wake up")
        assert [m["payload"] for m in result["messages"]] == ["wake up"] and not result["timed_out"]


async def test_read_filters_are_views_and_receipts_are_left_out(world: dict[str, Any], mcp_app: Any) -> None:
    h, alice, bob = world["home"], world["alice"], world["bob"]
    async with mcp_app(handle=alice) as a, mcp_app(handle=bob) as b, Client(a.server) as ca, Client(b.server) as cb:
        send_as(h, "carol", alice, "from carol")
        ok(await cb.call_tool("send", {"to": alice, "message": "from bob", "request_ack": True}))
        view = ok(await ca.call_tool("read", {"from": [bob]}))
        assert [m["payload"] for m in view["messages"]] == ["from bob"]
        assert [m["payload"] for m in ok(await ca.call_tool("read", {}))["messages"]] == ["from carol", "from bob"]
        # bob's inbox now holds alice's read receipt, which read leaves out unless include_acks
        receipts = ok(await cb.call_tool("reread", {"pipe": f"{bob}.inbox"}))["messages"]
        if not receipts:  # receipts are sent asynchronously after the read
            await anyio.to_thread.run_sync(lambda: wait_for(
                lambda: h.call("List", {"patterns": [f"{bob}.inbox"], "session": "x"})["sources"][0]
                ["pipe_infos"][0]["total"], timeout=30, what="the read receipt"))
        assert ok(await cb.call_tool("read", {}))["messages"] == []
        [ack] = ok(await cb.call_tool("reread", {"pipe": f"{bob}.inbox"}))["messages"]
        assert ack["subject"] == "ack:read"


async def test_a_2026_client_hears_of_new_mail_on_its_listen_stream(world: dict[str, Any], mcp_app: Any) -> None:
    h, alice = world["home"], world["alice"]
    async with mcp_app(handle=alice) as app, Client(app.server, mode="2026-07-28") as client:
        async with client.listen(resource_subscriptions=["ppz://inbox"]) as sub:
            send_as(h, "carol", alice, "hello 2026")
            with anyio.fail_after(60):
                async for event in sub:
                    assert event.uri == "ppz://inbox"  # type: ignore[union-attr]
                    break
        inbox = await client.read_resource("ppz://inbox")
        assert json.loads(inbox.contents[0].text)["pipes"][0]["unread"] == 1  # type: ignore[union-attr]
        assert [m["payload"] for m in ok(await client.call_tool("read", {}))["messages"]] == ["hello 2026"]
