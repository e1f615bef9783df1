"""Fixtures for ``ppz mcp`` tests (``tests/mcp/`` is no package and has no conftest, so that
``import mcp`` finds the SDK): one ppz-server and one logged-in daemon per module (a daemon start
and login cost seconds), fresh handle names per test, and ``mcp_app``: the MCP server of
:mod:`ppz.mcp.server` running in this process against that daemon."""

from __future__ import annotations

import itertools
import json
import queue
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from daemonfixture import DaemonHome
from serverfixture import ServerProcess
from sharedserver import module_server, world_at  # noqa: F401 - module_server is a fixture

from ppz.mcp.server import App, Options, build, run_background

_tests = itertools.count(1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def shared(module_server: ServerProcess,  # noqa: F811
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with world_at(module_server, tmp_path_factory.mktemp("mcp") / "home") as world:
        yield world


@pytest.fixture
def world(shared: dict[str, Any]) -> dict[str, Any]:
    """The shared world with handle names of this test's own: ``alice``, ``bob`` (not created)."""
    n = next(_tests)
    return {**shared, "alice": f"alice-{n}", "bob": f"bob-{n}", "n": n}


def send_as(h: DaemonHome, sender: str, to: str, payload: str, **extra: Any) -> dict[str, Any]:
    """``Send`` to ``to``'s inbox with ``sender`` as the sender hint (from a session of its own)."""
    return h.call("Send", {"handle": to, "channel": "inbox", "payload": payload, "sender": sender,
                           "session": f"sender-{sender}", **extra})


@pytest.fixture
def mcp_app(world: dict[str, Any]) -> Callable[..., Any]:
    """``async with mcp_app(handle=…, …) as app``: an :class:`App` on the world's daemon with
    its ``--as`` step and watch running."""
    h: DaemonHome = world["home"]

    @asynccontextmanager
    async def running(**kwargs: Any) -> AsyncIterator[App]:
        kwargs.setdefault("session", f"mcp-test-{world['n']}-{kwargs.get('handle', '')}")
        app = build(Options(socket=str(h.home.socket), start_daemon=False, **kwargs))
        async with anyio.create_task_group() as tg:
            await tg.start(run_background, app)
            await app.identity.wait()
            yield app
            tg.cancel_scope.cancel()

    return running


def mcp_command(*flags: str) -> list[str]:
    return [sys.executable, "-m", "ppz.cli", "mcp", *flags]


def mcp_env(h: DaemonHome, **extra: str) -> dict[str, str]:
    """The environment of a ``ppz mcp`` child of ``h``: its home, no PPZ_SESSION (so the session
    is ``mcp-<HANDLE>``) unless given."""
    env = {k: v for k, v in h.env.items() if k != "PPZ_SESSION"}
    env.update(extra)
    return env


class RawMcp:
    """A ``ppz mcp`` subprocess driven by JSON-RPC lines written and read here, so that every
    notification is seen (SDK clients drop those they do not know). ``lines`` keeps everything
    the server wrote on stdout, decoded."""

    def __init__(self, h: DaemonHome, *flags: str, **env: str) -> None:
        self.proc = subprocess.Popen(mcp_command(*flags), env=mcp_env(h, **env), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[dict[str, Any]] = []
        self.notifications: queue.Queue[dict[str, Any]] = queue.Queue()
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr: list[bytes] = []
        self._ids = itertools.count(1)
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr or ()), daemon=True).start()

    def _pump(self) -> None:
        for raw in self.proc.stdout or ():
            message = json.loads(raw)  # stdout carries only protocol messages: anything else fails here
            assert message.get("jsonrpc") == "2.0", message
            self.lines.append(message)
            (self.replies if "id" in message and "method" not in message else self.notifications).put(message)

    def write(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60) -> dict[str, Any]:
        """Send a request and return its reply (``result`` or ``error``)."""
        rid = next(self._ids)
        self.write({"id": rid, "method": method, "params": params or {}})
        reply = self.replies.get(timeout=timeout)
        assert reply["id"] == rid, reply
        return reply

    def initialize(self, version: str = "2025-06-18") -> dict[str, Any]:
        reply = self.request("initialize", {"protocolVersion": version, "capabilities": {},
                                            "clientInfo": {"name": "raw-test", "version": "0"}})
        self.write({"method": "notifications/initialized"})
        return reply["result"]

    def tool(self, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        """A ``tools/call``'s structured content (the call must succeed)."""
        result = self.request("tools/call", {"name": name, "arguments": arguments or {}})["result"]
        assert not result.get("isError"), (result, b"".join(self.stderr).decode(errors="replace")[-3000:])
        return result["structuredContent"]

    def notification(self, method: str, timeout: float = 60) -> dict[str, Any]:
        """The next notification; it must be ``method``."""
        message = self.notifications.get(timeout=timeout)
        assert message["method"] == method, message
        return message

    def close(self) -> int:
        """Close stdin (the host goes away) and return the exit status."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
