"""Fixtures of the console tests: one real ppz-server (with its nats-server) per module, one
fresh account per test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "server"))

from consoletestkit import Account, new_console_account  # noqa: E402
from serverfixture import ServerProcess  # noqa: E402


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(Path(tmp_path_factory.mktemp("console")) / "data")
    server.start()
    yield server
    server.close()


@pytest.fixture
def account(console_server: ServerProcess) -> Account:
    """A fresh account with a key and the sources ``bob`` (message) and ``agent`` (pty)."""
    return new_console_account(console_server)
