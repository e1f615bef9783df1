"""Fixtures of the ppz-server tests: one server per module, one fresh account per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from server_testkit import ApiClient, new_account
from serverfixture import ServerProcess


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server shared by the tests of one module; tests isolate themselves by account."""
    server = ServerProcess(Path(tmp_path_factory.mktemp("shared")) / "data")
    server.start()
    yield server
    server.close()


@pytest.fixture
def api(shared_server: ServerProcess) -> ApiClient:
    """A client with the key of a fresh account on the shared server."""
    key, account_id = new_account(shared_server)
    return ApiClient(shared_server.url, key, account_id)
