"""The ``fake`` fixture: a fake daemon on a private socket, with a clean CLI environment."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from commands.fakedaemon import FakeDaemon


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDaemon]:
    root = tempfile.mkdtemp(prefix="ppzfake", dir="/tmp")
    monkeypatch.setenv("PPZ_IPC_SOCKET", os.path.join(root, "d.sock"))
    monkeypatch.setenv("PPZ_HOME", os.path.join(root, "home"))
    monkeypatch.setenv("PPZ_SESSION", "s1")
    monkeypatch.setenv("HOME", root)
    monkeypatch.delenv("PPZ_CURRENT_HANDLE", raising=False)
    monkeypatch.delenv("PPZ_AGENT_HARNESS", raising=False)
    monkeypatch.delenv("PPZ_AGENT_MODEL", raising=False)
    daemon = FakeDaemon(os.path.join(root, "d.sock"))
    yield daemon
    daemon.stop()
    shutil.rmtree(root, ignore_errors=True)
