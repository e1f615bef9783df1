"""Fixtures for ``ppz mcp`` tests (``tests/mcp/`` is no package and has no conftest, so that
``import mcp`` finds the SDK): one ppz-server and one logged-in daemon per module (a daemon start
and login cost seconds), fresh handle names per test, and ``mcp_app``: the MCP server of
:mod:`ppz.mcp.server` running in this process against that daemon."""

from __future__ import annotations

import itertools
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
