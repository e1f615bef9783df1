"""``ppz mcp`` as a real stdio subprocess (spec/agents.md §3): driven by the SDK's
``stdio_client``, and by a client reading the JSON-RPC lines itself to see the pushes
(``notifications/resources/updated``, ``notifications/claude/channel``); two servers as two
agents; watching across a daemon restart; exit when the host goes away."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcpfixture import *  # noqa: F403 - the fixtures
from mcpfixture import RawMcp, mcp_command, mcp_env, send_as

pytestmark = pytest.mark.anyio


async def test_every_tool_over_stdio_with_the_sdk_stdio_client(world: dict[str, Any]) -> None:
    h, alice, room = world["home"], world["alice"], f"room-{world['n']}"
    command = mcp_command(f"--as={alice}")
    params = StdioServerParameters(command=command[0], args=command[1:], env=mcp_env(h))
    async with Client(stdio_client(params), mode="legacy") as client:
        assert [t.name for t in (await client.list_tools()).tools] == \
            ["whoami", "send", "read", "reread", "list", "who", "create_pipe"]
        assert alice in (client.instructions or "")

        async def call(tool: str, /, **arguments: Any) -> Any:
            result = await client.call_tool(tool, arguments)
            assert not result.is_error, result.content
            return result.structured_content

        me = await call("whoami")
        assert (me["handle"], me["session"], me["logged_in"]) == (alice, f"mcp-{alice}", True)
        assert await call("create_pipe", name=room) == {"pipe": room}
        sent = await call("send", to=alice, message="note to self")
        assert sent["to"] == f"{alice}.inbox"
        assert [r["pipe"] for r in (await call("list", patterns=[f"{alice}.*", room]))["pipes"]] == \
            [f"{alice}.inbox", room]
        [msg] = (await call("read"))["messages"]
        assert (msg["payload"], msg["sender"]) == ("note to self", alice)
        assert [m["id"] for m in (await call("reread", pipe="inbox"))["messages"]] == [sent["id"]]
        assert isinstance((await call("who"))["result"], list)
        error = await client.call_tool("send", {"to": "x.y.z", "message": "m"})
        assert error.is_error and error.structured_content["error"]["code"] == "E_INVALID_PIPE"
        inbox = await client.read_resource("ppz://inbox")
        assert json.loads(inbox.contents[0].text)["pipes"][0]["pipe"] == f"{alice}.inbox"  # type: ignore[union-attr]


def channel(raw: RawMcp) -> dict[str, Any]:
    """The params of the next ``notifications/claude/channel`` (resource updates before it skipped)."""
    while (message := raw.notifications.get(timeout=60))["method"] == "notifications/resources/updated":
        pass
    assert message["method"] == "notifications/claude/channel", message
    return message["params"]


def test_pushes_on_the_raw_stream_once_per_new_message(world: dict[str, Any]) -> None:
    h, alice, room = world["home"], world["alice"], f"room-{world['n']}"
    assert h.call("PipeCreate", {"name": room})["name"] == room
    raw = RawMcp(h, f"--as={alice}", "--channel", f"--watch={room}")
    try:
        init = raw.initialize()
        assert init["capabilities"]["experimental"] == {"claude/channel": {}}
        assert init["capabilities"]["resources"]["subscribe"] is True
        assert "error" not in raw.request("resources/subscribe", {"uri": "ppz://inbox"})
        assert raw.request("resources/subscribe", {"uri": "ppz://elsewhere"})["error"]
        assert raw.tool("whoami")["handle"] == alice  # the --as step is done: the watch is on the inbox

        send_as(h, "carol", alice, "first")
        assert raw.notification("notifications/resources/updated")["params"] == {"uri": "ppz://inbox"}
        assert raw.notification("notifications/claude/channel")["params"] == \
            {"content": f"1 new on {alice}.inbox from carol: first",
             "meta": {"pipe": f"{alice}.inbox", "unread": 1, "from": "carol"}}

        h.call("Send", {"bare_target": room, "handle": room, "channel": "inbox", "payload": "in the room",
                        "sender": "dave", "session": "sender-dave"})
        assert channel(raw)["meta"] == {"pipe": room, "unread": 1, "from": "dave"}
        # Both pipes stay unread; each new message is announced once, for its own pipe only.
        send_as(h, "dave", alice, "second")
        assert channel(raw)["content"] == f"2 new on {alice}.inbox from carol, dave: second"
        send_as(h, "erin", alice, "third")
        assert channel(raw)["meta"] == {"pipe": f"{alice}.inbox", "unread": 3, "from": "carol, dave, erin"}

        assert [m["payload"] for m in raw.tool("read")["messages"]] == ["first", "second", "third"]
        send_as(h, "carol", alice, "fourth")
        assert channel(raw)["meta"]["unread"] == 1  # read, then new mail: announced again
    finally:
        assert raw.close() == 0, b"".join(raw.stderr)


def test_two_agents_converse_through_tools_with_pushes_on_both_sides(world: dict[str, Any]) -> None:
    h, alice, bob = world["home"], world["alice"], world["bob"]
    a = RawMcp(h, f"--as={alice}", "--channel")
    b = RawMcp(h, f"--as={bob}", "--channel")
    try:
        for agent, handle in ((a, alice), (b, bob)):
            agent.initialize()
            assert agent.tool("whoami")["handle"] == handle
        a.tool("send", {"to": bob, "message": "can you review PR 7?"})
        pushed = b.notification("notifications/claude/channel")["params"]
        assert pushed["meta"] == {"pipe": f"{bob}.inbox", "unread": 1, "from": alice}
        [question] = b.tool("read")["messages"]
        b.tool("send", {"to": alice, "message": "approved", "in_reply_to": question["id"]})
        assert a.notification("notifications/claude/channel")["params"]["meta"]["from"] == bob
        [answer] = a.tool("read", {"wait_seconds": 0})["messages"]
        assert (answer["payload"], answer["in_reply_to"], answer["sender"]) == ("approved", question["id"], bob)
    finally:
        assert a.close() == 0 and b.close() == 0


def test_watching_survives_a_daemon_restart(world: dict[str, Any]) -> None:
    h, alice = world["home"], world["alice"]
    raw = RawMcp(h, f"--as={alice}", "--channel")
    try:
        raw.initialize()
        assert raw.tool("whoami")["nats_state"] == "connected"
        out = h.ppz("daemon", "restart")
        assert out.returncode == 0, out.stderr
        h.wait_connected()
        send_as(h, "carol", alice, "after the restart")
        assert raw.notification("notifications/claude/channel")["params"]["content"].endswith("after the restart")
        assert raw.tool("read")["messages"][0]["payload"] == "after the restart"
    finally:
        assert raw.close() == 0


def test_the_server_exits_when_the_host_goes_away(world: dict[str, Any]) -> None:
    raw = RawMcp(world["home"], f"--as={world['alice']}")
    raw.initialize()
    assert raw.tool("whoami")["handle"] == world["alice"]
    assert raw.close() == 0  # stdin closed: no orphan, even with the watch waiting in ListWatch
    assert all(line.get("jsonrpc") == "2.0" for line in raw.lines)


def test_a_stopped_daemon_is_started_when_a_credential_is_stored(world: dict[str, Any]) -> None:
    h, alice = world["home"], world["alice"]
    out = h.ppz("daemon", "stop")
    assert out.returncode == 0 and out.stdout.startswith("daemon stopped"), out
    raw = RawMcp(h, f"--as={alice}")
    try:
        raw.initialize()
        me = raw.tool("whoami")
        assert (me["handle"], me["logged_in"]) == (alice, True)
    finally:
        assert raw.close() == 0
    assert h.status_or_none() is not None  # the daemon it started keeps running for everyone
    h.wait_connected()
