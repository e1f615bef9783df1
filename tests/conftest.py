"""Shared fixtures. ``ppz_server``: a fresh, running ppz-server (with its nats-server child);
``server_factory(**env)``: start more servers, e.g. ``server_factory(PPZ_NATS_JWT_TTL="10s")``.
Every server started through them is stopped (and, failing that, killed) at teardown."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# A suite started in the background by a non-interactive shell (`make test &`, CI runners) inherits
# SIGINT as ignored, and so would every CLI it starts: tests that stop `ppz read --tail` with
# Ctrl-C then fail. An ignored signal stays ignored across exec, a handled one is reset to the
# default there, so handling it here gives the children Python's usual KeyboardInterrupt.
signal.signal(signal.SIGINT, signal.default_int_handler)

from serverfixture import ServerProcess  # noqa: E402


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    servers: list[ServerProcess] = []

    def factory(**env: str) -> ServerProcess:
        server = ServerProcess(tmp_path / f"ppz-server-{len(servers)}", env=env)
        servers.append(server)
        return server.start()

    yield factory
    errors = []
    for server in servers:
        try:
            server.close()
        except Exception as exc:  # noqa: BLE001 - stop all, then report
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def ppz_server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory()
