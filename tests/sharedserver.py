"""One ``ppz-server`` (or one plain ``nats-server``) for a whole test module, and a fresh account
per test on the ``ppz-server``.

    from sharedserver import module_server, fresh_world  # noqa: F401 (module_server is a fixture)

    def test_x(module_server: ServerProcess, ppz_home: DaemonHome) -> None:
        world = fresh_world(module_server, ppz_home, ("bob",))

Starting a server costs a second or two of a 2-core machine; tests that only need their own
account (every account has its own NATS account and streams) share one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from actors.natsserver import NatsServer
from daemonfixture import DaemonHome, setup_world
from serverfixture import ServerProcess

_accounts = itertools.count(1)


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("shared") / "ppz-server").start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def module_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A plain ``nats-server`` with JetStream and no auth (tests pick their own stream names)."""
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    try:
        yield server
    finally:
        server.kill()


def fresh_world(server: ServerProcess, h: DaemonHome, handles: tuple[str, ...] = ("alice", "bob")) -> dict[str, Any]:
    """:func:`daemonfixture.setup_world` in an account of its own on a shared server."""
    return setup_world(server, h, handles, account=f"acct-{next(_accounts)}")


@contextmanager
def world_at(server: ServerProcess, root: Path, handles: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """:func:`fresh_world` with a daemon of its own at ``root`` (e.g. for a module-scoped
    fixture: a daemon start and login cost seconds), killed on the way out."""
    h = DaemonHome(root)
    try:
        yield fresh_world(server, h, handles)
    finally:
        h.kill()
